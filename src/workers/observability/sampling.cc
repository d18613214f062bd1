#include "workers/observability/sampling.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace iii::observability {

namespace json = boost::json;

namespace {

double ratio_of(const json::value& v, const std::string& key) {
  double d = 0;
  if (v.is_double())
    d = v.get_double();
  else if (v.is_int64())
    d = static_cast<double>(v.get_int64());
  else if (v.is_uint64())
    d = static_cast<double>(v.get_uint64());
  else
    throw std::invalid_argument(key + ": expected a number between 0 and 1");
  if (!(d >= 0.0 && d <= 1.0)) throw std::invalid_argument(key + ": must be between 0 and 1");
  return d;
}

std::string string_of(const json::value& v, const std::string& key) {
  if (!v.is_string()) throw std::invalid_argument(key + ": expected a string");
  return std::string(v.get_string());
}

void only_keys(const json::object& o, std::initializer_list<std::string_view> known,
               const std::string& where) {
  for (const auto& kv : o) {
    if (std::find(known.begin(), known.end(), kv.key()) == known.end())
      throw std::invalid_argument(where + ": unknown key '" + std::string(kv.key()) + "'");
  }
}

int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

SamplingConfig parse_sampling(double sampling_ratio, const json::value& sampling,
                              double logs_sampling_ratio) {
  SamplingConfig c;
  c.default_ratio = sampling_ratio;
  c.logs_sampling_ratio = logs_sampling_ratio;
  if (sampling.is_null()) return c;
  const json::object* s = sampling.if_object();
  if (!s) throw std::invalid_argument("sampling: expected a mapping");
  only_keys(*s, {"default", "rules", "parent_based", "rate_limit"}, "sampling");
  if (const json::value* d = s->if_contains("default"); d && !d->is_null())
    c.default_ratio = ratio_of(*d, "sampling.default");
  if (const json::value* pb = s->if_contains("parent_based"); pb && !pb->is_null()) {
    if (!pb->is_bool()) throw std::invalid_argument("sampling.parent_based: expected a boolean");
    c.parent_based = pb->get_bool();
  }
  if (const json::value* rules = s->if_contains("rules"); rules && !rules->is_null()) {
    if (!rules->is_array()) throw std::invalid_argument("sampling.rules: expected a list");
    size_t i = 0;
    for (const auto& rv : rules->get_array()) {
      const std::string where = "sampling.rules[" + std::to_string(i++) + "]";
      const json::object* r = rv.if_object();
      if (!r) throw std::invalid_argument(where + ": expected a mapping");
      only_keys(*r, {"operation", "service", "rate"}, where);
      SamplingRule rule;
      if (const json::value* op = r->if_contains("operation"); op && !op->is_null())
        rule.operation = string_of(*op, where + ".operation");
      if (const json::value* sv = r->if_contains("service"); sv && !sv->is_null())
        rule.service = string_of(*sv, where + ".service");
      const json::value* rate = r->if_contains("rate");
      if (!rate || rate->is_null()) throw std::invalid_argument(where + ".rate: required");
      rule.rate = ratio_of(*rate, where + ".rate");
      c.rules.push_back(std::move(rule));
    }
  }
  if (const json::value* rl = s->if_contains("rate_limit"); rl && !rl->is_null()) {
    const json::object* o = rl->if_object();
    if (!o) throw std::invalid_argument("sampling.rate_limit: expected a mapping");
    only_keys(*o, {"max_traces_per_second"}, "sampling.rate_limit");
    const json::value* m = o->if_contains("max_traces_per_second");
    if (m && !m->is_null()) {
      double v = -1;
      if (m->is_double())
        v = m->get_double();
      else if (m->is_int64())
        v = static_cast<double>(m->get_int64());
      else if (m->is_uint64())
        v = static_cast<double>(m->get_uint64());
      if (!(v >= 0))
        throw std::invalid_argument(
            "sampling.rate_limit.max_traces_per_second: expected a number >= 0");
      c.max_traces_per_second = v;
    }
  }
  return c;
}

bool glob_match(std::string_view p, std::string_view s) {
  // Iterative matcher with one backtrack point (the last '*').
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (pi < p.size() && p[pi] == s[si]) {
      ++pi;
      ++si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool trace_id_under(std::string_view trace_id, double ratio) {
  if (ratio >= 1.0) return true;
  if (ratio <= 0.0) return false;
  // The last 14 hex digits: 56 bits, exactly representable in a double.
  uint64_t v = 0;
  const size_t start = trace_id.size() > 14 ? trace_id.size() - 14 : 0;
  for (size_t i = start; i < trace_id.size(); ++i) {
    const int d = hex_digit(trace_id[i]);
    if (d < 0) return true;  // not an id: sampling cannot judge it
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  constexpr double kSpace = 72057594037927936.0;  // 2^56
  return static_cast<double>(v) < ratio * kSpace;
}

TraceSampler::TraceSampler(SamplingConfig c, std::function<int64_t()> now_ms)
    : cfg_(std::move(c)),
      now_ms_(now_ms ? std::move(now_ms) : std::function<int64_t()>(steady_ms)) {
  active_ = cfg_.default_ratio < 1.0 || cfg_.max_traces_per_second.has_value();
  for (const auto& r : cfg_.rules) active_ = active_ || r.rate < 1.0;
  if (cfg_.max_traces_per_second) {
    tokens_ = std::max(1.0, *cfg_.max_traces_per_second);
    last_refill_ms_ = now_ms_();
  }
}

double TraceSampler::rate_for(const StoredSpan& s) const {
  for (const auto& r : cfg_.rules) {
    if (!r.operation.empty() && !glob_match(r.operation, s.name)) continue;
    if (!r.service.empty() && !glob_match(r.service, s.service_name)) continue;
    return r.rate;
  }
  return cfg_.default_ratio;
}

bool TraceSampler::take_token() {
  if (!cfg_.max_traces_per_second) return true;
  const double per_s = *cfg_.max_traces_per_second;
  const double burst = std::max(1.0, per_s);
  const int64_t now = now_ms_();
  if (now > last_refill_ms_) {
    tokens_ =
        std::min(burst, tokens_ + per_s * static_cast<double>(now - last_refill_ms_) / 1000.0);
    last_refill_ms_ = now;
  }
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

void TraceSampler::remember(const std::string& trace_id, Decision d) {
  if (decisions_.emplace(trace_id, d).second) {
    order_.push_back(trace_id);
    if (order_.size() > kRememberedTraces) {
      decisions_.erase(order_.front());
      order_.pop_front();
    }
  }
}

bool TraceSampler::keep(const StoredSpan& s) {
  if (!active_) {
    ++kept_;
    return true;
  }
  bool decision;
  if (auto it = decisions_.find(s.trace_id); it != decisions_.end()) {
    if (it->second == Decision::kRateLimited)
      decision = false;
    else if (cfg_.parent_based)
      decision = it->second == Decision::kKept;
    else  // each span by its own rule
      decision = trace_id_under(s.trace_id, rate_for(s));
  } else {
    decision = trace_id_under(s.trace_id, rate_for(s));
    Decision d = decision ? Decision::kKept : Decision::kDropped;
    if (decision && !take_token()) {
      decision = false;
      d = Decision::kRateLimited;
      ++rate_limited_;
    }
    remember(s.trace_id, d);
  }
  ++(decision ? kept_ : dropped_);
  return decision;
}

json::object TraceSampler::rules_json() const {
  json::array rules;
  for (const auto& r : cfg_.rules) {
    json::object o;
    o["operation"] = r.operation.empty() ? json::value(nullptr) : json::value(r.operation);
    o["service"] = r.service.empty() ? json::value(nullptr) : json::value(r.service);
    o["rate"] = r.rate;
    rules.push_back(std::move(o));
  }
  json::object traces{{"default_ratio", cfg_.default_ratio},
                      {"rules", std::move(rules)},
                      {"parent_based", cfg_.parent_based}};
  if (cfg_.max_traces_per_second)
    traces["rate_limit"] = json::object{{"max_traces_per_second", *cfg_.max_traces_per_second}};
  using namespace std::chrono;
  return json::object{
      {"traces", std::move(traces)},
      {"logs", json::object{{"sampling_ratio", cfg_.logs_sampling_ratio}}},
      {"timestamp", duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count()}};
}

}  // namespace iii::observability
