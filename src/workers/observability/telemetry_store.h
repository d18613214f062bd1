// Bounded in-memory storage of logs, spans and metrics, and the pipeline every record goes
// through: filter (sampling) → store → observers (export, alerts). See
// docs/observability-seam.md. Engine thread only; no locks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "workers/observability/telemetry_types.h"

namespace iii::observability {

enum class Kind { kLogs, kSpans, kMetrics };

struct StoreLimits {
  size_t max_count = 1000;
  int64_t retention_ms = 3600 * 1000;  // 0 = no age limit
  size_t max_bytes = 0;                // 0 = no byte limit
};

// A FIFO of records bounded by count, age (time of storage) and approximate bytes; the oldest
// go first.
template <typename T>
class BoundedBuffer {
 public:
  struct Entry {
    int64_t stored_ms;
    size_t bytes;
    T rec;
  };

  void set_limits(const StoreLimits& l) { limits_ = l; }
  const StoreLimits& limits() const { return limits_; }

  void add(T&& rec, int64_t now_ms) {
    const size_t b = rec.approx_bytes();
    bytes_ += b;
    entries_.push_back(Entry{now_ms, b, std::move(rec)});
    evict(now_ms);
  }
  // Drops what is over the count or byte limit or older than the retention.
  void evict(int64_t now_ms) {
    while (!entries_.empty() && (entries_.size() > limits_.max_count ||
                                 (limits_.max_bytes && bytes_ > limits_.max_bytes) ||
                                 (limits_.retention_ms > 0 &&
                                  entries_.front().stored_ms + limits_.retention_ms <= now_ms))) {
      bytes_ -= entries_.front().bytes;
      entries_.pop_front();
      ++evicted_;
    }
  }
  void clear() {
    entries_.clear();
    bytes_ = 0;
  }
  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t evicted() const { return evicted_; }
  const std::deque<Entry>& entries() const { return entries_; }

 private:
  StoreLimits limits_;
  std::deque<Entry> entries_;
  size_t bytes_ = 0;
  uint64_t evicted_ = 0;
};

// The engine's own span of one invocation in compact form: no heap memory unless it failed
// (error text). Kept in a ring and turned into a StoredSpan only when read.
struct EngineSpanRec {
  uint64_t trace_hi = 0, trace_lo = 0, span_id = 0, parent_span_id = 0;  // parent 0: root
  int64_t start_unix_nano = 0, end_unix_nano = 0;
  uint32_t function = 0;  // index into the function-id table
  uint8_t flags = 1;
  bool internal = false;                     // an engine::* function
  std::shared_ptr<const std::string> error;  // "code: message" when it failed
};

class Telemetry {
 public:
  struct Options {
    bool store_logs = true;
    bool store_spans = true;
    bool store_metrics = true;
    StoreLimits logs{1000, 3600 * 1000, 0};
    StoreLimits spans{1000, 0, 0};
    StoreLimits metrics{10000, 3600 * 1000, 0};
    double logs_sampling_ratio = 1.0;  // used when no log filter is set
  };

  Telemetry();
  explicit Telemetry(Options o);

  // ---- intake (every source) ----
  void add_logs(std::vector<StoredLog>&& logs);
  void add_spans(std::vector<StoredSpan>&& spans);
  void add_metrics(std::vector<StoredMetric>&& metrics);

  // The engine's own spans. Kept compact (a ring record, and engine-span observers get the
  // record) unless something needs a StoredSpan at once (a span filter, or a span observer
  // that has no engine-span counterpart): then false is returned and the caller sends
  // materialize(rec) through add_spans.
  bool add_engine_span(EngineSpanRec&& rec, const std::string& function_id);
  StoredSpan materialize(const EngineSpanRec& rec) const;
  // The same for any thread: `function_id` and `service` given.
  static StoredSpan materialize(const EngineSpanRec& rec, const std::string& function_id,
                                const std::string& service);
  const std::string& engine_service() const { return engine_service_; }
  // The compact engine spans that `keep` accepts (all without it), as StoredSpans, oldest
  // first. Filter first: the ring may hold millions.
  std::vector<StoredSpan> engine_spans(
      const std::function<bool(const EngineSpanRec&)>& keep = {}) const;
  void set_engine_service(std::string name) { engine_service_ = std::move(name); }

  // ---- hooks (docs/observability-seam.md) ----
  using SpanFilter = std::function<bool(const StoredSpan&)>;
  using LogFilter = std::function<bool(const StoredLog&)>;
  void set_span_filter(SpanFilter f) { span_filter_ = std::move(f); }
  void set_log_filter(LogFilter f) { log_filter_ = std::move(f); }
  void on_logs(std::function<void(const std::vector<StoredLog>&)> fn) {
    log_observers_.push_back(std::move(fn));
  }
  void on_spans(std::function<void(const std::vector<StoredSpan>&)> fn) {
    span_observers_.push_back(std::move(fn));
  }
  void on_metrics(std::function<void(const std::vector<StoredMetric>&)> fn) {
    metric_observers_.push_back(std::move(fn));
  }
  // Engine spans in compact form, as they end (the function id shared, never changed). An
  // observer of on_spans that also wants the engine's spans registers here too, so that engine
  // spans stay on the compact path.
  using EngineSpanObserver =
      std::function<void(const EngineSpanRec&, const std::shared_ptr<const std::string>&)>;
  void on_engine_spans(EngineSpanObserver fn) { engine_span_observers_.push_back(std::move(fn)); }

  // ---- storage ----
  const Options& options() const { return opts_; }
  void set_max_bytes(Kind k, size_t n);
  size_t count(Kind k) const;
  size_t bytes(Kind k) const;
  uint64_t evicted(Kind k) const;
  uint64_t received(Kind k) const { return received_[static_cast<int>(k)]; }
  uint64_t filtered(Kind k) const { return filtered_[static_cast<int>(k)]; }
  // Age-based eviction (also done on every insert).
  void sweep(int64_t now_ms);
  void clear_logs() { logs_.clear(); }
  void clear_spans() {
    spans_.clear();
    ring_.clear();
  }
  const BoundedBuffer<StoredLog>& logs() const { return logs_; }
  const BoundedBuffer<StoredSpan>& spans() const { return spans_; }
  const BoundedBuffer<StoredMetric>& metrics() const { return metrics_; }

  // Clock for storage times (tests move it).
  std::function<int64_t()> now_ms;

 private:
  Options opts_;
  BoundedBuffer<StoredLog> logs_;
  BoundedBuffer<StoredSpan> spans_;
  BoundedBuffer<StoredMetric> metrics_;
  SpanFilter span_filter_;
  LogFilter log_filter_;
  std::vector<std::function<void(const std::vector<StoredLog>&)>> log_observers_;
  std::vector<std::function<void(const std::vector<StoredSpan>&)>> span_observers_;
  std::vector<std::function<void(const std::vector<StoredMetric>&)>> metric_observers_;
  std::vector<EngineSpanObserver> engine_span_observers_;
  std::deque<EngineSpanRec> ring_;  // bounded by opts_.spans.max_count
  uint64_t ring_evicted_ = 0;
  std::vector<std::shared_ptr<const std::string>> fn_names_;
  std::unordered_map<std::string, uint32_t> fn_index_;
  std::string engine_service_ = "iii";
  uint64_t received_[3] = {0, 0, 0};
  uint64_t filtered_[3] = {0, 0, 0};
  std::minstd_rand rng_;
};

}  // namespace iii::observability
