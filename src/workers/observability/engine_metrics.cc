#include "workers/observability/engine_metrics.h"

#include <algorithm>
#include <cmath>

namespace iii::observability {

namespace json = boost::json;

namespace {
// Functions tracked one by one; beyond this many distinct ids the rest share one row, so a
// worker inventing ids cannot grow the table without bound.
constexpr size_t kMaxFunctions = 10000;
const std::string kOther = "(other)";
}  // namespace

EngineMetrics::PerFunction& EngineMetrics::per(const std::string& id) {
  auto it = by_function_.find(id);
  if (it != by_function_.end()) return it->second;
  if (by_function_.size() >= kMaxFunctions) return by_function_[kOther];
  return by_function_[id];
}

void EngineMetrics::invocation(const std::string& function_id, bool ok, int64_t duration_ns) {
  PerFunction& f = per(function_id);
  if (ok) {
    ++success_;
    ++f.success;
  } else {
    ++error_;
    ++f.error;
  }
  if (duration_ns < 0) duration_ns = 0;
  f.duration_ns_sum += duration_ns;
  if (timed_ == 0 || duration_ns < min_ns_) min_ns_ = duration_ns;
  if (duration_ns > max_ns_) max_ns_ = duration_ns;
  sum_ns_ += static_cast<double>(duration_ns);
  ++timed_;
  if (recent_.size() < kReservoir) {
    recent_.push_back(duration_ns);
  } else {
    recent_[next_] = duration_ns;
    next_ = (next_ + 1) % kReservoir;
  }
}

void EngineMetrics::deferred(const std::string& function_id) {
  ++deferred_;
  ++per(function_id).deferred;
}

EngineMetrics::Performance EngineMetrics::performance() const {
  Performance p;
  if (timed_ == 0) return p;
  std::vector<int64_t> v = recent_;
  std::sort(v.begin(), v.end());
  auto pct = [&](double q) {
    // nearest-rank percentile
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    rank = std::clamp<size_t>(rank, 1, v.size());
    return static_cast<double>(v[rank - 1]) / 1e6;
  };
  p.avg_ms = sum_ns_ / static_cast<double>(timed_) / 1e6;
  p.p50_ms = pct(0.50);
  p.p95_ms = pct(0.95);
  p.p99_ms = pct(0.99);
  p.min_ms = static_cast<double>(min_ns_) / 1e6;
  p.max_ms = static_cast<double>(max_ns_) / 1e6;
  return p;
}

json::object EngineMetrics::to_json(size_t active_workers) const {
  json::object by_fn;
  for (const auto& [id, f] : by_function_) {
    const uint64_t n = f.success + f.error;
    by_fn[id] = json::object{
        {"total", n + f.deferred},
        {"success", f.success},
        {"error", f.error},
        {"deferred", f.deferred},
        {"avg_duration_ms",
         n ? static_cast<double>(f.duration_ns_sum) / static_cast<double>(n) / 1e6 : 0.0}};
  }
  const Performance p = performance();
  json::object o;
  o["invocations"] = json::object{{"total", total()},
                                  {"success", success_},
                                  {"error", error_},
                                  {"deferred", deferred_},
                                  {"by_function", std::move(by_fn)}};
  o["workers"] = json::object{{"spawns", spawns_}, {"deaths", deaths_}, {"active", active_workers}};
  o["performance"] = json::object{{"avg_duration_ms", p.avg_ms}, {"p50_duration_ms", p.p50_ms},
                                  {"p95_duration_ms", p.p95_ms}, {"p99_duration_ms", p.p99_ms},
                                  {"min_duration_ms", p.min_ms}, {"max_duration_ms", p.max_ms}};
  return o;
}

void EngineMetrics::for_each_function(
    const std::function<void(const std::string&, uint64_t, uint64_t, uint64_t)>& fn) const {
  for (const auto& [id, f] : by_function_) fn(id, f.success, f.error, f.deferred);
}

}  // namespace iii::observability
