// Trace sampling of the observability worker (`sampling_ratio`, `sampling {default, rules,
// parent_based, rate_limit}`): decides, for every span that reaches the store and the exporter
// (SDK spans and the engine's own), whether its trace is kept.
//
// A trace's decision is made once, on its first span seen: the first rule whose `operation`
// and `service` patterns (`*` matches any run of characters; a missing pattern matches all)
// match that span gives the rate, else `default` (else `sampling_ratio`). The trace is kept
// when its id falls under the rate (the low 56 bits of the trace id against rate * 2^56, so
// the same trace gets the same answer in every engine and for every rate test), and then
// only if the rate limit (`max_traces_per_second`, a token bucket refilled continuously with
// a burst of one second's worth) has a token. With `parent_based` (default false) every later
// span of the trace follows that decision, so trees are kept or dropped whole; without it each
// span is tested against its own rule (a trace refused by the rate limit stays refused).
// Spans arrive in any order (SDKs batch them), so "first seen" is not always the root.
// Decisions are remembered for the last 16,384 traces. Engine thread only.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "workers/observability/telemetry_types.h"

namespace iii::observability {

struct SamplingRule {
  std::string operation;  // glob on the span name; "" = any
  std::string service;    // glob on the service name; "" = any
  double rate = 1.0;
};

struct SamplingConfig {
  double default_ratio = 1.0;
  std::vector<SamplingRule> rules;
  bool parent_based = false;
  std::optional<double> max_traces_per_second;
  double logs_sampling_ratio = 1.0;  // reported by engine::sampling::rules
};

// `sampling_ratio` and the raw `sampling` block (null when absent). Throws
// std::invalid_argument naming the key ("sampling.rules[1].rate: must be between 0 and 1").
SamplingConfig parse_sampling(double sampling_ratio, const boost::json::value& sampling,
                              double logs_sampling_ratio);

// `*` matches any run of characters (none included); everything else matches itself.
bool glob_match(std::string_view pattern, std::string_view s);
// Whether a trace id (hex) falls under `ratio`: its low 56 bits against ratio * 2^56.
bool trace_id_under(std::string_view trace_id, double ratio);

class TraceSampler {
 public:
  static constexpr size_t kRememberedTraces = 16384;

  explicit TraceSampler(SamplingConfig c, std::function<int64_t()> now_ms = {});

  // Whether this span is kept.
  bool keep(const StoredSpan& s);
  // Whether sampling can drop anything at all (false: every span is kept and keep() is not
  // worth calling).
  bool active() const { return active_; }

  const SamplingConfig& config() const { return cfg_; }
  // engine::sampling::rules: {"traces":{default_ratio, rules, parent_based[, rate_limit]},
  // "logs":{sampling_ratio}, "timestamp"}.
  boost::json::object rules_json() const;

  uint64_t kept() const { return kept_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t rate_limited() const { return rate_limited_; }

 private:
  enum class Decision : uint8_t { kKept, kDropped, kRateLimited };
  double rate_for(const StoredSpan& s) const;
  bool take_token();
  void remember(const std::string& trace_id, Decision d);

  SamplingConfig cfg_;
  std::function<int64_t()> now_ms_;
  bool active_ = false;
  std::unordered_map<std::string, Decision> decisions_;
  std::deque<std::string> order_;  // oldest first, for the bound
  double tokens_ = 0;
  int64_t last_refill_ms_ = 0;
  uint64_t kept_ = 0, dropped_ = 0, rate_limited_ = 0;
};

}  // namespace iii::observability
