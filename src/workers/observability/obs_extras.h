// The export side of iii-observability, hooked onto the core's Telemetry pipeline
// (docs/observability-seam.md): trace sampling (the span filter), OTLP/HTTP export (the
// observers feed OtlpExporter), alerts (sampled once a second; engine::alerts::list|evaluate),
// the Prometheus endpoint (`metrics_port`), and the byte bounds of the telemetry store.
// Created with the worker (so its config errors are reported before anything starts), started
// with it. Engine thread only, except the exporter's own thread.
#pragma once

#include <boost/json/object.hpp>
#include <functional>
#include <memory>
#include <string>

namespace iii::config {
struct WorkerEntry;
}
namespace iii::engine {
struct Runtime;
}

namespace iii::observability {

struct ObsConfig;
class Telemetry;
class EngineMetrics;
class TraceSampler;

class ObsExtras {
 public:
  // Reads the export, sampling, alert and endpoint settings of `cfg`; throws
  // config::ConfigError naming the entry's file, line and key when one is wrong.
  ObsExtras(const config::WorkerEntry& entry, const ObsConfig& cfg, engine::Runtime& rt,
            Telemetry& telemetry, EngineMetrics& metrics);
  ~ObsExtras();

  // Installs the span filter and the observers, starts the exporter's thread, binds the
  // metrics port, arms the alert timer, registers engine::alerts::list|evaluate.
  void start();
  // /readyz answers 503 from now on.
  void drain();
  // Stops the timer and the endpoint; sends what the exporter holds for at most 1 s.
  void stop();

  // engine::sampling::rules.
  boost::json::object sampling_rules() const;
  // For engine::health::check: {"export": {...}, "memory": {...}} details.
  boost::json::object health_details() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iii::observability
