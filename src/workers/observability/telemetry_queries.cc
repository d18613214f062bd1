#include "workers/observability/telemetry_queries.h"

#include <algorithm>
#include <boost/json/array.hpp>
#include <cctype>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace iii::observability {

namespace json = boost::json;

namespace {

// Typed reads of optional input fields; null counts as absent.
const json::value* get(const json::object& in, std::string_view k) {
  const json::value* v = in.if_contains(k);
  return v && !v->is_null() ? v : nullptr;
}

std::optional<int64_t> opt_int(const json::object& in, std::string_view k) {
  const json::value* v = get(in, k);
  if (!v) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(std::min<uint64_t>(v->get_uint64(), INT64_MAX));
  if (v->is_double() && std::isfinite(v->get_double()) &&
      v->get_double() == std::floor(v->get_double()) && std::fabs(v->get_double()) < 9e18)
    return static_cast<int64_t>(v->get_double());
  throw InputError("field '" + std::string(k) + "' must be an integer");
}

std::optional<uint64_t> opt_count(const json::object& in, std::string_view k) {
  auto v = opt_int(in, k);
  if (v && *v < 0) throw InputError("field '" + std::string(k) + "' must not be negative");
  return v ? std::optional<uint64_t>(static_cast<uint64_t>(*v)) : std::nullopt;
}

std::optional<double> opt_num(const json::object& in, std::string_view k) {
  const json::value* v = get(in, k);
  if (!v) return std::nullopt;
  if (v->is_number()) return v->to_number<double>();
  throw InputError("field '" + std::string(k) + "' must be a number");
}

std::optional<std::string> opt_str(const json::object& in, std::string_view k) {
  const json::value* v = get(in, k);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw InputError("field '" + std::string(k) + "' must be a string");
  return std::string(v->get_string());
}

bool opt_bool(const json::object& in, std::string_view k, bool def) {
  const json::value* v = get(in, k);
  if (!v) return def;
  if (!v->is_bool()) throw InputError("field '" + std::string(k) + "' must be a boolean");
  return v->get_bool();
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool contains_ci(std::string_view hay, const std::string& needle_lower) {
  return lower(hay).find(needle_lower) != std::string::npos;
}

// Echo of the query fields that were given.
json::object echo(const json::object& in, std::initializer_list<std::string_view> keys) {
  json::object q;
  for (auto k : keys)
    if (auto* v = get(in, k)) q[k] = *v;
  return q;
}

}  // namespace

bool is_internal(const StoredSpan& s) {
  const std::string* v = s.attribute("iii.internal");
  return v && *v == "true";
}

json::object list_logs(const Telemetry& t, const json::object& in, int64_t now_ms) {
  const auto start = opt_int(in, "start_time"), end = opt_int(in, "end_time");
  const auto trace_id = opt_str(in, "trace_id"), span_id = opt_str(in, "span_id");
  const auto sev_min = opt_int(in, "severity_min");
  const auto sev_text = opt_str(in, "severity_text");
  const uint64_t offset = opt_count(in, "offset").value_or(0);
  const auto limit = opt_count(in, "limit");
  const std::string sev_lower = sev_text ? lower(*sev_text) : "";
  std::vector<const StoredLog*> rows;
  for (const auto& e : t.logs().entries()) {
    const StoredLog& l = e.rec;
    const int64_t ms = l.timestamp_unix_nano / 1000000;
    if (start && ms < *start) continue;
    if (end && ms > *end) continue;
    if (trace_id && (!l.trace_id || *l.trace_id != lower(*trace_id))) continue;
    if (span_id && (!l.span_id || *l.span_id != lower(*span_id))) continue;
    if (sev_min && l.severity_number < *sev_min) continue;
    if (sev_text && lower(l.severity_text) != sev_lower) continue;
    rows.push_back(&l);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const StoredLog* a, const StoredLog* b) {
    return a->timestamp_unix_nano < b->timestamp_unix_nano;
  });
  json::array logs;
  if (offset < rows.size()) {
    const size_t stop = limit ? std::min<uint64_t>(rows.size(), offset + *limit) : rows.size();
    for (size_t i = offset; i < stop; ++i) logs.push_back(rows[i]->to_json());
  }
  json::object out;
  out["logs"] = std::move(logs);
  out["total"] = rows.size();
  out["query"] = echo(in, {"start_time", "end_time", "trace_id", "span_id", "severity_min",
                           "severity_text", "offset", "limit"});
  out["timestamp"] = now_ms;
  return out;
}

