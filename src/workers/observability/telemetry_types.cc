#include "workers/observability/telemetry_types.h"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <chrono>

namespace iii::observability {

namespace json = boost::json;

namespace {

json::value opt(const std::optional<std::string>& s) {
  return s ? json::value(*s) : json::value(nullptr);
}

// A rough size of a JSON value in memory (strings and containers dominate).
size_t json_bytes(const json::value& v) {
  switch (v.kind()) {
    case json::kind::string:
      return sizeof(json::value) + v.get_string().size();
    case json::kind::array: {
      size_t n = sizeof(json::value);
      for (const auto& e : v.get_array()) n += json_bytes(e);
      return n;
    }
    case json::kind::object: {
      size_t n = sizeof(json::value);
      for (const auto& kv : v.get_object()) n += kv.key().size() + json_bytes(kv.value());
      return n;
    }
    default:
      return sizeof(json::value);
  }
}

size_t object_bytes(const json::object& o) {
  size_t n = 0;
  for (const auto& kv : o) n += kv.key().size() + json_bytes(kv.value());
  return n;
}

size_t opt_bytes(const std::optional<std::string>& s) { return s ? s->size() : 0; }

}  // namespace

int64_t now_unix_nano() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

int severity_number_of(std::string_view level) {
  if (level == "trace") return 1;
  if (level == "debug") return 5;
  if (level == "info") return 9;
  if (level == "warn") return 13;
  if (level == "error") return 17;
  if (level == "fatal") return 21;
  return 0;
}

const char* severity_text_of(int n) {
  if (n <= 0) return "UNSPECIFIED";
  if (n <= 4) return "TRACE";
  if (n <= 8) return "DEBUG";
  if (n <= 12) return "INFO";
  if (n <= 16) return "WARN";
  if (n <= 20) return "ERROR";
  return "FATAL";
}

json::object StoredLog::to_json() const {
  json::object o;
  o.reserve(12);
  o["timestamp_unix_nano"] = timestamp_unix_nano;
  o["observed_timestamp_unix_nano"] = observed_timestamp_unix_nano;
  o["severity_number"] = severity_number;
  o["severity_text"] = severity_text;
  o["body"] = body;
  o["attributes"] = attributes;
  o["trace_id"] = opt(trace_id);
  o["span_id"] = opt(span_id);
  o["resource"] = resource;
  o["service_name"] = service_name;
  o["instrumentation_scope_name"] = opt(scope_name);
  o["instrumentation_scope_version"] = opt(scope_version);
  return o;
}

size_t StoredLog::approx_bytes() const {
  return sizeof(StoredLog) + severity_text.size() + body.size() + object_bytes(attributes) +
         opt_bytes(trace_id) + opt_bytes(span_id) + object_bytes(resource) + service_name.size() +
         opt_bytes(scope_name) + opt_bytes(scope_version);
}

std::string StoredLog::level() const {
  std::string t = severity_text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "warning") return "warn";
  if (t == "trace" || t == "debug" || t == "info" || t == "warn" || t == "error") return t;
  if (t == "fatal" || t == "critical") return "error";
  std::string s = severity_text_of(severity_number);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "fatal") return "error";
  if (s == "unspecified") return t.empty() ? "info" : t;
  return s;
}

const char* to_string(SpanStatus s) {
  switch (s) {
    case SpanStatus::kOk:
      return "ok";
    case SpanStatus::kError:
      return "error";
    default:
      return "unset";
  }
}

const std::string* StoredSpan::attribute(std::string_view key) const {
  for (const auto& [k, v] : attributes)
    if (k == key) return &v;
  return nullptr;
}

json::object StoredSpan::to_json() const {
  json::object o;
  o.reserve(17);
  o["trace_id"] = trace_id;
  o["span_id"] = span_id;
  o["parent_span_id"] = opt(parent_span_id);
  o["name"] = name;
  o["start_time_unix_nano"] = start_time_unix_nano;
  o["end_time_unix_nano"] = end_time_unix_nano;
  o["status"] = to_string(status);
  if (status_description) o["status_description"] = *status_description;
  json::array attrs;
  attrs.reserve(attributes.size());
  for (const auto& [k, v] : attributes)
    attrs.push_back(json::array{json::value(k), json::value(v)});
  o["attributes"] = std::move(attrs);
  o["service_name"] = service_name;
  json::array evs;
  for (const auto& e : events)
    evs.push_back(json::object{{"name", e.name},
                               {"timestamp_unix_nano", e.timestamp_unix_nano},
                               {"attributes", e.attributes}});
  o["events"] = std::move(evs);
  o["links"] = links;
  if (scope_name) o["instrumentation_scope_name"] = *scope_name;
  if (scope_version) o["instrumentation_scope_version"] = *scope_version;
  if (flags) o["flags"] = *flags;
  return o;
}

size_t StoredSpan::approx_bytes() const {
  size_t n = sizeof(StoredSpan) + trace_id.size() + span_id.size() + opt_bytes(parent_span_id) +
             name.size() + opt_bytes(status_description) + service_name.size() +
             opt_bytes(scope_name) + opt_bytes(scope_version) + object_bytes(resource);
  for (const auto& [k, v] : attributes) n += sizeof(std::string) * 2 + k.size() + v.size();
  for (const auto& e : events) n += sizeof(SpanEvent) + e.name.size() + object_bytes(e.attributes);
  for (const auto& l : links) n += json_bytes(l);
  return n;
}

const char* to_string(MetricType t) {
  switch (t) {
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kSum:
      return "sum";
    case MetricType::kHistogram:
      return "histogram";
    case MetricType::kExponentialHistogram:
      return "exponential_histogram";
    default:
      return "summary";
  }
}

json::object MetricPoint::to_json(MetricType type) const {
  json::object o;
  o["timestamp_unix_nano"] = timestamp_unix_nano;
  if (start_time_unix_nano) o["start_time_unix_nano"] = start_time_unix_nano;
  o["attributes"] = attributes;
  if (type == MetricType::kGauge || type == MetricType::kSum) {
    o["value"] = value;
    return o;
  }
  o["count"] = count;
  o["sum"] = sum;
  if (min) o["min"] = *min;
  if (max) o["max"] = *max;
  if (!bucket_counts.empty()) {
    json::array b;
    for (auto c : bucket_counts) b.push_back(c);
    o["bucket_counts"] = std::move(b);
  }
  if (!explicit_bounds.empty()) {
    json::array b;
    for (auto c : explicit_bounds) b.push_back(c);
    o["explicit_bounds"] = std::move(b);
  }
  return o;
}

json::object StoredMetric::to_json() const {
  json::object o;
  o["name"] = name;
  o["description"] = description;
  o["unit"] = unit;
  o["metric_type"] = to_string(type);
  if (type == MetricType::kSum) o["is_monotonic"] = is_monotonic;
  json::array pts;
  pts.reserve(points.size());
  for (const auto& p : points) pts.push_back(p.to_json(type));
  o["data_points"] = std::move(pts);
  o["service_name"] = service_name;
  o["timestamp_unix_nano"] = timestamp_unix_nano;
  o["instrumentation_scope_name"] = opt(scope_name);
  return o;
}

size_t StoredMetric::approx_bytes() const {
  size_t n = sizeof(StoredMetric) + name.size() + description.size() + unit.size() +
             service_name.size() + object_bytes(resource) + opt_bytes(scope_name);
  for (const auto& p : points)
    n += sizeof(MetricPoint) + object_bytes(p.attributes) + p.bucket_counts.size() * 8 +
         p.explicit_bounds.size() * 8;
  return n;
}

}  // namespace iii::observability
