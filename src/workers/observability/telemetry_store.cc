#include "workers/observability/telemetry_store.h"

#include <chrono>

#include "protocol/uuid.h"

namespace iii::observability {

namespace {
int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Removes the records `keep` refuses, in place; returns how many.
template <typename T, typename Keep>
size_t filter(std::vector<T>& v, const Keep& keep) {
  size_t out = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!keep(v[i])) continue;
    if (out != i) v[out] = std::move(v[i]);
    ++out;
  }
  const size_t removed = v.size() - out;
  v.resize(out);
  return removed;
}
}  // namespace

Telemetry::Telemetry() : Telemetry(Options{}) {}

Telemetry::Telemetry(Options o) : now_ms(wall_ms), opts_(o), rng_(std::random_device{}()) {
  logs_.set_limits(opts_.logs);
  spans_.set_limits(opts_.spans);
  metrics_.set_limits(opts_.metrics);
}

void Telemetry::set_max_bytes(Kind k, size_t n) {
  switch (k) {
    case Kind::kLogs:
      opts_.logs.max_bytes = n;
      logs_.set_limits(opts_.logs);
      break;
    case Kind::kSpans:
      opts_.spans.max_bytes = n;
      spans_.set_limits(opts_.spans);
      break;
    case Kind::kMetrics:
      opts_.metrics.max_bytes = n;
      metrics_.set_limits(opts_.metrics);
      break;
  }
  sweep(now_ms());
}

size_t Telemetry::count(Kind k) const {
  return k == Kind::kLogs    ? logs_.size()
         : k == Kind::kSpans ? spans_.size() + ring_.size()
                             : metrics_.size();
}
size_t Telemetry::bytes(Kind k) const {
  return k == Kind::kLogs    ? logs_.bytes()
         : k == Kind::kSpans ? spans_.bytes() + ring_.size() * sizeof(EngineSpanRec)
                             : metrics_.bytes();
}
uint64_t Telemetry::evicted(Kind k) const {
  return k == Kind::kLogs    ? logs_.evicted()
         : k == Kind::kSpans ? spans_.evicted() + ring_evicted_
                             : metrics_.evicted();
}

namespace {
constexpr size_t kMaxFunctionNames = 100000;

std::string hex(std::initializer_list<uint64_t> parts) {
  std::string s(parts.size() * 16, '0');
  size_t at = 0;
  for (uint64_t v : parts) {
    protocol::write_hex64(&s[at], v);
    at += 16;
  }
  return s;
}
}  // namespace

bool Telemetry::add_engine_span(EngineSpanRec&& rec, const std::string& function_id) {
  if (span_filter_ || span_observers_.size() > engine_span_observers_.size()) return false;
  if (!opts_.store_spans && engine_span_observers_.empty()) return false;
  auto it = fn_index_.find(function_id);
  if (it == fn_index_.end()) {
    if (fn_names_.size() >= kMaxFunctionNames) return false;
    it = fn_index_.emplace(function_id, static_cast<uint32_t>(fn_names_.size())).first;
    fn_names_.push_back(std::make_shared<const std::string>(function_id));
  }
  rec.function = it->second;
  ++received_[1];
  for (auto& fn : engine_span_observers_) fn(rec, fn_names_[rec.function]);
  if (!opts_.store_spans || opts_.spans.max_count == 0) return true;
  if (ring_.size() >= opts_.spans.max_count) {
    ring_.pop_front();
    ++ring_evicted_;
  }
  ring_.push_back(std::move(rec));
  return true;
}

StoredSpan Telemetry::materialize(const EngineSpanRec& r) const {
  static const std::string kNone;
  return materialize(r, r.function < fn_names_.size() ? *fn_names_[r.function] : kNone,
                     engine_service_);
}

StoredSpan Telemetry::materialize(const EngineSpanRec& r, const std::string& function_id,
                                  const std::string& service) {
  StoredSpan s;
  s.trace_id = hex({r.trace_hi, r.trace_lo});
  s.span_id = hex({r.span_id});
  if (r.parent_span_id) s.parent_span_id = hex({r.parent_span_id});
  s.name = "invoke " + function_id;
  s.kind = 1;  // INTERNAL: between the caller's span and the executor's
  s.start_time_unix_nano = r.start_unix_nano;
  s.end_time_unix_nano = r.end_unix_nano;
  s.status = r.error ? SpanStatus::kError : SpanStatus::kOk;
  if (r.error) s.status_description = *r.error;
  if (r.internal) s.attributes.emplace_back("iii.internal", "true");
  s.service_name = service;
  s.scope_name = "iii";
  s.flags = r.flags;
  return s;
}

std::vector<StoredSpan> Telemetry::engine_spans(
    const std::function<bool(const EngineSpanRec&)>& keep) const {
  std::vector<StoredSpan> out;
  for (const auto& r : ring_)
    if (!keep || keep(r)) out.push_back(materialize(r));
  return out;
}

void Telemetry::sweep(int64_t now) {
  logs_.evict(now);
  spans_.evict(now);
  metrics_.evict(now);
}

void Telemetry::add_logs(std::vector<StoredLog>&& logs) {
  received_[0] += logs.size();
  if (log_filter_) {
    filtered_[0] += filter(logs, log_filter_);
  } else if (opts_.logs_sampling_ratio < 1.0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const double r = opts_.logs_sampling_ratio;
    filtered_[0] += filter(logs, [&](const StoredLog&) { return u(rng_) < r; });
  }
  if (logs.empty()) return;
  for (auto& fn : log_observers_) fn(logs);
  if (!opts_.store_logs) return;
  const int64_t now = now_ms();
  for (auto& l : logs) logs_.add(std::move(l), now);
}

void Telemetry::add_spans(std::vector<StoredSpan>&& spans) {
  received_[1] += spans.size();
  if (span_filter_) filtered_[1] += filter(spans, span_filter_);
  if (spans.empty()) return;
  for (auto& fn : span_observers_) fn(spans);
  if (!opts_.store_spans) return;
  const int64_t now = now_ms();
  for (auto& s : spans) spans_.add(std::move(s), now);
}

void Telemetry::add_metrics(std::vector<StoredMetric>&& metrics) {
  received_[2] += metrics.size();
  if (metrics.empty()) return;
  for (auto& fn : metric_observers_) fn(metrics);
  if (!opts_.store_metrics) return;
  const int64_t now = now_ms();
  for (auto& m : metrics) metrics_.add(std::move(m), now);
}

}  // namespace iii::observability
