#include "workers/observability/prometheus_endpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string_view>

#include "net/http_server.h"
#include "workers/observability/engine_metrics.h"
#include "workers/observability/otlp_exporter.h"
#include "workers/observability/telemetry_store.h"

namespace iii::observability {

namespace {

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  // `labels` already formatted: `a="x",b="y"` (escaped), or empty.
  void sample(std::string_view name, std::string_view labels, double value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    if (std::isnan(value))
      out_ += "NaN";
    else if (std::isinf(value))
      out_ += value > 0 ? "+Inf" : "-Inf";
    else if (value == std::floor(value) && std::fabs(value) < 1e15)
      fmt::format_to(std::back_inserter(out_), "{}", static_cast<int64_t>(value));
    else
      fmt::format_to(std::back_inserter(out_), "{}", value);
    out_ += '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string label(std::string_view k, std::string_view v) {
  return fmt::format("{}=\"{}\"", k, prometheus_escape(v));
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kLogs:
      return "logs";
    case Kind::kSpans:
      return "spans";
    case Kind::kMetrics:
      return "metrics";
  }
  return "?";
}

double resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

std::string prometheus_escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string render_prometheus(const PrometheusSources& src) {
  Writer w;
  if (src.metrics) {
    const EngineMetrics& m = *src.metrics;
    w.family("iii_invocations_total", "counter",
             "Invocations completed by the engine, by function and outcome.");
    m.for_each_function([&](const std::string& fn, uint64_t ok, uint64_t err, uint64_t deferred) {
      const std::string f = label("function", fn);
      w.sample("iii_invocations_total", f + "," + label("outcome", "success"),
               static_cast<double>(ok));
      w.sample("iii_invocations_total", f + "," + label("outcome", "error"),
               static_cast<double>(err));
      if (deferred)
        w.sample("iii_invocations_total", f + "," + label("outcome", "deferred"),
                 static_cast<double>(deferred));
    });
    w.family("iii_invocations_all_total", "counter",
             "Invocations completed by the engine, all functions, by outcome.");
    w.sample("iii_invocations_all_total", label("outcome", "success"),
             static_cast<double>(m.success()));
    w.sample("iii_invocations_all_total", label("outcome", "error"),
             static_cast<double>(m.error()));
    w.sample("iii_invocations_all_total", label("outcome", "deferred"),
             static_cast<double>(m.deferred_count()));
    const EngineMetrics::Performance p = m.performance();
    w.family("iii_invocation_duration_milliseconds", "gauge",
             "Invocation durations over the most recent invocations: quantiles, min, max, avg.");
    w.sample("iii_invocation_duration_milliseconds", label("quantile", "0.5"), p.p50_ms);
    w.sample("iii_invocation_duration_milliseconds", label("quantile", "0.95"), p.p95_ms);
    w.sample("iii_invocation_duration_milliseconds", label("quantile", "0.99"), p.p99_ms);
    w.sample("iii_invocation_duration_milliseconds", label("stat", "min"), p.min_ms);
    w.sample("iii_invocation_duration_milliseconds", label("stat", "max"), p.max_ms);
    w.sample("iii_invocation_duration_milliseconds", label("stat", "avg"), p.avg_ms);
    w.family("iii_worker_connections_total", "counter", "Workers that connected.");
    w.sample("iii_worker_connections_total", "", static_cast<double>(m.spawns()));
    w.family("iii_worker_disconnections_total", "counter", "Workers that disconnected.");
    w.sample("iii_worker_disconnections_total", "", static_cast<double>(m.deaths()));
  }
  if (src.active_workers) {
    w.family("iii_workers_active", "gauge", "Workers connected now.");
    w.sample("iii_workers_active", "", static_cast<double>(src.active_workers()));
  }
  if (src.pending_invocations) {
    w.family("iii_invocations_pending", "gauge", "Invocations waiting for their result.");
    w.sample("iii_invocations_pending", "", static_cast<double>(src.pending_invocations()));
  }
  if (src.telemetry) {
    const Telemetry& t = *src.telemetry;
    constexpr Kind kinds[] = {Kind::kLogs, Kind::kSpans, Kind::kMetrics};
    w.family("iii_telemetry_stored_records", "gauge", "Telemetry records held in memory, by kind.");
    for (Kind k : kinds)
      w.sample("iii_telemetry_stored_records", label("kind", kind_name(k)),
               static_cast<double>(t.count(k)));
    w.family("iii_telemetry_stored_bytes", "gauge",
             "Approximate memory held by stored telemetry records, by kind.");
    for (Kind k : kinds)
      w.sample("iii_telemetry_stored_bytes", label("kind", kind_name(k)),
               static_cast<double>(t.bytes(k)));
    w.family("iii_telemetry_received_total", "counter", "Telemetry records received, by kind.");
    for (Kind k : kinds)
      w.sample("iii_telemetry_received_total", label("kind", kind_name(k)),
               static_cast<double>(t.received(k)));
    w.family("iii_telemetry_sampled_out_total", "counter",
             "Telemetry records dropped by sampling, by kind.");
    for (Kind k : kinds)
      w.sample("iii_telemetry_sampled_out_total", label("kind", kind_name(k)),
               static_cast<double>(t.filtered(k)));
    w.family("iii_telemetry_evicted_total", "counter",
             "Stored telemetry records evicted by the count, age or byte bounds, by kind.");
    for (Kind k : kinds)
      w.sample("iii_telemetry_evicted_total", label("kind", kind_name(k)),
               static_cast<double>(t.evicted(k)));
  }
  if (src.exporter) {
    constexpr Signal signals[] = {Signal::kTraces, Signal::kMetrics, Signal::kLogs};
    w.family("iii_otlp_export_records_total", "counter",
             "Records handed to the OTLP exporter, by signal and result.");
    for (Signal s : signals) {
      if (!src.exporter->exports(s)) continue;
      const OtlpSignalStats st = src.exporter->stats(s);
      const std::string sig = label("signal", signal_name(s));
      w.sample("iii_otlp_export_records_total", sig + "," + label("result", "exported"),
               static_cast<double>(st.exported));
      w.sample("iii_otlp_export_records_total", sig + "," + label("result", "dropped_queue_full"),
               static_cast<double>(st.dropped_queue_full));
      w.sample("iii_otlp_export_records_total", sig + "," + label("result", "dropped_rejected"),
               static_cast<double>(st.dropped_rejected));
      w.sample("iii_otlp_export_records_total", sig + "," + label("result", "dropped_failed"),
               static_cast<double>(st.dropped_failed));
    }
    w.family("iii_otlp_export_queued_records", "gauge", "Records waiting in the OTLP queues.");
    for (Signal s : signals)
      if (src.exporter->exports(s))
        w.sample("iii_otlp_export_queued_records", label("signal", signal_name(s)),
                 static_cast<double>(src.exporter->stats(s).queued_records));
    w.family("iii_otlp_export_queued_bytes", "gauge",
             "Approximate bytes waiting in the OTLP queues.");
    for (Signal s : signals)
      if (src.exporter->exports(s))
        w.sample("iii_otlp_export_queued_bytes", label("signal", signal_name(s)),
                 static_cast<double>(src.exporter->stats(s).queued_bytes));
    w.family("iii_otlp_export_requests_failed_total", "counter",
             "OTLP export requests that failed (network errors and non-2xx answers).");
    for (Signal s : signals)
      if (src.exporter->exports(s))
        w.sample("iii_otlp_export_requests_failed_total", label("signal", signal_name(s)),
                 static_cast<double>(src.exporter->stats(s).failed_requests));
  }
  w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  w.sample("process_resident_memory_bytes", "", resident_bytes());
  return w.take();
}

PrometheusEndpoint::PrometheusEndpoint(boost::asio::io_context& io, const std::string& host,
                                       uint16_t port, PrometheusSources src)
    : src_(std::move(src)) {
  net::HttpServerOptions o;
  o.name = "iii-observability metrics";
  o.host = host;
  o.port = port;
  o.max_body_bytes = 4096;
  server_ = std::make_unique<net::HttpServer>(
      io, std::move(o), [this](std::shared_ptr<net::IncomingRequest> req) {
        const std::string_view path = req->path();
        const std::string_view method = req->method();
        if (method != "GET" && method != "HEAD") {
          net::HttpFields f;
          f.set(boost::beast::http::field::allow, "GET, HEAD");
          req->respond(net::HttpStatus::method_not_allowed, "method not allowed\n", "text/plain",
                       std::move(f));
          return;
        }
        if (path == "/metrics") {
          req->respond(net::HttpStatus::ok, render_prometheus(src_),
                       "text/plain; version=0.0.4; charset=utf-8");
        } else if (path == "/healthz") {
          req->respond(net::HttpStatus::ok, "ok\n");
        } else if (path == "/readyz") {
          const bool ready = !src_.ready || src_.ready();
          req->respond(ready ? net::HttpStatus::ok : net::HttpStatus::service_unavailable,
                       ready ? "ready\n" : "not ready\n");
        } else {
          req->respond(net::HttpStatus::not_found, "not found\n");
        }
      });
}

PrometheusEndpoint::~PrometheusEndpoint() = default;

uint16_t PrometheusEndpoint::port() const { return server_->port(); }

void PrometheusEndpoint::stop() { server_->stop(); }

}  // namespace iii::observability