json::object list_traces(const Telemetry& t, const json::object& in) {
  const auto trace_id = opt_str(in, "trace_id");
  const auto service = opt_str(in, "service_name");
  const auto name = opt_str(in, "name");
  const auto status = opt_str(in, "status");
  const auto min_ms = opt_num(in, "min_duration_ms"), max_ms = opt_num(in, "max_duration_ms");
  const auto start = opt_int(in, "start_time"), end = opt_int(in, "end_time");
  const bool include_internal = opt_bool(in, "include_internal", false);
  const bool search_all = opt_bool(in, "search_all_spans", false);
  const std::string sort_by = opt_str(in, "sort_by").value_or("start_time");
  const std::string sort_order = opt_str(in, "sort_order").value_or("desc");
  const uint64_t offset = opt_count(in, "offset").value_or(0);
  const uint64_t limit = opt_count(in, "limit").value_or(100);
  if (sort_by != "start_time" && sort_by != "duration" && sort_by != "name")
    throw InputError("field 'sort_by' must be start_time, duration or name");
  if (sort_order != "asc" && sort_order != "desc")
    throw InputError("field 'sort_order' must be asc or desc");
  std::vector<std::pair<std::string, std::string>> attrs;
  if (const json::value* a = get(in, "attributes")) {
    if (!a->is_array()) throw InputError("field 'attributes' must be an array of [key, value]");
    for (const auto& p : a->get_array()) {
      if (!p.is_array() || p.get_array().size() != 2 || !p.get_array()[0].is_string() ||
          !p.get_array()[1].is_string())
        throw InputError("field 'attributes' must be an array of [key, value] strings");
      attrs.emplace_back(std::string(p.get_array()[0].get_string()),
                         std::string(p.get_array()[1].get_string()));
    }
  }
  const std::string service_l = service ? lower(*service) : "";
  const std::string name_l = name ? lower(*name) : "";
  const std::string status_l = status ? lower(*status) : "";
  const std::string trace_l = trace_id ? lower(*trace_id) : "";
  auto matches = [&](const StoredSpan& s) {
    if (trace_id && s.trace_id != trace_l) return false;
    if (service && !contains_ci(s.service_name, service_l)) return false;
    if (name && !contains_ci(s.name, name_l)) return false;
    if (status && !contains_ci(to_string(s.status), status_l)) return false;
    const double ms = static_cast<double>(s.duration_ns()) / 1e6;
    if (min_ms && ms < *min_ms) return false;
    if (max_ms && ms > *max_ms) return false;
    const int64_t start_ms = s.start_time_unix_nano / 1000000;
    if (start && start_ms < *start) return false;
    if (end && start_ms > *end) return false;
    for (const auto& [k, v] : attrs) {
      const std::string* have = s.attribute(k);
      if (!have || *have != v) return false;
    }
    return true;
  };
  // Without search_all_spans only roots can be listed: the others are not even built.
  const std::vector<StoredSpan> engine =
      t.engine_spans(search_all ? std::function<bool(const EngineSpanRec&)>{}
                                : [](const EngineSpanRec& r) { return r.parent_span_id == 0; });
  std::vector<const StoredSpan*> all;
  all.reserve(t.spans().size() + engine.size());
  for (const auto& e : t.spans().entries()) all.push_back(&e.rec);
  for (const auto& s : engine) all.push_back(&s);
  std::unordered_set<std::string> matching_traces;
  if (search_all)
    for (const StoredSpan* s : all)
      if (matches(*s)) matching_traces.insert(s->trace_id);
  std::vector<const StoredSpan*> rows;
  for (const StoredSpan* sp : all) {
    const StoredSpan& s = *sp;
    if (!s.is_root()) continue;
    if (!include_internal && is_internal(s)) continue;
    if (search_all ? !matching_traces.count(s.trace_id) : !matches(s)) continue;
    rows.push_back(&s);
  }
  const bool desc = sort_order == "desc";
  std::stable_sort(rows.begin(), rows.end(), [&](const StoredSpan* a, const StoredSpan* b) {
    if (desc) std::swap(a, b);
    if (sort_by == "duration") return a->duration_ns() < b->duration_ns();
    if (sort_by == "name") return a->name < b->name;
    return a->start_time_unix_nano < b->start_time_unix_nano;
  });
  json::array spans;
  for (size_t i = offset; i < rows.size() && i < offset + limit; ++i)
    spans.push_back(rows[i]->to_json());
  json::object out;
  out["spans"] = std::move(spans);
  out["total"] = rows.size();
  out["offset"] = offset;
  out["limit"] = limit;
  return out;
}

