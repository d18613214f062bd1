#include "workers/observability/alerts.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "net/http_client.h"

namespace iii::observability {

namespace json = boost::json;

namespace {

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::optional<double> number_of(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return std::nullopt;
}

AlertOp parse_op(const std::string& s, const std::string& where) {
  if (s == ">" || s == "gt" || s == "greaterthan" || s == "greater_than") return AlertOp::kGt;
  if (s == ">=" || s == "gte" || s == "greaterthanorequal" || s == "greater_than_or_equal")
    return AlertOp::kGe;
  if (s == "<" || s == "lt" || s == "lessthan" || s == "less_than") return AlertOp::kLt;
  if (s == "<=" || s == "lte" || s == "lessthanorequal" || s == "less_than_or_equal")
    return AlertOp::kLe;
  if (s == "==" || s == "eq" || s == "equal" || s == "equals") return AlertOp::kEq;
  if (s == "!=" || s == "ne" || s == "notequal" || s == "not_equal") return AlertOp::kNe;
  throw std::invalid_argument(where + ": unknown operator '" + s +
                              "' (expected >, >=, <, <=, == or !=)");
}

int64_t seconds_of(const json::object& o, const char* key, int64_t def, const std::string& where) {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return def;
  auto n = number_of(*v);
  if (!n || *n < 0 || *n > 86400 * 366 || *n != std::floor(*n))
    throw std::invalid_argument(where + "." + key + ": expected a whole number of seconds >= 0");
  return static_cast<int64_t>(*n);
}

}  // namespace

const char* to_string(AlertOp op) {
  switch (op) {
    case AlertOp::kGt:
      return ">";
    case AlertOp::kGe:
      return ">=";
    case AlertOp::kLt:
      return "<";
    case AlertOp::kLe:
      return "<=";
    case AlertOp::kEq:
      return "==";
    case AlertOp::kNe:
      return "!=";
  }
  return "?";
}

bool compare(double v, AlertOp op, double t) {
  switch (op) {
    case AlertOp::kGt:
      return v > t;
    case AlertOp::kGe:
      return v >= t;
    case AlertOp::kLt:
      return v < t;
    case AlertOp::kLe:
      return v <= t;
    case AlertOp::kEq:
      return v == t;
    case AlertOp::kNe:
      return v != t;
  }
  return false;
}

json::object AlertAction::to_json() const {
  switch (type) {
    case Type::kWebhook:
      return json::object{{"type", "webhook"}, {"url", url}};
    case Type::kFunction:
      return json::object{{"type", "function"}, {"path", path}};
    case Type::kLog:
      break;
  }
  return json::object{{"type", "log"}};
}

std::vector<AlertRule> parse_alerts(const json::value& alerts) {
  std::vector<AlertRule> out;
  if (alerts.is_null()) return out;
  if (!alerts.is_array()) throw std::invalid_argument("alerts: expected a list");
  size_t i = 0;
  for (const auto& av : alerts.get_array()) {
    const std::string where = "alerts[" + std::to_string(i++) + "]";
    const json::object* a = av.if_object();
    if (!a) throw std::invalid_argument(where + ": expected a mapping");
    for (const auto& kv : *a) {
      static constexpr std::string_view known[] = {
          "name",    "metric",         "threshold",        "operator",
          "enabled", "window_seconds", "cooldown_seconds", "action"};
      if (std::find(std::begin(known), std::end(known), kv.key()) == std::end(known))
        throw std::invalid_argument(where + ": unknown key '" + std::string(kv.key()) + "'");
    }
    AlertRule r;
    const json::value* name = a->if_contains("name");
    if (!name || !name->is_string() || name->get_string().empty())
      throw std::invalid_argument(where + ".name: required string");
    r.name = std::string(name->get_string());
    const json::value* metric = a->if_contains("metric");
    if (!metric || !metric->is_string() || metric->get_string().empty())
      throw std::invalid_argument(where + ".metric: required string");
    r.metric = std::string(metric->get_string());
    const json::value* th = a->if_contains("threshold");
    auto thn = th ? number_of(*th) : std::nullopt;
    if (!thn) throw std::invalid_argument(where + ".threshold: required number");
    r.threshold = *thn;
    if (const json::value* op = a->if_contains("operator"); op && !op->is_null()) {
      if (!op->is_string()) throw std::invalid_argument(where + ".operator: expected a string");
      r.op = parse_op(std::string(op->get_string()), where + ".operator");
    }
    r.window_seconds = seconds_of(*a, "window_seconds", 60, where);
    r.cooldown_seconds = seconds_of(*a, "cooldown_seconds", 60, where);
    if (const json::value* en = a->if_contains("enabled"); en && !en->is_null()) {
      if (!en->is_bool()) throw std::invalid_argument(where + ".enabled: expected a boolean");
      r.enabled = en->get_bool();
    }
    if (const json::value* act = a->if_contains("action"); act && !act->is_null()) {
      const json::object* ao = act->if_object();
      if (!ao) throw std::invalid_argument(where + ".action: expected a mapping");
      const json::value* type = ao->if_contains("type");
      const std::string t = type && type->is_string() ? std::string(type->get_string()) : "";
      auto extra = [&](std::initializer_list<std::string_view> ok) {
        for (const auto& kv : *ao)
          if (std::find(ok.begin(), ok.end(), kv.key()) == ok.end())
            throw std::invalid_argument(where + ".action: unknown key '" + std::string(kv.key()) +
                                        "'");
      };
      if (t == "log") {
        extra({"type"});
        r.action.type = AlertAction::Type::kLog;
      } else if (t == "webhook") {
        extra({"type", "url"});
        const json::value* url = ao->if_contains("url");
        if (!url || !url->is_string())
          throw std::invalid_argument(where + ".action.url: required string");
        r.action.type = AlertAction::Type::kWebhook;
        r.action.url = std::string(url->get_string());
        try {
          net::parse_http_target(r.action.url);
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(where + ".action.url: " + e.what());
        }
      } else if (t == "function") {
        extra({"type", "path"});
        const json::value* path = ao->if_contains("path");
        if (!path || !path->is_string() || path->get_string().empty())
          throw std::invalid_argument(where + ".action.path: required string");
        r.action.type = AlertAction::Type::kFunction;
        r.action.path = std::string(path->get_string());
      } else {
        throw std::invalid_argument(where + ".action.type: expected log, webhook or function");
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

AlertEngine::AlertEngine(std::vector<AlertRule> rules, MetricReader read, ActionRunner act,
                         std::function<int64_t()> now_ms)
    : rules_(std::move(rules)),
      states_(rules_.size()),
      read_(std::move(read)),
      act_(std::move(act)),
      now_ms_(now_ms ? std::move(now_ms) : std::function<int64_t()>(wall_ms)) {}

void AlertEngine::sample_rule(size_t i, int64_t now) {
  const AlertRule& r = rules_[i];
  State& st = states_[i];
  const auto s = read_ ? read_(r.metric) : std::nullopt;
  if (!s) return;
  st.counter = s->counter;
  // Two samples at the same millisecond (a timer tick and an evaluate): keep the newer.
  if (!st.history.empty() && st.history.back().first == now) st.history.pop_back();
  st.history.emplace_back(now, s->value);
  // Keep one sample at or before the window's start, so an increase spans the whole window.
  const int64_t start = now - r.window_seconds * 1000;
  while (st.history.size() > 2 && st.history[1].first <= start) st.history.pop_front();
}

void AlertEngine::sample() {
  const int64_t now = now_ms_();
  for (size_t i = 0; i < rules_.size(); ++i)
    if (rules_[i].enabled) sample_rule(i, now);
}

json::array AlertEngine::evaluate() {
  const int64_t now = now_ms_();
  json::array fired;
  for (size_t i = 0; i < rules_.size(); ++i) {
    const AlertRule& r = rules_[i];
    State& st = states_[i];
    if (!r.enabled) continue;
    sample_rule(i, now);
    if (st.history.empty()) {
      st.last_value.reset();
      st.firing = false;
      continue;
    }
    const double latest = st.history.back().second;
    const double value = st.counter ? latest - st.history.front().second : latest;
    st.last_value = value;
    st.firing = compare(value, r.op, r.threshold);
    if (!st.firing) continue;
    if (st.last_triggered_ms && now - *st.last_triggered_ms < r.cooldown_seconds * 1000) continue;
    st.last_triggered_ms = now;
    ++st.trigger_count;
    json::object alert{
        {"name", r.name},
        {"metric", r.metric},
        {"value", value},
        {"threshold", r.threshold},
        {"operator", to_string(r.op)},
        {"window_seconds", r.window_seconds},
        {"timestamp", now},
        {"message",
         fmt::format("alert '{}': {} {} {} ({}{})", r.name, r.metric, to_string(r.op), r.threshold,
                     st.counter ? "increase over the window " : "value ", value)}};
    if (act_) act_(r, alert);
    fired.push_back(std::move(alert));
  }
  return fired;
}

json::object AlertEngine::list_json() const {
  json::array out;
  for (size_t i = 0; i < rules_.size(); ++i) {
    const AlertRule& r = rules_[i];
    const State& st = states_[i];
    json::object state{
        {"firing", st.firing},
        {"last_value", st.last_value ? json::value(*st.last_value) : json::value(nullptr)},
        {"last_triggered",
         st.last_triggered_ms ? json::value(*st.last_triggered_ms) : json::value(nullptr)},
        {"trigger_count", st.trigger_count}};
    out.push_back(json::object{{"name", r.name},
                               {"metric", r.metric},
                               {"threshold", r.threshold},
                               {"operator", to_string(r.op)},
                               {"window_seconds", r.window_seconds},
                               {"cooldown_seconds", r.cooldown_seconds},
                               {"enabled", r.enabled},
                               {"action", r.action.to_json()},
                               {"state", std::move(state)}});
  }
  return json::object{{"alerts", std::move(out)}, {"timestamp", wall_ms()}};
}

}  // namespace iii::observability
