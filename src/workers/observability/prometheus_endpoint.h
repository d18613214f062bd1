// The Prometheus text endpoint of the observability worker (`metrics_port`, off by default):
// `GET /metrics` renders the engine's metrics in the Prometheus text exposition format 0.0.4
// (invocations by function and outcome, duration percentiles, workers, pending invocations,
// telemetry memory, OTLP export counters, resident memory); `GET /healthz` answers 200 while
// the process serves; `GET /readyz` answers 200 once the engine is started and 503 while it
// shuts down. Served by net::HttpServer on the engine thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}
namespace iii::net {
class HttpServer;
}

namespace iii::observability {

class EngineMetrics;
class Telemetry;
class OtlpExporter;

struct PrometheusSources {
  const EngineMetrics* metrics = nullptr;  // may be null
  const Telemetry* telemetry = nullptr;    // may be null
  const OtlpExporter* exporter = nullptr;  // may be null
  std::function<size_t()> active_workers;
  std::function<size_t()> pending_invocations;
  std::function<bool()> ready;  // for /readyz; unset = ready
};

// The text exposition of every source (one HELP and TYPE line per family).
std::string render_prometheus(const PrometheusSources& src);
// A label value with \, " and newline escaped as the format requires.
std::string prometheus_escape(std::string_view v);

class PrometheusEndpoint {
 public:
  // Binds host:port now (0 picks one). Throws std::system_error when it cannot.
  PrometheusEndpoint(boost::asio::io_context& io, const std::string& host, uint16_t port,
                     PrometheusSources src);
  ~PrometheusEndpoint();
  uint16_t port() const;
  void stop();

 private:
  PrometheusSources src_;
  std::unique_ptr<net::HttpServer> server_;
};

}  // namespace iii::observability
