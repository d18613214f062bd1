#include "workers/observability/otlp_encode.h"

#include <boost/json/serialize.hpp>
#include <cmath>
#include <string>

namespace iii::observability {

namespace json = boost::json;

namespace {

std::string nanos(int64_t v) { return std::to_string(v); }

json::object kv(std::string_view key, json::object value) {
  return json::object{{"key", key}, {"value", std::move(value)}};
}

json::object string_value(std::string_view s) { return json::object{{"stringValue", s}}; }

json::object double_value(double d) {
  // OTLP/JSON allows "NaN"/"Infinity" strings where JSON has no number.
  if (std::isnan(d)) return json::object{{"doubleValue", "NaN"}};
  if (std::isinf(d)) return json::object{{"doubleValue", d > 0 ? "Infinity" : "-Infinity"}};
  return json::object{{"doubleValue", d}};
}

json::value number(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return d;
}

json::object point_base(const MetricPoint& p) {
  json::object o;
  o["attributes"] = to_key_values(p.attributes);
  if (p.start_time_unix_nano) o["startTimeUnixNano"] = nanos(p.start_time_unix_nano);
  o["timeUnixNano"] = nanos(p.timestamp_unix_nano);
  return o;
}

json::object histogram_point(const MetricPoint& p, bool with_buckets) {
  json::object o = point_base(p);
  o["count"] = std::to_string(p.count);
  o["sum"] = number(p.sum);
  if (with_buckets && !p.bucket_counts.empty()) {
    json::array b;
    for (auto c : p.bucket_counts) b.push_back(json::value(std::to_string(c)));
    o["bucketCounts"] = std::move(b);
    json::array e;
    for (auto c : p.explicit_bounds) e.push_back(number(c));
    o["explicitBounds"] = std::move(e);
  }
  if (p.min) o["min"] = number(*p.min);
  if (p.max) o["max"] = number(*p.max);
  return o;
}

}  // namespace

json::object to_any_value(const json::value& v) {
  switch (v.kind()) {
    case json::kind::string:
      return string_value(v.get_string());
    case json::kind::bool_:
      return json::object{{"boolValue", v.get_bool()}};
    case json::kind::int64:
      return json::object{{"intValue", std::to_string(v.get_int64())}};
    case json::kind::uint64:
      return json::object{{"intValue", std::to_string(v.get_uint64())}};
    case json::kind::double_:
      return double_value(v.get_double());
    case json::kind::array: {
      json::array values;
      for (const auto& e : v.get_array()) values.push_back(to_any_value(e));
      return json::object{{"arrayValue", json::object{{"values", std::move(values)}}}};
    }
    case json::kind::object:
      return json::object{{"kvlistValue", json::object{{"values", to_key_values(v.get_object())}}}};
    case json::kind::null:
      break;
  }
  return json::object{};  // an empty AnyValue
}

json::array to_key_values(const json::object& attrs) {
  json::array out;
  out.reserve(attrs.size());
  for (const auto& a : attrs) out.push_back(kv(a.key(), to_any_value(a.value())));
  return out;
}

json::object span_to_otlp(const StoredSpan& s) {
  json::object o;
  o.reserve(12);
  o["traceId"] = s.trace_id;
  o["spanId"] = s.span_id;
  if (s.parent_span_id) o["parentSpanId"] = *s.parent_span_id;
  if (s.flags) o["flags"] = *s.flags;
  o["name"] = s.name;
  o["kind"] = s.kind;
  o["startTimeUnixNano"] = nanos(s.start_time_unix_nano);
  o["endTimeUnixNano"] = nanos(s.end_time_unix_nano);
  json::array attrs;
  attrs.reserve(s.attributes.size());
  for (const auto& [k, v] : s.attributes) attrs.push_back(kv(k, string_value(v)));
  o["attributes"] = std::move(attrs);
  if (!s.events.empty()) {
    json::array evs;
    for (const auto& e : s.events)
      evs.push_back(json::object{{"timeUnixNano", nanos(e.timestamp_unix_nano)},
                                 {"name", e.name},
                                 {"attributes", to_key_values(e.attributes)}});
    o["events"] = std::move(evs);
  }
  if (!s.links.empty()) {
    json::array links;
    for (const auto& l : s.links) {
      const json::object* lo = l.if_object();
      if (!lo) continue;
      const json::value* t = lo->if_contains("trace_id");
      const json::value* sp = lo->if_contains("span_id");
      if (!t || !t->is_string() || !sp || !sp->is_string()) continue;
      json::object link{{"traceId", *t}, {"spanId", *sp}};
      if (const json::value* a = lo->if_contains("attributes"); a && a->is_object())
        link["attributes"] = to_key_values(a->get_object());
      links.push_back(std::move(link));
    }
    o["links"] = std::move(links);
  }
  json::object status;
  status["code"] = s.status == SpanStatus::kOk ? 1 : s.status == SpanStatus::kError ? 2 : 0;
  if (s.status_description && !s.status_description->empty())
    status["message"] = *s.status_description;
  o["status"] = std::move(status);
  return o;
}

json::object log_to_otlp(const StoredLog& l) {
  json::object o;
  o.reserve(9);
  o["timeUnixNano"] = nanos(l.timestamp_unix_nano);
  o["observedTimeUnixNano"] = nanos(l.observed_timestamp_unix_nano);
  o["severityNumber"] = l.severity_number;
  o["severityText"] = l.severity_text;
  o["body"] = string_value(l.body);
  o["attributes"] = to_key_values(l.attributes);
  if (l.trace_id) o["traceId"] = *l.trace_id;
  if (l.span_id) o["spanId"] = *l.span_id;
  return o;
}

json::object metric_to_otlp(const StoredMetric& m) {
  json::object o;
  o["name"] = m.name;
  if (!m.description.empty()) o["description"] = m.description;
  if (!m.unit.empty()) o["unit"] = m.unit;
  json::array points;
  points.reserve(m.points.size());
  switch (m.type) {
    case MetricType::kGauge:
    case MetricType::kSum:
      for (const auto& p : m.points) {
        json::object pt = point_base(p);
        pt["asDouble"] = number(p.value);
        points.push_back(std::move(pt));
      }
      if (m.type == MetricType::kGauge) {
        o["gauge"] = json::object{{"dataPoints", std::move(points)}};
      } else {
        o["sum"] = json::object{{"dataPoints", std::move(points)},
                                {"aggregationTemporality", m.temporality},
                                {"isMonotonic", m.is_monotonic}};
      }
      break;
    case MetricType::kHistogram:
    case MetricType::kExponentialHistogram:
      for (const auto& p : m.points)
        points.push_back(histogram_point(p, m.type == MetricType::kHistogram));
      o["histogram"] = json::object{{"dataPoints", std::move(points)},
                                    {"aggregationTemporality", m.temporality}};
      break;
    case MetricType::kSummary:
      for (const auto& p : m.points) {
        json::object pt = point_base(p);
        pt["count"] = std::to_string(p.count);
        pt["sum"] = number(p.sum);
        points.push_back(std::move(pt));
      }
      o["summary"] = json::object{{"dataPoints", std::move(points)}};
      break;
  }
  return o;
}

// ---------------------------------------------------------------------------------------------

OtlpFeed::OtlpFeed(OtlpExporter& exporter, std::string service_name, std::string service_version,
                   std::string service_namespace)
    : exporter_(exporter),
      service_name_(std::move(service_name)),
      service_version_(std::move(service_version)),
      service_namespace_(std::move(service_namespace)) {}

std::shared_ptr<const OtlpOrigin> OtlpFeed::origin(
    const json::object& resource, const std::string& service_name,
    const std::optional<std::string>& scope_name, const std::optional<std::string>& scope_version) {
  // The cache key: resource attributes (strings) and the scope, joined by separators that
  // cannot appear unescaped in the serialised form.
  std::string key = service_name;
  key += '\x1f';
  if (scope_name) key += *scope_name;
  key += '\x1f';
  if (scope_version) key += *scope_version;
  for (const auto& a : resource) {
    key += '\x1e';
    key += a.key();
    key += '=';
    if (a.value().is_string())
      key += a.value().get_string();
    else
      key += json::serialize(a.value());
  }
  if (auto it = origins_.find(key); it != origins_.end()) return it->second;

  json::object attrs_obj = resource;
  if (attrs_obj.empty()) {
    attrs_obj["service.name"] = service_name.empty() ? service_name_ : service_name;
    if (!service_version_.empty()) attrs_obj["service.version"] = service_version_;
    if (!service_namespace_.empty()) attrs_obj["service.namespace"] = service_namespace_;
  } else if (!attrs_obj.contains("service.name") && !service_name.empty()) {
    attrs_obj["service.name"] = service_name;
  }
  json::object res{{"attributes", to_key_values(attrs_obj)}};
  json::object scope;
  scope["name"] = scope_name ? *scope_name : std::string("iii");
  if (scope_version) scope["version"] = *scope_version;
  auto o = make_origin(std::move(res), std::move(scope));
  // Few distinct services send to one engine; a bound keeps a misbehaving one from growing it.
  if (origins_.size() >= 256) origins_.clear();
  origins_.emplace(std::move(key), o);
  return o;
}

namespace {

json::object to_otlp(const StoredSpan& s) { return span_to_otlp(s); }
json::object to_otlp(const StoredLog& l) { return log_to_otlp(l); }
json::object to_otlp(const StoredMetric& m) { return metric_to_otlp(m); }
const std::optional<std::string>& version_of(const StoredSpan& s) { return s.scope_version; }
const std::optional<std::string>& version_of(const StoredLog& l) { return l.scope_version; }
const std::optional<std::string>& version_of(const StoredMetric&) {
  static const std::optional<std::string> kNone;
  return kNone;
}

// A copy of a stored record, converted on the exporter's thread.
template <typename Rec>
class Deferred : public DeferredRecord {
 public:
  Deferred(OtlpFeed& feed, const Rec& rec) : feed_(feed), rec_(rec) {}
  std::pair<std::shared_ptr<const OtlpOrigin>, json::object> build() override {
    return {feed_.origin(rec_.resource, rec_.service_name, rec_.scope_name, version_of(rec_)),
            to_otlp(rec_)};
  }

