// OtlpExporter against a real HTTP receiver on loopback (net::HttpServer on its own thread):
// batching and grouping by resource and scope, the OTLP/HTTP paths and content type, retries
// with backoff on 503 and none on 400, bounded queues while the collector is down (oldest
// dropped and counted, enqueue never waits), and a stop bounded by its grace period against a
// collector that never answers.
#include "workers/observability/otlp_exporter.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/http_server.h"

namespace iii::observability {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

struct Received {
  std::string method, path, content_type, body;
};

// An OTLP/HTTP receiver: records every request, answers each with the next scripted status
// (200 once the script is used up).
class Receiver {
 public:
  explicit Receiver(std::deque<int> script = {}) : script_(std::move(script)) {
    net::HttpServerOptions o;
    o.name = "otlp-test-receiver";
    o.host = "127.0.0.1";
    o.max_body_bytes = 16 << 20;
    server_ = std::make_unique<net::HttpServer>(io_, o, [this](auto req) {
      int status = 200;
      {
        std::lock_guard lock(mu_);
        got_.push_back({std::string(req->method()), std::string(req->path()),
                        std::string(req->request()[boost::beast::http::field::content_type]),
                        req->body()});
        if (!script_.empty()) {
          status = script_.front();
          script_.pop_front();
        }
      }
      cv_.notify_all();
      req->respond(static_cast<net::HttpStatus>(status), status == 200 ? "{}" : "no",
                   "application/json");
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Receiver() {
    asio::post(io_, [this] { server_->stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  // Waits until `pred(requests)` holds, at most 10 s.
  template <class Pred>
  bool wait_for(Pred pred) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return pred(got_); });
  }
  std::vector<Received> requests() {
    std::lock_guard lock(mu_);
    return got_;
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<net::HttpServer> server_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Received> got_;
  std::deque<int> script_;
};

json::object attr(const char* k, const char* v) {
  return json::object{{"key", k}, {"value", json::object{{"stringValue", v}}}};
}

std::shared_ptr<const OtlpOrigin> origin(const char* service, const char* scope = "iii") {
  return make_origin(json::object{{"attributes", json::array{attr("service.name", service)}}},
                     json::object{{"name", scope}});
}

json::object span(int i) {
  return json::object{{"traceId", "0af7651916cd43dd8448eb211c80319c"},
                      {"spanId", "b7ad6b71692033" + std::to_string(10 + i % 90)},
                      {"name", "span-" + std::to_string(i)},
                      {"kind", 2},
                      {"startTimeUnixNano", "1700000000000000000"},
                      {"endTimeUnixNano", "1700000000100000000"}};
}

OtlpExporterOptions options(const std::string& url) {
  OtlpExporterOptions o;
  o.endpoint = parse_otlp_endpoint(url);
  o.flush_interval = 50ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 100ms;
  o.request_timeout = 2000ms;
  return o;
}

size_t count_records(const std::vector<Received>& got, const char* path, const char* rkey,
                     const char* skey, const char* key) {
  size_t n = 0;
  for (const auto& r : got) {
    if (r.path != path) continue;
    const json::value v = json::parse(r.body);
    for (const auto& rs : v.at(rkey).as_array())
      for (const auto& ss : rs.at(skey).as_array()) n += ss.at(key).as_array().size();
  }
  return n;
}

TEST(OtlpEndpoint, Parses) {
  OtlpEndpoint e = parse_otlp_endpoint("http://localhost:4318");
  EXPECT_EQ(e.host, "localhost");
  EXPECT_EQ(e.port, "4318");
  EXPECT_EQ(e.target(Signal::kTraces), "/v1/traces");
  e = parse_otlp_endpoint("http://[::1]:9/otlp/");
  EXPECT_EQ(e.host, "::1");
  EXPECT_EQ(e.target(Signal::kLogs), "/otlp/v1/logs");
  EXPECT_EQ(parse_otlp_endpoint("http://collector").port, "80");
  EXPECT_FALSE(e.http.https);
  EXPECT_EQ(e.http.host_header, "[::1]:9");
  // https: port 443 by default, TLS on, Host header without the default port.
  e = parse_otlp_endpoint("https://Collector.Example/otlp");
  EXPECT_TRUE(e.http.https);
  EXPECT_EQ(e.host, "collector.example");
  EXPECT_EQ(e.port, "443");
  EXPECT_EQ(e.http.host_header, "collector.example");
  EXPECT_EQ(e.target(Signal::kMetrics), "/otlp/v1/metrics");
  e = parse_otlp_endpoint("https://collector.example:4318");
  EXPECT_TRUE(e.http.https);
  EXPECT_EQ(e.port, "4318");
  EXPECT_EQ(e.http.host_header, "collector.example:4318");
  EXPECT_EQ(e.target(Signal::kTraces), "/v1/traces");
  // The original's gRPC forms map to their OTLP/HTTP equivalents.
  EXPECT_FALSE(parse_otlp_endpoint("grpc://localhost:4317").http.https);
  EXPECT_TRUE(parse_otlp_endpoint("grpcs://localhost:4317").http.https);
  EXPECT_THROW(parse_otlp_endpoint("ftp://collector:4318"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("https://collector:0"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("https://collector:99999"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("https://user@collector"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("https://collector/?x=1"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("collector:4318"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("not a url"), std::invalid_argument);
  EXPECT_THROW(parse_otlp_endpoint("http://:4318"), std::invalid_argument);
}

TEST(OtlpExporter, SendsBatchesGroupedByResourceAndScope) {
  Receiver rx;
  OtlpExporterOptions o = options(rx.url());
  o.max_batch_records = 100;
  OtlpExporter ex(o);
  ex.start();
  auto a = origin("svc-a");
  auto b = origin("svc-b");
  auto b2 = origin("svc-b", "other-scope");
  for (int i = 0; i < 250; ++i)
    ex.enqueue(Signal::kTraces, i % 3 == 0 ? a : i % 3 == 1 ? b : b2, span(i));
  ex.enqueue(Signal::kLogs, a,
             json::object{{"timeUnixNano", "1700000000000000000"},
                          {"severityNumber", 9},
                          {"severityText", "INFO"},
                          {"body", json::object{{"stringValue", "hello"}}}});
  ASSERT_TRUE(rx.wait_for([](const auto& got) {
    return count_records(got, "/v1/traces", "resourceSpans", "scopeSpans", "spans") == 250 &&
           count_records(got, "/v1/logs", "resourceLogs", "scopeLogs", "logRecords") == 1;
  }));
  const auto got = rx.requests();
  size_t trace_requests = 0;
  for (const auto& r : got) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.content_type, "application/json");
    if (r.path != "/v1/traces") continue;
    ++trace_requests;
    EXPECT_LE(count_records({r}, "/v1/traces", "resourceSpans", "scopeSpans", "spans"), 100u);
    const json::value v = json::parse(r.body);
    const auto& resources = v.at("resourceSpans").as_array();
    // One entry per resource, and svc-b's two scopes under one resource.
    EXPECT_LE(resources.size(), 2u);
    for (const auto& rs : resources) {
      const std::string svc(
          rs.at("resource").at("attributes").at(0).at("value").at("stringValue").as_string());
      EXPECT_EQ(rs.at("scopeSpans").as_array().size(), svc == "svc-a" ? 1u : 2u) << r.body;
    }
  }
  // At most 100 spans per request (100 + 100 + 50, or more requests when the 50 ms flush timer
  // fires while the spans are being queued on a loaded machine).
  EXPECT_GE(trace_requests, 3u);
  // A request is counted once its answer is read, just after the receiver has recorded it:
  // stopping waits for the request in flight.
  ex.stop(1000ms);
  EXPECT_EQ(ex.stats(Signal::kTraces).exported, 250u);
  EXPECT_EQ(ex.stats(Signal::kLogs).exported, 1u);
  EXPECT_EQ(ex.stats(Signal::kTraces).dropped(), 0u);
}

TEST(OtlpExporter, RetriesRetryableStatusesWithBackoff) {
  Receiver rx({503, 503});
  OtlpExporter ex(options(rx.url()));
  ex.start();
  ex.enqueue(Signal::kTraces, origin("svc"), span(1));
  ASSERT_TRUE(rx.wait_for([](const auto& got) { return got.size() == 3; }));
  ex.stop(1000ms);
  const auto st = ex.stats(Signal::kTraces);
  EXPECT_EQ(st.requests, 3u);
  EXPECT_EQ(st.failed_requests, 2u);
  EXPECT_EQ(st.exported, 1u);
  const auto got = rx.requests();
  EXPECT_EQ(got[0].body, got[2].body);  // the same batch again
}

TEST(OtlpExporter, DropsBatchOnNonRetryableStatus) {
  Receiver rx({400});
  OtlpExporter ex(options(rx.url()));
  ex.start();
  ex.enqueue(Signal::kMetrics, origin("svc"), json::object{{"name", "m"}});
  ASSERT_TRUE(rx.wait_for([](const auto& got) { return got.size() == 1; }));
  ex.enqueue(Signal::kMetrics, origin("svc"), json::object{{"name", "m2"}});
  ASSERT_TRUE(rx.wait_for([](const auto& got) { return got.size() == 2; }));
  ex.stop(1000ms);
  const auto st = ex.stats(Signal::kMetrics);
  EXPECT_EQ(st.dropped_rejected, 1u);
  EXPECT_EQ(st.exported, 1u);
  EXPECT_EQ(st.requests, 2u);
}

// Binds a port and closes it again: nothing listens there afterwards.
std::string dead_url() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = a.local_endpoint().port();
  a.close();
  return "http://127.0.0.1:" + std::to_string(port);
}

TEST(OtlpExporter, CollectorDownBoundsQueueAndNeverBlocks) {
  OtlpExporterOptions o = options(dead_url());
  o.max_queue_records = 1000;
  o.max_attempts = 3;
  OtlpExporter ex(o);
  ex.start();
  auto org = origin("svc");
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20000; ++i) ex.enqueue(Signal::kTraces, org, span(i));
  const auto took = std::chrono::steady_clock::now() - t0;
  // 20,000 enqueues are a few ms of work; far below anything that could be waiting on I/O.
  EXPECT_LT(took, 2s);
  auto st = ex.stats(Signal::kTraces);
  EXPECT_LE(st.queued_records, 1000u);
  EXPECT_EQ(st.enqueued, 20000u);
  // Everything not queued or in the batch being tried was dropped and counted. How many batches
  // the exporter thread took (and failed) while the loop ran depends on scheduling (under load,
  // with ASan, it took 5), so those count with the ones dropped as failed.
  EXPECT_GE(st.dropped_queue_full + st.queued_records + st.dropped_failed,
            20000u - 4 * o.max_batch_records);
  // Batches given up after max_attempts are counted too.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (ex.stats(Signal::kTraces).dropped_failed == 0 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  st = ex.stats(Signal::kTraces);
  EXPECT_GT(st.dropped_failed, 0u);
  EXPECT_GE(st.failed_requests, 3u);
  EXPECT_EQ(st.exported, 0u);
  ex.stop(100ms);
}

TEST(OtlpExporter, QueueBoundedByBytes) {
  OtlpExporterOptions o = options(dead_url());
  o.max_queue_bytes = 64 * 1024;
  o.flush_interval = 1h;  // nothing leaves: only the bound acts
  OtlpExporter ex(o);
  ex.start();
  auto org = origin("svc");
  json::object big = span(0);
  big["name"] = std::string(1000, 'x');
  for (int i = 0; i < 1000; ++i) ex.enqueue(Signal::kLogs, org, big);
  const auto st = ex.stats(Signal::kLogs);
  EXPECT_LE(st.queued_bytes, 64u * 1024);
  EXPECT_GT(st.queued_records, 30u);
  EXPECT_EQ(st.queued_records + st.dropped_queue_full, 1000u);
  ex.stop(0ms);
}

TEST(OtlpExporter, StopIsBoundedWhenCollectorNeverAnswers) {
  // Accepts connections (the backlog does) but never reads or answers.
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  OtlpExporterOptions o = options("http://127.0.0.1:" + std::to_string(a.local_endpoint().port()));
  o.request_timeout = 30s;
  OtlpExporter ex(o);
  ex.start();
  ex.enqueue(Signal::kTraces, origin("svc"), span(1));
  std::this_thread::sleep_for(100ms);  // let the first request start
  const auto t0 = std::chrono::steady_clock::now();
  ex.stop(300ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(OtlpExporter, DisabledSignalsAreIgnored) {
  OtlpExporterOptions o = options(dead_url());
  o.signals[static_cast<int>(Signal::kMetrics)] = false;
  OtlpExporter ex(o);
  EXPECT_FALSE(ex.exports(Signal::kMetrics));
  ex.enqueue(Signal::kMetrics, origin("svc"), json::object{{"name", "m"}});
  EXPECT_EQ(ex.stats(Signal::kMetrics).enqueued, 0u);
}

TEST(ApproxJsonBytes, CloseToSerialisedSize) {
  const json::value v = json::parse(
      R"({"traceId":"0af7651916cd43dd8448eb211c80319c","attributes":[{"key":"k","value":{"stringValue":"some value"}}],"n":12345,"b":true,"z":null})");
  const size_t real = json::serialize(v).size();
  const size_t approx = approx_json_bytes(v);
  EXPECT_GT(approx, real * 8 / 10);
  EXPECT_LT(approx, real * 13 / 10);
}

}  // namespace
}  // namespace iii::observability
