#include "workers/observability/otlp_ingest.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>

#include "protocol/codec.h"

namespace iii::observability {

namespace json = boost::json;

namespace {

// Thrown inside a record's conversion; caught per record (never escapes parse_frame).
struct BadField {
  std::string what;
};

const json::value* field(const json::object& o, std::string_view camel, std::string_view snake) {
  if (auto* v = o.if_contains(camel)) return v;
  if (!snake.empty()) return o.if_contains(snake);
  return nullptr;
}

const json::array* array_field(const json::object& o, std::string_view camel,
                               std::string_view snake) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null()) return nullptr;
  if (!v->is_array()) throw BadField{std::string(camel) + " must be an array"};
  return &v->get_array();
}

const json::object* object_field(const json::object& o, std::string_view camel,
                                 std::string_view snake = {}) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null()) return nullptr;
  if (!v->is_object()) throw BadField{std::string(camel) + " must be an object"};
  return &v->get_object();
}

std::string cut(std::string_view s, const IngestLimits& l) {
  return std::string(s.substr(0, l.max_string_bytes));
}

std::string string_field(const json::object& o, std::string_view camel, const IngestLimits& l,
                         std::string_view snake = {}) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null()) return {};
  if (!v->is_string()) throw BadField{std::string(camel) + " must be a string"};
  return cut(v->get_string(), l);
}

// OTLP/JSON int64/uint64: a JSON number or a decimal string.
std::optional<int64_t> to_int(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    const double d = v.get_double();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.2e18) return std::nullopt;
    return static_cast<int64_t>(d);
  }
  if (v.is_string()) {
    std::string_view s = v.get_string();
    int64_t out = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return out;
  }
  return std::nullopt;
}

// A timestamp in ns: absent/null → 0; otherwise a non-negative integer.
int64_t time_field(const json::object& o, std::string_view camel, std::string_view snake) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null()) return 0;
  auto n = to_int(*v);
  if (!n || *n < 0) throw BadField{std::string(camel) + " is not a timestamp in nanoseconds"};
  return *n;
}

int64_t int_field(const json::object& o, std::string_view camel, std::string_view snake,
                  int64_t def) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null()) return def;
  auto n = to_int(*v);
  if (!n) throw BadField{std::string(camel) + " must be an integer"};
  return *n;
}

std::optional<double> to_double(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  if (v.is_string()) {  // "NaN", "Infinity" and decimal strings
    std::string_view s = v.get_string();
    if (s == "NaN") return std::nan("");
    if (s == "Infinity") return INFINITY;
    if (s == "-Infinity") return -INFINITY;
    double d = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (ec == std::errc() && p == s.data() + s.size() && !s.empty()) return d;
  }
  return std::nullopt;
}

