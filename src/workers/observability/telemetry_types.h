// The records of the observability worker: logs, spans and metrics as stored in memory and
// returned by the engine::logs|traces|metrics functions (modules.md §8.3). Built from the SDKs'
// OTLP/JSON frames (otlp_ingest.h), engine::log::* calls and the engine's own invocation spans.
// See docs/observability-seam.md for how other parts (sampling, alerts, export) consume them.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace iii::observability {

struct StoredLog {
  int64_t timestamp_unix_nano = 0;
  int64_t observed_timestamp_unix_nano = 0;
  int severity_number = 0;
  std::string severity_text;
  std::string body;
  boost::json::object attributes;
  std::optional<std::string> trace_id;  // 32 lowercase hex
  std::optional<std::string> span_id;   // 16 lowercase hex
  boost::json::object resource;         // string values
  std::string service_name;
  std::optional<std::string> scope_name;
  std::optional<std::string> scope_version;

  // The spec's StoredLog: all 12 keys, absent options as null.
  boost::json::object to_json() const;
  size_t approx_bytes() const;
  // "trace", "debug", "info", "warn", "error" (from severity_text, else severity_number).
  std::string level() const;
};

enum class SpanStatus { kUnset, kOk, kError };
const char* to_string(SpanStatus s);

struct SpanEvent {
  std::string name;
  int64_t timestamp_unix_nano = 0;
  boost::json::object attributes;
};

struct StoredSpan {
  std::string trace_id;  // 32 lowercase hex
  std::string span_id;   // 16 lowercase hex
  std::optional<std::string> parent_span_id;
  std::string name;
  int kind =
      0;  // OTLP SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
  int64_t start_time_unix_nano = 0;
  int64_t end_time_unix_nano = 0;
  SpanStatus status = SpanStatus::kUnset;
  std::optional<std::string> status_description;
  std::vector<std::pair<std::string, std::string>> attributes;  // non-strings JSON-serialised
  std::string service_name;
  std::vector<SpanEvent> events;
  boost::json::array links;
  std::optional<std::string> scope_name;
  std::optional<std::string> scope_version;
  std::optional<uint32_t> flags;
  boost::json::object resource;  // string values; not part of the JSON shape (for exporters)

  bool is_root() const { return !parent_span_id.has_value(); }
  int64_t duration_ns() const { return end_time_unix_nano - start_time_unix_nano; }
  const std::string* attribute(std::string_view key) const;
  // The spec's StoredSpan.
  boost::json::object to_json() const;
  size_t approx_bytes() const;
};

enum class MetricType { kGauge, kSum, kHistogram, kExponentialHistogram, kSummary };
const char* to_string(MetricType t);

struct MetricPoint {
  int64_t timestamp_unix_nano = 0;
  int64_t start_time_unix_nano = 0;
  boost::json::object attributes;
  double value = 0;  // gauge and sum points
  // Histogram-like points (count/sum always; the rest when sent).
  uint64_t count = 0;
  double sum = 0;
  std::optional<double> min, max;
  std::vector<uint64_t> bucket_counts;
  std::vector<double> explicit_bounds;

  boost::json::object to_json(MetricType type) const;
};

struct StoredMetric {
  std::string name;
  std::string description;
  std::string unit;
  MetricType type = MetricType::kGauge;
  bool is_monotonic = false;
  int temporality = 0;  // OTLP AggregationTemporality: 0 unspecified, 1 delta, 2 cumulative
  std::string service_name;
  boost::json::object resource;
  std::optional<std::string> scope_name;
  int64_t timestamp_unix_nano = 0;  // latest point
  std::vector<MetricPoint> points;

  boost::json::object to_json() const;
  size_t approx_bytes() const;
};

// Severity numbers of the engine::log::* levels (OTLP SeverityNumber, first of each range).
int severity_number_of(std::string_view level);  // "info" → 9; unknown → 0
// OTLP SeverityNumber → "TRACE".."FATAL" (the OTLP short names).
const char* severity_text_of(int severity_number);

int64_t now_unix_nano();

}  // namespace iii::observability
