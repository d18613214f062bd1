// The engine's own metrics (engine::metrics::list `engine_metrics`): invocations by outcome and
// by function, invocation durations, worker connections. Engine thread only.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace iii::observability {

class EngineMetrics {
 public:
  // Durations kept for the percentiles: the most recent ones.
  static constexpr size_t kReservoir = 4096;

  void invocation(const std::string& function_id, bool success, int64_t duration_ns);
  void deferred(const std::string& function_id);
  void worker_spawned() { ++spawns_; }
  void worker_died() { ++deaths_; }

  uint64_t total() const { return success_ + error_ + deferred_; }
  uint64_t success() const { return success_; }
  uint64_t error() const { return error_; }
  uint64_t deferred_count() const { return deferred_; }
  uint64_t spawns() const { return spawns_; }
  uint64_t deaths() const { return deaths_; }

  struct Performance {
    double avg_ms = 0, p50_ms = 0, p95_ms = 0, p99_ms = 0, min_ms = 0, max_ms = 0;
  };
  Performance performance() const;

  // {"invocations":{total,success,error,deferred,by_function},
  //  "workers":{spawns,deaths,active},"performance":{avg,p50,p95,p99,min,max _duration_ms}}
  boost::json::object to_json(size_t active_workers) const;

  // Per-function counters, for a metrics endpoint: (function_id, success, error, deferred).
  void for_each_function(
      const std::function<void(const std::string&, uint64_t, uint64_t, uint64_t)>& fn) const;

 private:
  struct PerFunction {
    uint64_t success = 0, error = 0, deferred = 0;
    int64_t duration_ns_sum = 0;
  };
  PerFunction& per(const std::string& id);

  uint64_t success_ = 0, error_ = 0, deferred_ = 0;
  uint64_t spawns_ = 0, deaths_ = 0;
  int64_t min_ns_ = 0, max_ns_ = 0;
  double sum_ns_ = 0;
  uint64_t timed_ = 0;
  std::vector<int64_t> recent_;  // ring of the last kReservoir durations
  size_t next_ = 0;
  std::unordered_map<std::string, PerFunction> by_function_;
};

}  // namespace iii::observability