std::string lower_hex(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// A required id of n hex digits.
std::string id_field(const json::object& o, std::string_view camel, std::string_view snake,
                     size_t n) {
  const json::value* v = field(o, camel, snake);
  if (!v || !v->is_string() || !valid_hex_id(v->get_string(), n))
    throw BadField{std::string(camel) + " must be " + std::to_string(n) + " hex digits"};
  return lower_hex(v->get_string());
}

// An optional id: absent, null or "" → nullopt; otherwise n hex digits.
std::optional<std::string> opt_id_field(const json::object& o, std::string_view camel,
                                        std::string_view snake, size_t n) {
  const json::value* v = field(o, camel, snake);
  if (!v || v->is_null() || (v->is_string() && v->get_string().empty())) return std::nullopt;
  if (!v->is_string() || !valid_hex_id(v->get_string(), n))
    throw BadField{std::string(camel) + " must be " + std::to_string(n) + " hex digits"};
  return lower_hex(v->get_string());
}

// OTLP AnyValue → plain JSON.
json::value any_value(const json::value& v, const IngestLimits& l, int depth = 0) {
  if (!v.is_object() || depth > 16) return nullptr;
  const json::object& o = v.get_object();
  if (auto* s = field(o, "stringValue", "string_value"))
    return s->is_string() ? json::value(cut(s->get_string(), l)) : json::value(nullptr);
  if (auto* b = field(o, "boolValue", "bool_value"))
    return b->is_bool() ? *b : json::value(nullptr);
  if (auto* i = field(o, "intValue", "int_value")) {
    auto n = to_int(*i);
    return n ? json::value(*n) : json::value(nullptr);
  }
  if (auto* d = field(o, "doubleValue", "double_value")) {
    auto x = to_double(*d);
    return x && std::isfinite(*x) ? json::value(*x) : json::value(nullptr);
  }
  if (auto* a = field(o, "arrayValue", "array_value")) {
    json::array out;
    if (a->is_object())
      if (auto* vals = a->get_object().if_contains("values"); vals && vals->is_array())
        for (const auto& e : vals->get_array()) out.push_back(any_value(e, l, depth + 1));
    return out;
  }
  if (auto* kv = field(o, "kvlistValue", "kvlist_value")) {
    json::object out;
    if (kv->is_object())
      if (auto* vals = kv->get_object().if_contains("values"); vals && vals->is_array())
        for (const auto& e : vals->get_array())
          if (e.is_object())
            if (auto* k = e.get_object().if_contains("key"); k && k->is_string()) {
              const json::value* val = e.get_object().if_contains("value");
              out[k->get_string()] = val ? any_value(*val, l, depth + 1) : json::value(nullptr);
            }
    return out;
  }
  if (auto* b = field(o, "bytesValue", "bytes_value"))
    return b->is_string() ? json::value(cut(b->get_string(), l)) : json::value(nullptr);
  return nullptr;
}

// OTLP KeyValue list → JSON object (key → plain value).
json::object attributes(const json::object& o, const IngestLimits& l) {
  json::object out;
  const json::array* a = array_field(o, "attributes", "");
  if (!a) return out;
  for (const auto& kv : *a) {
    if (out.size() >= l.max_attributes) break;
    if (!kv.is_object()) throw BadField{"attributes must be key/value objects"};
    const json::value* k = kv.get_object().if_contains("key");
    if (!k || !k->is_string()) throw BadField{"an attribute has no string key"};
    const json::value* v = kv.get_object().if_contains("value");
    out[cut(k->get_string(), l)] = v ? any_value(*v, l) : json::value(nullptr);
  }
  return out;
}

std::string as_text(const json::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  return json::serialize(v);
}

struct Resource {
  json::object attrs;  // string values
  std::string service_name = "unknown";
  bool python = false;  // the Python SDK's span kinds are off by one
};

Resource resource_of(const json::object& r, const IngestLimits& l) {
  Resource out;
  const json::object* res = object_field(r, "resource");
  if (!res) return out;
  for (auto& kv : attributes(*res, l)) out.attrs[kv.key()] = as_text(kv.value());
  if (auto* s = out.attrs.if_contains("service.name"); s && s->is_string())
    out.service_name = std::string(s->get_string());
  if (auto* s = out.attrs.if_contains("telemetry.sdk.language"); s && s->is_string())
    out.python = s->get_string() == "python";
  return out;
}

struct Scope {
  std::optional<std::string> name, version;
};

Scope scope_of(const json::object& s, const IngestLimits& l) {
  Scope out;
  const json::object* sc = object_field(s, "scope", "instrumentationLibrary");
  if (!sc) return out;
  std::string n = string_field(*sc, "name", l), v = string_field(*sc, "version", l);
  if (!n.empty()) out.name = std::move(n);
  if (!v.empty()) out.version = std::move(v);
  return out;
}

// Walks resource → scope → records, calling `each(resource, scope, record)`; a BadField in
// a record skips that record only, one in a resource or scope skips what it holds.
template <typename Each>
void walk(const json::object& root, std::string_view top, std::string_view top_snake,
          std::string_view scopes, std::string_view scopes_snake, std::string_view records,
          std::string_view records_snake, IngestResult& out, const IngestLimits& l, size_t& n,
          Each each) {
  auto note = [&](const std::string& what) {
    if (out.error.empty()) out.error = what;
  };
  const json::value* tv = field(root, top, top_snake);
  if (!tv) {
    out.error = "no " + std::string(top) + " array";
    return;
  }
  if (!tv->is_array()) {
    out.error = std::string(top) + " must be an array";
    return;
  }
  for (const auto& r : tv->get_array()) {
    try {
      if (!r.is_object()) throw BadField{std::string(top) + " entries must be objects"};
      const Resource res = resource_of(r.get_object(), l);
      const json::array* sl = array_field(r.get_object(), scopes, scopes_snake);
      if (!sl) continue;
      for (const auto& s : *sl) {
        try {
          if (!s.is_object()) throw BadField{std::string(scopes) + " entries must be objects"};
          const Scope sc = scope_of(s.get_object(), l);
          const json::array* recs = array_field(s.get_object(), records, records_snake);
          if (!recs) continue;
          for (const auto& rec : *recs) {
            if (n >= l.max_records) {
              ++out.dropped;
              note("more than " + std::to_string(l.max_records) + " records in one frame");
              continue;
            }
            try {
              if (!rec.is_object()) throw BadField{std::string(records) + " must be objects"};
              each(res, sc, rec.get_object());
              ++n;
            } catch (const BadField& e) {
              ++out.dropped;
              note(e.what);
            }
          }
        } catch (const BadField& e) {
          ++out.dropped;
          note(e.what);
        }
      }
    } catch (const BadField& e) {
      ++out.dropped;
      note(e.what);
    }
  }
}

int status_code(const json::value* v) {
  if (!v || v->is_null()) return 0;
  if (v->is_string()) {
    std::string_view s = v->get_string();
    if (s == "STATUS_CODE_OK" || s == "OK" || s == "1") return 1;
    if (s == "STATUS_CODE_ERROR" || s == "ERROR" || s == "2") return 2;
    return 0;
  }
  auto n = to_int(*v);
  return n && *n >= 0 && *n <= 2 ? static_cast<int>(*n) : 0;
}

void parse_traces(const json::object& root, IngestResult& out, const IngestLimits& l) {
  size_t n = 0;
  walk(root, "resourceSpans", "resource_spans", "scopeSpans", "scope_spans", "spans", "", out, l, n,
       [&](const Resource& res, const Scope& sc, const json::object& o) {
         StoredSpan s;
         s.trace_id = id_field(o, "traceId", "trace_id", 32);
         s.span_id = id_field(o, "spanId", "span_id", 16);
         s.parent_span_id = opt_id_field(o, "parentSpanId", "parent_span_id", 16);
         s.name = string_field(o, "name", l);
         int64_t kind = int_field(o, "kind", "", 0);
         if (res.python) ++kind;  // Python's INTERNAL=0, SERVER=1, CLIENT=2
         s.kind = kind >= 0 && kind <= 5 ? static_cast<int>(kind) : 0;
         s.start_time_unix_nano = time_field(o, "startTimeUnixNano", "start_time_unix_nano");
         s.end_time_unix_nano = time_field(o, "endTimeUnixNano", "end_time_unix_nano");
         if (s.end_time_unix_nano < s.start_time_unix_nano)
           s.end_time_unix_nano = s.start_time_unix_nano;
         if (const json::object* st = object_field(o, "status")) {
           const int code = status_code(st->if_contains("code"));
           s.status = code == 1   ? SpanStatus::kOk
                      : code == 2 ? SpanStatus::kError
                                  : SpanStatus::kUnset;
           std::string msg = string_field(*st, "message", l);
           if (!msg.empty()) s.status_description = std::move(msg);
         }
         for (auto& kv : attributes(o, l))
           s.attributes.emplace_back(std::string(kv.key()), as_text(kv.value()));
         if (const json::array* evs = array_field(o, "events", ""))
           for (const auto& e : *evs) {
             if (!e.is_object()) throw BadField{"events must be objects"};
             SpanEvent ev;
             ev.name = string_field(e.get_object(), "name", l);
             ev.timestamp_unix_nano = time_field(e.get_object(), "timeUnixNano", "time_unix_nano");
             ev.attributes = attributes(e.get_object(), l);
             s.events.push_back(std::move(ev));
           }
         if (const json::array* ls = array_field(o, "links", ""))
           for (const auto& e : *ls) {
             if (!e.is_object()) throw BadField{"links must be objects"};
             json::object link;
             link["trace_id"] = id_field(e.get_object(), "traceId", "trace_id", 32);
             link["span_id"] = id_field(e.get_object(), "spanId", "span_id", 16);
             link["attributes"] = attributes(e.get_object(), l);
             s.links.push_back(std::move(link));
           }
         if (const json::value* f = field(o, "flags", ""); f && !f->is_null()) {
           auto fl = to_int(*f);
           if (!fl || *fl < 0 || *fl > UINT32_MAX) throw BadField{"flags must be a uint32"};
           s.flags = static_cast<uint32_t>(*fl);
         }
         s.service_name = res.service_name;
         s.resource = res.attrs;
         s.scope_name = sc.name;
         s.scope_version = sc.version;
         out.spans.push_back(std::move(s));
       });
}

void parse_logs(const json::object& root, IngestResult& out, const IngestLimits& l) {
  size_t n = 0;
  const int64_t now = now_unix_nano();
  walk(root, "resourceLogs", "resource_logs", "scopeLogs", "scope_logs", "logRecords",
       "log_records", out, l, n, [&](const Resource& res, const Scope& sc, const json::object& o) {
         StoredLog g;
         g.timestamp_unix_nano = time_field(o, "timeUnixNano", "time_unix_nano");
         g.observed_timestamp_unix_nano =
             time_field(o, "observedTimeUnixNano", "observed_time_unix_nano");
         if (!g.observed_timestamp_unix_nano) g.observed_timestamp_unix_nano = now;
         if (!g.timestamp_unix_nano) g.timestamp_unix_nano = g.observed_timestamp_unix_nano;
         const int64_t sev = int_field(o, "severityNumber", "severity_number", 0);
         g.severity_number = sev >= 0 && sev <= 24 ? static_cast<int>(sev) : 0;
         g.severity_text = string_field(o, "severityText", l, "severity_text");
         if (g.severity_text.empty()) g.severity_text = severity_text_of(g.severity_number);
         if (const json::value* b = field(o, "body", ""); b && !b->is_null())
           g.body = cut(as_text(any_value(*b, l)), l);
         g.attributes = attributes(o, l);
         g.trace_id = opt_id_field(o, "traceId", "trace_id", 32);
         g.span_id = opt_id_field(o, "spanId", "span_id", 16);
         // The Node SDK's Logger also puts the ids in attributes.
         if (!g.trace_id)
           if (auto* t = g.attributes.if_contains("trace_id");
               t && t->is_string() && valid_hex_id(t->get_string(), 32))
             g.trace_id = lower_hex(t->get_string());
         if (!g.span_id)
           if (auto* t = g.attributes.if_contains("span_id");
               t && t->is_string() && valid_hex_id(t->get_string(), 16))
             g.span_id = lower_hex(t->get_string());
         g.resource = res.attrs;
         g.service_name = res.service_name;
         g.scope_name = sc.name;
         g.scope_version = sc.version;
         out.logs.push_back(std::move(g));
       });
}

MetricPoint number_point(const json::object& p, const IngestLimits& l) {
  MetricPoint mp;
  mp.timestamp_unix_nano = time_field(p, "timeUnixNano", "time_unix_nano");
  mp.start_time_unix_nano = time_field(p, "startTimeUnixNano", "start_time_unix_nano");
  mp.attributes = attributes(p, l);
  if (const json::value* d = field(p, "asDouble", "as_double")) {
    auto x = to_double(*d);
    if (!x) throw BadField{"asDouble must be a number"};
    mp.value = *x;
  } else if (const json::value* i = field(p, "asInt", "as_int")) {
    auto x = to_int(*i);
    if (!x) throw BadField{"asInt must be an integer"};
    mp.value = static_cast<double>(*x);
  }
  return mp;
}

MetricPoint histogram_point(const json::object& p, const IngestLimits& l) {
  MetricPoint mp;
  mp.timestamp_unix_nano = time_field(p, "timeUnixNano", "time_unix_nano");
  mp.start_time_unix_nano = time_field(p, "startTimeUnixNano", "start_time_unix_nano");
  mp.attributes = attributes(p, l);
  const int64_t count = int_field(p, "count", "", 0);
  if (count < 0) throw BadField{"count must not be negative"};
  mp.count = static_cast<uint64_t>(count);
  auto dbl = [&](std::string_view k) -> std::optional<double> {
    const json::value* v = field(p, k, "");
    if (!v || v->is_null()) return std::nullopt;
    auto x = to_double(*v);
    if (!x) throw BadField{std::string(k) + " must be a number"};
    return x;
  };
  mp.sum = dbl("sum").value_or(0);
  mp.min = dbl("min");
  mp.max = dbl("max");
  if (const json::array* b = array_field(p, "bucketCounts", "bucket_counts"))
    for (const auto& c : *b) {
      auto x = to_int(c);
      if (!x || *x < 0) throw BadField{"bucketCounts must be integers"};
      mp.bucket_counts.push_back(static_cast<uint64_t>(*x));
    }
  if (const json::array* b = array_field(p, "explicitBounds", "explicit_bounds"))
    for (const auto& c : *b) {
      auto x = to_double(c);
      if (!x) throw BadField{"explicitBounds must be numbers"};
      mp.explicit_bounds.push_back(*x);
    }
  return mp;
}

void parse_metrics(const json::object& root, IngestResult& out, const IngestLimits& l) {
  size_t n = 0;
  walk(root, "resourceMetrics", "resource_metrics", "scopeMetrics", "scope_metrics", "metrics", "",
       out, l, n, [&](const Resource& res, const Scope& sc, const json::object& o) {
         StoredMetric m;
         m.name = string_field(o, "name", l);
         if (m.name.empty()) throw BadField{"a metric has no name"};
         m.description = string_field(o, "description", l);
         m.unit = string_field(o, "unit", l);
         const json::object* data = nullptr;
         bool histogram = false;
         if ((data = object_field(o, "gauge"))) {
           m.type = MetricType::kGauge;
         } else if ((data = object_field(o, "sum"))) {
           m.type = MetricType::kSum;
           if (auto* mono = field(*data, "isMonotonic", "is_monotonic"); mono && mono->is_bool())
             m.is_monotonic = mono->get_bool();
         } else if ((data = object_field(o, "histogram"))) {
           m.type = MetricType::kHistogram;
           histogram = true;
         } else if ((data = object_field(o, "exponentialHistogram", "exponential_histogram"))) {
           m.type = MetricType::kExponentialHistogram;
           histogram = true;
         } else if ((data = object_field(o, "summary"))) {
           m.type = MetricType::kSummary;
           histogram = true;
         } else {
           throw BadField{"metric " + m.name + " has no gauge, sum or histogram"};
         }
         const int64_t t = int_field(*data, "aggregationTemporality", "aggregation_temporality", 0);
         m.temporality = t >= 0 && t <= 2 ? static_cast<int>(t) : 0;
         if (const json::array* pts = array_field(*data, "dataPoints", "data_points"))
           for (const auto& p : *pts) {
             if (!p.is_object()) throw BadField{"dataPoints must be objects"};
             m.points.push_back(histogram ? histogram_point(p.get_object(), l)
                                          : number_point(p.get_object(), l));
             m.timestamp_unix_nano =
                 std::max(m.timestamp_unix_nano, m.points.back().timestamp_unix_nano);
           }
         if (!m.timestamp_unix_nano) m.timestamp_unix_nano = now_unix_nano();
         m.service_name = res.service_name;
         m.resource = res.attrs;
         m.scope_name = sc.name;
         out.metrics.push_back(std::move(m));
       });
}

}  // namespace