json::object trace_tree(const Telemetry& t, const json::object& in) {
  const auto trace_id = opt_str(in, "trace_id");
  if (!trace_id) throw InputError("missing field `trace_id`");
  const std::string id = lower(*trace_id);
  std::vector<const StoredSpan*> spans;
  std::unordered_map<std::string, size_t> by_id;
  uint64_t hi = 0, lo = 0;
  const bool hex_ok =
      id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (hex_ok) {
    hi = std::stoull(id.substr(0, 16), nullptr, 16);
    lo = std::stoull(id.substr(16), nullptr, 16);
  }
  const std::vector<StoredSpan> engine = t.engine_spans(
      [&](const EngineSpanRec& r) { return hex_ok && r.trace_hi == hi && r.trace_lo == lo; });
  auto take = [&](const StoredSpan& s) {
    if (s.trace_id != id) return;
    by_id.emplace(s.span_id, spans.size());
    spans.push_back(&s);
  };
  for (const auto& e : t.spans().entries()) take(e.rec);
  for (const auto& s : engine) take(s);
  std::vector<std::vector<size_t>> children(spans.size());
  std::vector<size_t> roots;
  for (size_t i = 0; i < spans.size(); ++i) {
    const auto& p = spans[i]->parent_span_id;
    auto it = p ? by_id.find(*p) : by_id.end();
    if (it == by_id.end() || it->second == i)
      roots.push_back(i);  // a root, or a span whose parent is not stored
    else
      children[it->second].push_back(i);
  }
  auto by_start = [&](size_t a, size_t b) {
    return spans[a]->start_time_unix_nano < spans[b]->start_time_unix_nano;
  };
  // Iterative build (no recursion on untrusted depth): children before parents.
  std::vector<json::object> built(spans.size());
  std::vector<bool> done(spans.size(), false);
  std::vector<std::pair<size_t, bool>> stack;
  for (size_t r : roots) stack.emplace_back(r, false);
  while (!stack.empty()) {
    auto [i, expanded] = stack.back();
    stack.pop_back();
    if (done[i]) continue;
    if (!expanded) {
      stack.emplace_back(i, true);
      for (size_t c : children[i])
        if (!done[c]) stack.emplace_back(c, false);
      continue;
    }
    json::object o = spans[i]->to_json();
    std::sort(children[i].begin(), children[i].end(), by_start);
    json::array kids;
    for (size_t c : children[i])
      if (done[c]) kids.push_back(std::move(built[c]));
    o["children"] = std::move(kids);
    built[i] = std::move(o);
    done[i] = true;
  }
  std::sort(roots.begin(), roots.end(), by_start);
  json::array out_roots;
  for (size_t r : roots) out_roots.push_back(std::move(built[r]));
  return json::object{{"roots", std::move(out_roots)}};
}

namespace {
struct Agg {
  uint64_t count = 0;
  double sum = 0, min = 0, max = 0;
  void add(double v) {
    if (count == 0 || v < min) min = v;
    if (count == 0 || v > max) max = v;
    sum += v;
    ++count;
  }
  json::object to_json() const {
    return json::object{{"count", count},
                        {"sum", sum},
                        {"min", min},
                        {"max", max},
                        {"avg", count ? sum / static_cast<double>(count) : 0.0}};
  }
};

// Every numeric point (value, or a histogram's sum/count mean) of the stored metrics that pass.
// An optional bound as a plain value (explicit branch: valgrind flags GCC's branch-free
// reads of an empty optional's payload).
int64_t bound(const std::optional<int64_t>& v, int64_t none) {
  if (!v.has_value()) return none;
  return *v;
}

template <typename Fn>
void for_each_point(const Telemetry& t, const std::optional<std::string>& name, int64_t lo,
                    int64_t hi, Fn fn) {
  for (const auto& e : t.metrics().entries()) {
    const StoredMetric& m = e.rec;
    if (name && m.name != *name) continue;
    for (const auto& p : m.points) {
      const int64_t ms =
          (p.timestamp_unix_nano ? p.timestamp_unix_nano : m.timestamp_unix_nano) / 1000000;
      if (ms < lo || ms > hi) continue;
      const bool number = m.type == MetricType::kGauge || m.type == MetricType::kSum;
      fn(m, ms, number ? p.value : (p.count ? p.sum / static_cast<double>(p.count) : 0.0));
    }
  }
}
}  // namespace

