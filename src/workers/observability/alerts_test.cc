// AlertEngine on a fake clock: config parsing and its errors, every operator, counters
// compared by their increase over the window (and gauges by their value), cooldowns, disabled
// rules, unknown metrics, and the list's state.
#include "workers/observability/alerts.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <map>

namespace iii::observability {
namespace {

namespace json = boost::json;

struct Fixture {
  int64_t now = 1'000'000;
  std::map<std::string, MetricSample> metrics;
  std::vector<std::pair<std::string, json::object>> fired;  // (rule, alert)

  AlertEngine make(const char* yaml_json) {
    return AlertEngine(
        parse_alerts(json::parse(yaml_json)),
        [this](const std::string& m) -> std::optional<MetricSample> {
          auto it = metrics.find(m);
          if (it == metrics.end()) return std::nullopt;
          return it->second;
        },
        [this](const AlertRule& r, const json::object& a) { fired.emplace_back(r.name, a); },
        [this] { return now; });
  }
};

TEST(Alerts, ParsesRules) {
  const auto rules = parse_alerts(json::parse(R"([
    {"name": "errors", "metric": "iii.invocations.error", "threshold": 10},
    {"name": "hook", "metric": "m", "threshold": 1.5, "operator": "<=", "window_seconds": 5,
     "cooldown_seconds": 0, "enabled": false,
     "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook?x=1"}},
    {"name": "fn", "metric": "m", "threshold": 0, "operator": "greaterthan",
     "action": {"type": "function", "path": "ops::page"}}])"));
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].op, AlertOp::kGt);
  EXPECT_EQ(rules[0].window_seconds, 60);
  EXPECT_EQ(rules[0].cooldown_seconds, 60);
  EXPECT_TRUE(rules[0].enabled);
  EXPECT_EQ(rules[0].action.type, AlertAction::Type::kLog);
  EXPECT_EQ(rules[1].op, AlertOp::kLe);
  EXPECT_EQ(rules[1].window_seconds, 5);
  EXPECT_FALSE(rules[1].enabled);
  EXPECT_EQ(rules[1].action.url, "http://127.0.0.1:9/hook?x=1");
  EXPECT_EQ(rules[2].action.path, "ops::page");
  EXPECT_EQ(rules[2].op, AlertOp::kGt);
  EXPECT_TRUE(parse_alerts(nullptr).empty());
}

TEST(Alerts, RefusesBadRules) {
  auto err = [](const char* s) {
    try {
      parse_alerts(json::parse(s));
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(err(R"([{"metric": "m", "threshold": 1}])"), "alerts[0].name: required string");
  EXPECT_EQ(err(R"([{"name": "a", "threshold": 1}])"), "alerts[0].metric: required string");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m"}])"), "alerts[0].threshold: required number");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1, "operator": "~"}])"),
            "alerts[0].operator: unknown operator '~' (expected >, >=, <, <=, == or !=)");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1, "window_seconds": -1}])"),
            "alerts[0].window_seconds: expected a whole number of seconds >= 0");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1, "action": {"type": "sms"}}])"),
            "alerts[0].action.type: expected log, webhook or function");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1, "action": {"type": "webhook"}}])"),
            "alerts[0].action.url: required string");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1,
               "action": {"type": "webhook", "url": "ftp://x"}}])"),
            "alerts[0].action.url: 'ftp://x': scheme must be http or https");
  EXPECT_EQ(
      err(R"([{"name": "a", "metric": "m", "threshold": 1, "action": {"type": "function"}}])"),
      "alerts[0].action.path: required string");
  EXPECT_EQ(err(R"([{"name": "a", "metric": "m", "threshold": 1, "colour": "red"}])"),
            "alerts[0]: unknown key 'colour'");
  EXPECT_EQ(err(R"({"name": "a"})"), "alerts: expected a list");
}

TEST(Alerts, Operators) {
  EXPECT_TRUE(compare(2, AlertOp::kGt, 1));
  EXPECT_FALSE(compare(1, AlertOp::kGt, 1));
  EXPECT_TRUE(compare(1, AlertOp::kGe, 1));
  EXPECT_TRUE(compare(0, AlertOp::kLt, 1));
  EXPECT_TRUE(compare(1, AlertOp::kLe, 1));
  EXPECT_TRUE(compare(1, AlertOp::kEq, 1));
  EXPECT_TRUE(compare(2, AlertOp::kNe, 1));
  EXPECT_FALSE(compare(1, AlertOp::kNe, 1));
}

TEST(Alerts, CounterComparedByIncreaseOverWindow) {
  Fixture f;
  f.metrics["errors"] = {100, true};  // errors before the alert existed do not count
  AlertEngine e = f.make(
      R"([{"name": "e", "metric": "errors", "threshold": 3, "window_seconds": 10,
           "cooldown_seconds": 0}])");
  e.sample();
  for (int s = 1; s <= 5; ++s) {
    f.now += 1000;
    f.metrics["errors"].value += 1;
    e.sample();
  }
  EXPECT_EQ(e.evaluate().size(), 1u);  // +5 in the window > 3
  EXPECT_EQ(f.fired.at(0).second.at("value").as_double(), 5.0);
  // Eleven quiet seconds later the window holds no increase.
  for (int s = 0; s < 11; ++s) {
    f.now += 1000;
    e.sample();
  }
  EXPECT_TRUE(e.evaluate().empty());
  EXPECT_EQ(e.list_json().at("alerts").at(0).at("state").at("last_value").as_double(), 0.0);
}

TEST(Alerts, GaugeComparedByValueAndCooldown) {
  Fixture f;
  f.metrics["rss"] = {10, false};
  AlertEngine e = f.make(
      R"([{"name": "mem", "metric": "rss", "threshold": 50, "operator": ">=",
           "cooldown_seconds": 30, "action": {"type": "function", "path": "ops::page"}}])");
  EXPECT_TRUE(e.evaluate().empty());
  f.metrics["rss"].value = 50;
  f.now += 1000;
  ASSERT_EQ(e.evaluate().size(), 1u);
  EXPECT_EQ(f.fired.at(0).first, "mem");
  EXPECT_EQ(f.fired.at(0).second.at("operator").as_string(), ">=");
  f.now += 10'000;
  EXPECT_TRUE(e.evaluate().empty());  // still firing, but cooling down
  EXPECT_TRUE(e.list_json().at("alerts").at(0).at("state").at("firing").as_bool());
  f.now += 25'000;
  EXPECT_EQ(e.evaluate().size(), 1u);
  const json::object l = e.list_json();
  const auto& a = l.at("alerts").at(0);
  EXPECT_EQ(a.at("state").at("trigger_count").as_uint64(), 2u);
  EXPECT_EQ(a.at("action").at("path").as_string(), "ops::page");
  EXPECT_EQ(a.at("cooldown_seconds").as_int64(), 30);
}

TEST(Alerts, DisabledAndUnknownMetricsNeverFire) {
  Fixture f;
  f.metrics["m"] = {100, false};
  AlertEngine e = f.make(
      R"([{"name": "off", "metric": "m", "threshold": 1, "enabled": false},
          {"name": "unknown", "metric": "nope", "threshold": 1}])");
  EXPECT_TRUE(e.evaluate().empty());
  EXPECT_TRUE(f.fired.empty());
  const json::object l = e.list_json();
  EXPECT_TRUE(l.at("alerts").at(1).at("state").at("last_value").is_null());
}

}  // namespace
}  // namespace iii::observability