const char* to_string(FrameKind k) {
  switch (k) {
    case FrameKind::kTraces:
      return "OTLP";
    case FrameKind::kMetrics:
      return "MTRC";
    default:
      return "LOGS";
  }
}

std::optional<FrameKind> frame_kind(std::string_view f) {
  if (f.size() < 4) return std::nullopt;
  const std::string_view p = f.substr(0, 4);
  if (p == "OTLP") return FrameKind::kTraces;
  if (p == "MTRC") return FrameKind::kMetrics;
  if (p == "LOGS") return FrameKind::kLogs;
  return std::nullopt;
}

bool valid_hex_id(std::string_view s, size_t n) {
  if (s.size() != n) return false;
  bool nonzero = false;
  for (char c : s) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) return false;
    if (c != '0') nonzero = true;
  }
  return nonzero;
}

std::optional<TraceParent> parse_traceparent(std::string_view s) {
  // version "-" trace-id "-" parent-id "-" flags; future versions may append fields.
  if (s.size() < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-') return std::nullopt;
  if (s.substr(0, 2) == "ff" || (s.size() > 55 && s[55] != '-')) return std::nullopt;
  const std::string_view t = s.substr(3, 32), p = s.substr(36, 16), f = s.substr(53, 2);
  if (!valid_hex_id(t, 32) || !valid_hex_id(p, 16)) return std::nullopt;
  unsigned flags = 0;
  auto [ptr, ec] = std::from_chars(f.data(), f.data() + 2, flags, 16);
  if (ec != std::errc() || ptr != f.data() + 2) return std::nullopt;
  return TraceParent{lower_hex(t), lower_hex(p), static_cast<uint8_t>(flags)};
}

IngestResult parse_frame(std::string_view frame, const IngestLimits& limits) {
  IngestResult out;
  auto kind = frame_kind(frame);
  if (!kind) {
    out.error = "no OTLP/MTRC/LOGS prefix";
    return out;
  }
  out.kind = *kind;
  boost::system::error_code ec;
  json::value v = json::parse(frame.substr(4), ec, {}, protocol::json_parse_options());
  if (ec) {
    out.error = "invalid JSON: " + ec.message();
    return out;
  }
  if (!v.is_object()) {
    out.error = "the payload is not a JSON object";
    return out;
  }
  switch (*kind) {
    case FrameKind::kTraces:
      parse_traces(v.get_object(), out, limits);
      break;
    case FrameKind::kLogs:
      parse_logs(v.get_object(), out, limits);
      break;
    case FrameKind::kMetrics:
      parse_metrics(v.get_object(), out, limits);
      break;
  }
  return out;
}

}  // namespace iii::observability