 private:
  OtlpFeed& feed_;
  Rec rec_;
};

// An engine span: about 80 bytes to copy on the engine thread; the StoredSpan and its JSON are
// built when the batch is.
class DeferredEngineSpan : public DeferredRecord {
 public:
  DeferredEngineSpan(OtlpFeed& feed, const EngineSpanRec& rec,
                     std::shared_ptr<const std::string> function_id, const std::string& service)
      : feed_(feed), rec_(rec), function_id_(std::move(function_id)), service_(service) {}
  std::pair<std::shared_ptr<const OtlpOrigin>, json::object> build() override {
    const StoredSpan s = Telemetry::materialize(rec_, *function_id_, service_);
    return {feed_.origin(s.resource, s.service_name, s.scope_name, s.scope_version),
            span_to_otlp(s)};
  }

 private:
  OtlpFeed& feed_;
  EngineSpanRec rec_;
  std::shared_ptr<const std::string> function_id_;
  const std::string& service_;  // the feed's, lives as long as it
};

}  // namespace

void OtlpFeed::engine_span(const EngineSpanRec& rec,
                           const std::shared_ptr<const std::string>& function_id) {
  if (!exporter_.exports(Signal::kTraces)) return;
  // The size of the span's OTLP/JSON, roughly: ids, times, name, status.
  const size_t bytes = 300 + function_id->size() + (rec.error ? rec.error->size() : 0);
  exporter_.enqueue(Signal::kTraces,
                    std::make_unique<DeferredEngineSpan>(*this, rec, function_id, service_name_),
                    bytes);
}

void OtlpFeed::spans(const std::vector<StoredSpan>& spans) {
  if (!exporter_.exports(Signal::kTraces)) return;
  for (const auto& s : spans)
    exporter_.enqueue(Signal::kTraces, std::make_unique<Deferred<StoredSpan>>(*this, s),
                      s.approx_bytes());
}

void OtlpFeed::logs(const std::vector<StoredLog>& logs) {
  if (!exporter_.exports(Signal::kLogs)) return;
  for (const auto& l : logs)
    exporter_.enqueue(Signal::kLogs, std::make_unique<Deferred<StoredLog>>(*this, l),
                      l.approx_bytes());
}

void OtlpFeed::metrics(const std::vector<StoredMetric>& metrics) {
  if (!exporter_.exports(Signal::kMetrics)) return;
  for (const auto& m : metrics)
    exporter_.enqueue(Signal::kMetrics, std::make_unique<Deferred<StoredMetric>>(*this, m),
                      m.approx_bytes());
}

}  // namespace iii::observability
