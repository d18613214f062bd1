#include "workers/observability/obs_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <cstdlib>
#include <stdexcept>

#include "common/logging.h"
#include "config/config.h"

namespace iii::observability {

namespace json = boost::json;

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// YAML → JSON for the blocks read later by sampling and alerts (scalars: bool, int, double,
// else string).
json::value to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& e : n) a.push_back(to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : n) o[kv.first.as<std::string>()] = to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Scalar: {
      if (n.Tag() == "!") return json::value(n.Scalar());  // quoted
      bool b;
      if (YAML::convert<bool>::decode(n, b)) return b;
      int64_t i;
      if (YAML::convert<int64_t>::decode(n, i)) return i;
      double d;
      if (YAML::convert<double>::decode(n, d)) return d;
      return json::value(n.Scalar());
    }
    default:
      return nullptr;
  }
}

double ratio(config::WorkerConfigReader& r, const std::string& key, double def) {
  YAML::Node n = r.get_node(key);
  if (!n || n.IsNull()) return def;
  double d = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, d) || !(d >= 0.0 && d <= 1.0))
    r.fail(key, "key '" + key + "': expected a number between 0 and 1");
  return d;
}

std::string one_of(config::WorkerConfigReader& r, const std::string& key, std::string value,
                   std::initializer_list<const char*> allowed) {
  value = lower(value);
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return value;
    list += list.empty() ? a : std::string(", ") + a;
  }
  r.fail(key, "key '" + key + "': '" + value + "' is not one of " + list);
}

bool env_bool(const std::string& v) {
  const std::string s = lower(v);
  return !(s == "false" || s == "0" || s == "no" || s == "off");
}

std::optional<int64_t> opt_int(config::WorkerConfigReader& r, const std::string& key) {
  YAML::Node n = r.get_node(key);
  if (!n || n.IsNull()) return std::nullopt;
  int64_t v = 0;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < 0)
    r.fail(key, "key '" + key + "': expected a non-negative integer");
  return v;
}

}  // namespace

ObsConfig read_obs_config(const config::WorkerEntry& entry) {
  config::WorkerConfigReader r(entry);
  ObsConfig c;
  c.enabled = r.get_bool("enabled", env("OTEL_ENABLED") ? env_bool(*env("OTEL_ENABLED")) : true);
  c.service_name = r.get_string("service_name", env("OTEL_SERVICE_NAME").value_or("iii"));
  c.service_version = r.get_string("service_version", env("SERVICE_VERSION").value_or(III_VERSION));
  c.service_namespace = r.get_optional_string("service_namespace");
  if (!c.service_namespace) c.service_namespace = env("SERVICE_NAMESPACE");
  c.exporter =
      one_of(r, "exporter", r.get_string("exporter", env("OTEL_EXPORTER_TYPE").value_or("otlp")),
             {"memory", "otlp", "both"});
  c.endpoint = r.get_string("endpoint",
                            env("OTEL_EXPORTER_OTLP_ENDPOINT").value_or("http://localhost:4317"));
  c.sampling_ratio = ratio(r, "sampling_ratio", 1.0);
  if (YAML::Node s = r.get_node("sampling"); s && !s.IsNull()) {
    if (!s.IsMap()) r.fail("sampling", "key 'sampling': expected a mapping");
    c.sampling = to_json(s);
  }
  c.memory_max_spans = r.get_int("memory_max_spans", 1000, 0, 100000000);
  c.metrics_enabled = r.get_bool("metrics_enabled", true);
  c.metrics_exporter = one_of(r, "metrics_exporter", r.get_string("metrics_exporter", "memory"),
                              {"memory", "otlp", "both"});
  c.metrics_retention_seconds =
      r.get_int("metrics_retention_seconds", 3600, 0, 100LL * 365 * 86400);
  c.metrics_max_count = r.get_int("metrics_max_count", 10000, 0, 100000000);
  c.logs_enabled = r.get_bool("logs_enabled", true);
  c.logs_exporter = one_of(r, "logs_exporter", r.get_string("logs_exporter", "memory"),
                           {"memory", "otlp", "both"});
  c.logs_max_count = r.get_int("logs_max_count", 1000, 0, 100000000);
  c.logs_retention_seconds = r.get_int("logs_retention_seconds", 3600, 0, 100LL * 365 * 86400);
  c.logs_sampling_ratio = ratio(r, "logs_sampling_ratio", 1.0);
  c.logs_console_output = r.get_bool("logs_console_output", true);
  c.logs_batch_size = opt_int(r, "logs_batch_size");
  c.logs_flush_interval_ms = opt_int(r, "logs_flush_interval_ms");
  if (YAML::Node a = r.get_node("alerts"); a && !a.IsNull()) {
    if (!a.IsSequence()) r.fail("alerts", "key 'alerts': expected a list");
    c.alerts = to_json(a);
  }
  // h-obsx: export-side keys beyond the original (the Prometheus endpoint, byte bounds).
  if (YAML::Node p = r.get_node("metrics_port"); p && !p.IsNull())
    c.metrics_port = r.get_int("metrics_port", 0, 0, 65535);
  c.metrics_host = r.get_string("metrics_host", c.metrics_host);
  c.logs_max_bytes = static_cast<size_t>(
      r.get_int("logs_max_bytes", static_cast<int64_t>(c.logs_max_bytes), 0, INT64_MAX));
  c.spans_max_bytes = static_cast<size_t>(
      r.get_int("spans_max_bytes", static_cast<int64_t>(c.spans_max_bytes), 0, INT64_MAX));
  c.metrics_max_bytes = static_cast<size_t>(
      r.get_int("metrics_max_bytes", static_cast<int64_t>(c.metrics_max_bytes), 0, INT64_MAX));
  // `level` wins over the original's older spelling `log_level`.
  const std::string level = r.get_string("level", "");
  const std::string log_level = r.get_string("log_level", "");
  const std::string level_key = level.empty() && !log_level.empty() ? "log_level" : "level";
  c.level = !level.empty() ? level : !log_level.empty() ? log_level : "info";
  c.format = r.get_string("format", "text");
  r.finish();
  try {
    logging::parse_level(c.level);
  } catch (const std::invalid_argument& e) {
    r.fail(level_key, "key '" + level_key + "': " + e.what());
  }
  try {
    logging::parse_format(c.format);
  } catch (const std::invalid_argument& e) {
    r.fail("format", std::string("key 'format': ") + e.what());
  }
  return c;
}

}  // namespace iii::observability
