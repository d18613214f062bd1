// OTLP/HTTP exporter of the observability worker: spans, metrics and logs are queued by the
// engine thread and sent by the exporter's own thread as OTLP/JSON (`POST <endpoint>/v1/traces`,
// `/v1/metrics`, `/v1/logs`, `Content-Type: application/json`, hex trace and span ids as the
// OTLP/JSON mapping requires). Batched (up to `max_batch_records` per request, at least every
// `flush_interval`), bounded per signal by records and by bytes (the oldest record is dropped
// and counted when a queue is full), retried with exponential backoff on network errors and
// on 429/502/503/504 (Retry-After honoured), dropped and counted after `max_attempts` or on any
// other status. Sent with net::HttpClient on the exporter's own io_context (http or https,
// keep-alive). A collector that is down or slow never blocks the engine thread: enqueue only
// takes a mutex for a move.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/http_client.h"

namespace iii::observability {

enum class Signal : int { kTraces = 0, kMetrics = 1, kLogs = 2 };
constexpr int kSignalCount = 3;
// "traces", "metrics", "logs": the OTLP/HTTP path segment.
const char* signal_name(Signal s);

// The OTLP resource and instrumentation scope a record is exported under. One origin is
// shared by every record of one SDK export (or every engine span); a request groups the
// records of equal origins under one ResourceSpans/ScopeSpans (or Metrics, Logs) entry.
struct OtlpOrigin {
  boost::json::object resource;  // OTLP Resource: {"attributes":[{key, value}...]}
  boost::json::object scope;     // OTLP InstrumentationScope: {"name", "version"?}
  std::string resource_key;      // serialised resource: equal keys are grouped
  std::string scope_key;
};
std::shared_ptr<const OtlpOrigin> make_origin(boost::json::object resource,
                                              boost::json::object scope);

struct OtlpEndpoint {
  std::string url;        // as configured, for log lines
  net::HttpTarget http;   // scheme, host, port, Host header (and the configured path)
  std::string host;       // http.host
  std::string port;       // http.port: "80" or "443" when absent
  std::string base_path;  // without a trailing '/', "" for the root
  // `<base_path>/v1/<signal>`, the OTLP/HTTP convention for a base endpoint
  // (OTEL_EXPORTER_OTLP_ENDPOINT).
  std::string target(Signal s) const;
};
// Parses "http[s]://host[:port][/path]" (grpc:// and grpcs:// are read as http:// and https://).
// Throws std::invalid_argument naming what is wrong. https is verified against the system
// trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), as every outbound TLS connection is.
OtlpEndpoint parse_otlp_endpoint(std::string_view url);

struct OtlpExporterOptions {
  OtlpEndpoint endpoint;
  bool signals[kSignalCount] = {true, true, true};  // which signals are exported
  size_t max_queue_records = 4096;                  // per signal
  size_t max_queue_bytes = 8u << 20;                // per signal, estimated JSON size
  size_t max_batch_records = 512;
  std::chrono::milliseconds flush_interval{1000};
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  int max_attempts = 5;  // per batch, the first try included
  std::vector<std::pair<std::string, std::string>> headers;
};

struct OtlpSignalStats {
  uint64_t enqueued = 0;
  uint64_t exported = 0;            // records acknowledged by the collector (2xx)
  uint64_t dropped_queue_full = 0;  // oldest records pushed out of a full queue
  uint64_t dropped_rejected = 0;    // in batches answered with a non-retryable status
  uint64_t dropped_failed = 0;      // in batches that failed `max_attempts` times
  uint64_t requests = 0;            // HTTP requests sent (retries included)
  uint64_t failed_requests = 0;     // network errors and non-2xx answers
  size_t queued_records = 0;
  size_t queued_bytes = 0;
  uint64_t dropped() const { return dropped_queue_full + dropped_rejected + dropped_failed; }
};

// A record converted to OTLP/JSON only when its batch is built, on the exporter's thread, so
// that the thread that queues it only pays for a copy.
class DeferredRecord {
 public:
  virtual ~DeferredRecord() = default;
  // The record's origin and its OTLP/JSON. Called once, on the exporter's thread.
  virtual std::pair<std::shared_ptr<const OtlpOrigin>, boost::json::object> build() = 0;
};

class OtlpExporter {
 public:
  explicit OtlpExporter(OtlpExporterOptions opts);
  ~OtlpExporter();  // stop() with no grace
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Starts the exporter's thread.
  void start();
  // Sends what is queued for at most `grace`, then stops the thread. Idempotent.
  void stop(std::chrono::milliseconds grace);

  bool exports(Signal s) const;
  // Thread-safe and non-blocking. `record` is one OTLP/JSON Span, Metric or LogRecord; records
  // of a signal that is not exported are ignored.
  void enqueue(Signal s, std::shared_ptr<const OtlpOrigin> origin, boost::json::object record);
  // The same for a record built on the exporter's thread; `bytes` is its estimated size.
  void enqueue(Signal s, std::unique_ptr<DeferredRecord> record, size_t bytes);

  OtlpSignalStats stats(Signal s) const;
  const OtlpExporterOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A cheap estimate of a JSON value's serialised size in bytes (strings counted by length, no
// escaping), used to bound queues and stores by bytes without serialising.
size_t approx_json_bytes(const boost::json::value& v);
size_t approx_json_bytes(const boost::json::object& o);

}  // namespace iii::observability
