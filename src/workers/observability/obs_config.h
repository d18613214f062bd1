// The `iii-observability` config block (modules.md §8.2): every key of the original, with its
// environment fallbacks, checked like every worker's (unknown keys refused with file:line).
#pragma once

#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace iii::config {
struct WorkerEntry;
}

namespace iii::observability {

struct ObsConfig {
  bool enabled = true;                           // OTEL_ENABLED
  std::string service_name = "iii";              // OTEL_SERVICE_NAME
  std::string service_version;                   // SERVICE_VERSION (default: the engine's version)
  std::optional<std::string> service_namespace;  // SERVICE_NAMESPACE
  std::string exporter = "otlp";                 // memory | otlp | both (OTEL_EXPORTER_TYPE)
  std::string endpoint = "http://localhost:4317";  // OTEL_EXPORTER_OTLP_ENDPOINT
  double sampling_ratio = 1.0;
  boost::json::value sampling;  // raw {default, rules, parent_based, rate_limit}; null if absent
  int64_t memory_max_spans = 1000;
  bool metrics_enabled = true;
  std::string metrics_exporter = "memory";  // memory | otlp
  int64_t metrics_retention_seconds = 3600;
  int64_t metrics_max_count = 10000;
  bool logs_enabled = true;
  std::string logs_exporter = "memory";  // memory | otlp | both
  int64_t logs_max_count = 1000;
  int64_t logs_retention_seconds = 3600;
  double logs_sampling_ratio = 1.0;
  bool logs_console_output = true;
  std::optional<int64_t> logs_batch_size;         // accepted (SDK-side setting in the wild)
  std::optional<int64_t> logs_flush_interval_ms;  // accepted (idem)
  std::string level = "info";
  std::string format = "text";
  boost::json::value alerts;  // raw list; null if absent
  // h-obsx (beyond the original): the Prometheus endpoint (absent = off; 0 picks a port) and
  // the byte bounds of the stores (0 = none).
  std::optional<int64_t> metrics_port;
  std::string metrics_host = "0.0.0.0";
  size_t logs_max_bytes = 32u << 20;
  size_t spans_max_bytes = 64u << 20;
  size_t metrics_max_bytes = 32u << 20;

  bool spans_in_memory() const { return exporter == "memory" || exporter == "both"; }
  bool spans_exported() const { return exporter == "otlp" || exporter == "both"; }
};

// Reads and validates the entry's config; throws config::ConfigError.
ObsConfig read_obs_config(const config::WorkerEntry& entry);

}  // namespace iii::observability
