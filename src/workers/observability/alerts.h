// Alerts of the observability worker (`alerts: [{name, metric, threshold, operator,
// window_seconds, cooldown_seconds, enabled, action}]`). Every second (and on
// engine::alerts::evaluate) each enabled rule samples its metric: for a counter the value
// compared is its increase over the last `window_seconds` (errors in the last minute), for a
// gauge its latest value. When `value <operator> threshold` holds and the rule has not fired
// within `cooldown_seconds`, its action runs: `log` (a warning line), `webhook` (POST of the
// alert as JSON to `url`) or `function` (the alert is the payload of a call to `path`).
// Engine thread only.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace iii::observability {

enum class AlertOp { kGt, kGe, kLt, kLe, kEq, kNe };
const char* to_string(AlertOp op);

struct AlertAction {
  enum class Type { kLog, kWebhook, kFunction };
  Type type = Type::kLog;
  std::string url;   // webhook
  std::string path;  // function id
  boost::json::object to_json() const;
};

struct AlertRule {
  std::string name;
  std::string metric;
  double threshold = 0;
  AlertOp op = AlertOp::kGt;
  int64_t window_seconds = 60;
  int64_t cooldown_seconds = 60;
  bool enabled = true;
  AlertAction action;
};

// The raw `alerts` list (null when absent). Throws std::invalid_argument naming the key
// ("alerts[0].operator: ...").
std::vector<AlertRule> parse_alerts(const boost::json::value& alerts);

bool compare(double value, AlertOp op, double threshold);

struct MetricSample {
  double value = 0;
  bool counter = false;  // compared by its increase over the window
};

class AlertEngine {
 public:
  // The current value of a metric by name; nullopt when unknown (the rule is then skipped).
  using MetricReader = std::function<std::optional<MetricSample>(const std::string& metric)>;
  // Runs a rule's action with the alert's JSON (see fire()).
  using ActionRunner = std::function<void(const AlertRule&, const boost::json::object& alert)>;

  AlertEngine(std::vector<AlertRule> rules, MetricReader read, ActionRunner act,
              std::function<int64_t()> now_ms = {});

  const std::vector<AlertRule>& rules() const { return rules_; }
  bool empty() const { return rules_.empty(); }

  // Samples every enabled rule's metric (the timer calls this once a second).
  void sample();
  // Samples, then fires every rule whose condition holds and whose cooldown has passed.
  // Returns the alerts fired: {name, metric, value, threshold, operator, window_seconds,
  // timestamp, message}.
  boost::json::array evaluate();

  // engine::alerts::list: {"alerts":[rule + "state":{firing, last_value, last_triggered,
  // trigger_count}], "timestamp"}.
  boost::json::object list_json() const;

 private:
  struct State {
    std::deque<std::pair<int64_t, double>> history;  // (ms, value), oldest first
    bool counter = false;
    std::optional<double> last_value;  // what was compared at the last evaluation
    bool firing = false;
    std::optional<int64_t> last_triggered_ms;
    uint64_t trigger_count = 0;
  };
  void sample_rule(size_t i, int64_t now);

  std::vector<AlertRule> rules_;
  std::vector<State> states_;
  MetricReader read_;
  ActionRunner act_;
  std::function<int64_t()> now_ms_;
};

}  // namespace iii::observability