json::object list_metrics(const Telemetry& t, const EngineMetrics& em, size_t active_workers,
                          const json::object& in, int64_t now_ms) {
  const auto start = opt_int(in, "start_time"), end = opt_int(in, "end_time");
  const auto name = opt_str(in, "metric_name");
  const auto interval = opt_int(in, "aggregate_interval");
  if (interval && *interval <= 0) throw InputError("field 'aggregate_interval' must be positive");
  json::array sdk;
  for (const auto& e : t.metrics().entries()) {
    const StoredMetric& m = e.rec;
    if (name && m.name != *name) continue;
    const int64_t ms = m.timestamp_unix_nano / 1000000;
    if (start && ms < *start) continue;
    if (end && ms > *end) continue;
    sdk.push_back(m.to_json());
  }
  json::object out;
  out["engine_metrics"] = em.to_json(active_workers);
  out["sdk_metrics"] = std::move(sdk);
  out["timestamp"] = now_ms;
  if (interval) {
    const int64_t step = *interval * 1000;
    std::map<std::pair<std::string, int64_t>, Agg> buckets;
    for_each_point(t, name, bound(start, INT64_MIN), bound(end, INT64_MAX),
                   [&](const StoredMetric& m, int64_t ms, double v) {
                     buckets[{m.name, ms - (ms % step + step) % step}].add(v);
                   });
    json::array agg;
    for (const auto& [k, a] : buckets) {
      json::object o = a.to_json();
      o["metric_name"] = k.first;
      o["interval_start_ms"] = k.second;
      o["interval_seconds"] = *interval;
      agg.push_back(std::move(o));
    }
    out["aggregated_metrics"] = std::move(agg);
  }
  json::object q = echo(in, {"start_time", "end_time", "metric_name", "aggregate_interval"});
  if (!q.empty()) out["query"] = std::move(q);
  return out;
}

json::object list_rollups(const Telemetry& t, const json::object& in, int64_t now_ms) {
  const auto start = opt_int(in, "start_time"), end = opt_int(in, "end_time");
  const auto name = opt_str(in, "metric_name");
  const int64_t level = opt_int(in, "level").value_or(0);
  if (level < 0 || level > 2) throw InputError("field 'level' must be 0 (1m), 1 (5m) or 2 (1h)");
  static constexpr int64_t kSeconds[] = {60, 300, 3600};
  const int64_t step = kSeconds[level] * 1000;
  std::map<std::pair<std::string, int64_t>, Agg> buckets;
  for_each_point(t, name, bound(start, INT64_MIN), bound(end, INT64_MAX),
                 [&](const StoredMetric& m, int64_t ms, double v) {
                   buckets[{m.name, ms - (ms % step + step) % step}].add(v);
                 });
  json::array rollups;
  for (const auto& [k, a] : buckets) {
    json::object o = a.to_json();
    o["metric_name"] = k.first;
    o["window_start_ms"] = k.second;
    o["window_end_ms"] = k.second + step;
    o["level"] = level;
    o["interval_seconds"] = kSeconds[level];
    rollups.push_back(std::move(o));
  }
  json::object out;
  out["rollups"] = std::move(rollups);
  out["level"] = level;
  out["timestamp"] = now_ms;
  return out;
}

json::object parse_baggage(std::string_view h) {
  json::object out;
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  auto decode = [](std::string_view s) {
    std::string o;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        o.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
      } else {
        o.push_back(s[i]);
      }
    }
    return o;
  };
  size_t pos = 0;
  while (pos <= h.size()) {
    size_t comma = h.find(',', pos);
    std::string_view member = h.substr(pos, comma == std::string_view::npos ? h.npos : comma - pos);
    member = member.substr(0, member.find(';'));  // properties are dropped
    const size_t eq = member.find('=');
    if (eq != std::string_view::npos) {
      std::string_view k = trim(member.substr(0, eq)), v = trim(member.substr(eq + 1));
      if (!k.empty()) out[decode(k)] = decode(v);
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace iii::observability
