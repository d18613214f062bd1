#include "workers/observability/otlp_exporter.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "net/http_client.h"

namespace iii::observability {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const char* signal_name(Signal s) {
  switch (s) {
    case Signal::kTraces:
      return "traces";
    case Signal::kMetrics:
      return "metrics";
    case Signal::kLogs:
      return "logs";
  }
  return "?";
}

namespace {

// The OTLP/JSON keys of one signal's request: resourceSpans / scopeSpans / spans, ...
struct SignalKeys {
  const char* resource;
  const char* scope;
  const char* records;
};
constexpr SignalKeys kKeys[kSignalCount] = {{"resourceSpans", "scopeSpans", "spans"},
                                            {"resourceMetrics", "scopeMetrics", "metrics"},
                                            {"resourceLogs", "scopeLogs", "logRecords"}};

size_t approx_bytes(const json::value& v, int depth) {
  switch (v.kind()) {
    case json::kind::null:
      return 4;
    case json::kind::bool_:
      return 5;
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return 12;
    case json::kind::string:
      return v.get_string().size() + 2;
    case json::kind::array: {
      size_t n = 2;
      if (depth > 64) return n;
      for (const auto& e : v.get_array()) n += approx_bytes(e, depth + 1) + 1;
      return n;
    }
    case json::kind::object: {
      size_t n = 2;
      if (depth > 64) return n;
      for (const auto& kv : v.get_object())
        n += kv.key().size() + 4 + approx_bytes(kv.value(), depth + 1);
      return n;
    }
  }
  return 0;
}

}  // namespace

size_t approx_json_bytes(const json::value& v) { return approx_bytes(v, 0); }
size_t approx_json_bytes(const json::object& o) {
  size_t n = 2;
  for (const auto& kv : o) n += kv.key().size() + 4 + approx_bytes(kv.value(), 1);
  return n;
}

std::shared_ptr<const OtlpOrigin> make_origin(json::object resource, json::object scope) {
  auto o = std::make_shared<OtlpOrigin>();
  o->resource_key = json::serialize(resource);
  o->scope_key = json::serialize(scope);
  o->resource = std::move(resource);
  o->scope = std::move(scope);
  return o;
}

std::string OtlpEndpoint::target(Signal s) const { return base_path + "/v1/" + signal_name(s); }

OtlpEndpoint parse_otlp_endpoint(std::string_view url) {
  const std::string quoted = "'" + std::string(url) + "'";
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw std::invalid_argument(quoted + " is not a URL (expected http[s]://host:port)");
  const auto& u = *parsed;
  if (u.has_query() || u.has_fragment())
    throw std::invalid_argument(quoted + " must not have a query or fragment");
  // The original's gRPC endpoints (grpc://, grpcs://) are read as their OTLP/HTTP equivalents.
  std::string http_url(url);
  if (u.scheme() == "grpc" || u.scheme() == "grpcs")
    http_url = (u.scheme() == "grpcs" ? "https" : "http") + http_url.substr(u.scheme().size());
  else if (u.scheme() != "http" && u.scheme() != "https")
    throw std::invalid_argument(quoted + ": scheme must be http or https");
  OtlpEndpoint e;
  e.http = net::parse_http_target(http_url);  // throws naming what is wrong
  e.url = std::string(url);
  e.host = e.http.host;
  e.port = e.http.port;
  e.base_path = std::string(u.encoded_path());
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  return e;
}

namespace {

net::HttpTarget http_target(const OtlpEndpoint& e, std::string target) {
  net::HttpTarget t = e.http;
  t.target = std::move(target);
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct OtlpExporter::Impl {
  struct Item {
    std::shared_ptr<const OtlpOrigin> origin;
    json::object record;
    size_t bytes = 0;
    std::unique_ptr<DeferredRecord> deferred;  // built into origin and record when sent
  };
  struct Queue {
    std::deque<Item> items;
    size_t bytes = 0;
    OtlpSignalStats stats;
  };
  struct PostResult {
    bool ok = false;
    bool retryable = true;
    int status = 0;
    std::string error;
    std::optional<milliseconds> retry_after;
  };

  explicit Impl(OtlpExporterOptions o) : opts(std::move(o)) {}

  // Declared first, destroyed last: coroutine frames still suspended when the thread stopped
  // are destroyed with it, after the members they point to are gone but without touching them.
  asio::io_context io{1};
  OtlpExporterOptions opts;
  asio::steady_timer wake{io};
  asio::steady_timer backoff_timer{io};
  net::HttpClient client{io};
  std::thread thread;
  std::promise<void> done_promise;
  std::future<void> done = done_promise.get_future();

  mutable std::mutex mu;  // guards the queues, their stats, and the flags below
  Queue queues[kSignalCount];
  bool wake_posted = false;
  bool started = false;
  bool stopping = false;
  bool stopped = false;
  Clock::time_point stop_deadline{};

  // Failure warnings: the first, then one a minute with what was dropped meanwhile.
  Clock::time_point last_warning{};
  uint64_t warnings_suppressed = 0;
  std::mt19937 rng{std::random_device{}()};

  void enqueue(Signal s, Item item) {
    const size_t bytes = item.bytes;
    std::deque<Item> evicted;  // freed outside the lock
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      Queue& q = queues[static_cast<int>(s)];
      ++q.stats.enqueued;
      q.items.push_back(std::move(item));
      q.bytes += bytes;
      while (!q.items.empty() &&
             (q.items.size() > opts.max_queue_records || q.bytes > opts.max_queue_bytes)) {
        q.bytes -= q.items.front().bytes;
        evicted.push_back(std::move(q.items.front()));
        q.items.pop_front();
        ++q.stats.dropped_queue_full;
      }
      if (q.items.size() >= opts.max_batch_records && started && !wake_posted) {
        wake_posted = true;
        asio::post(io, [this] { wake.cancel(); });
      }
    }
  }

  std::vector<Item> take_batch(Signal s) {
    std::lock_guard lock(mu);
    Queue& q = queues[static_cast<int>(s)];
    std::vector<Item> batch;
    const size_t n = std::min(q.items.size(), opts.max_batch_records);
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      q.bytes -= q.items.front().bytes;
      batch.push_back(std::move(q.items.front()));
      q.items.pop_front();
    }
    return batch;
  }

  std::string build_body(Signal s, std::vector<Item>& batch) {
    const SignalKeys& k = kKeys[static_cast<int>(s)];
    // resource key -> (resource, scope key -> (scope, records)), in first-seen order.
    struct ScopeGroup {
      const OtlpOrigin* origin;
      json::array records;
    };
    struct ResourceGroup {
      const OtlpOrigin* origin;
      std::vector<std::string> scope_order;
      std::map<std::string, ScopeGroup> scopes;
    };
    std::vector<std::string> order;
    std::map<std::string, ResourceGroup> groups;
    for (Item& it : batch) {
      if (it.deferred) {
        auto [origin, record] = it.deferred->build();
        it.origin = std::move(origin);
        it.record = std::move(record);
        it.deferred.reset();
        if (!it.origin) continue;
      }
      auto [rg, fresh] = groups.try_emplace(it.origin->resource_key);
      if (fresh) {
        rg->second.origin = it.origin.get();
        order.push_back(it.origin->resource_key);
      }
      auto [sg, sfresh] = rg->second.scopes.try_emplace(it.origin->scope_key);
      if (sfresh) {
        sg->second.origin = it.origin.get();
        rg->second.scope_order.push_back(it.origin->scope_key);
      }
      sg->second.records.emplace_back(std::move(it.record));
    }
    json::array resources;
    for (const auto& rk : order) {
      ResourceGroup& rg = groups[rk];
      json::array scopes;
      for (const auto& sk : rg.scope_order) {
        ScopeGroup& sg = rg.scopes[sk];
        json::object scope_entry;
        scope_entry["scope"] = sg.origin->scope;
        scope_entry[k.records] = std::move(sg.records);
        scopes.emplace_back(std::move(scope_entry));
      }
      json::object res_entry;
      res_entry["resource"] = rg.origin->resource;
      res_entry[k.scope] = std::move(scopes);
      resources.emplace_back(std::move(res_entry));
    }
    json::object body;
    body[k.resource] = std::move(resources);
    return json::serialize(body);
  }

  void warn_failure(Signal s, const std::string& what) {
    const auto now = Clock::now();
    if (last_warning != Clock::time_point{} && now - last_warning < std::chrono::seconds(60)) {
      ++warnings_suppressed;
      return;
    }
    OtlpSignalStats st = stats(s);
    if (warnings_suppressed)
      spdlog::warn(
          "OTLP export of {} to {} failed: {} ({} similar warnings suppressed; {} {} records "
          "dropped so far)",
          signal_name(s), opts.endpoint.url, what, warnings_suppressed, st.dropped(),
          signal_name(s));
    else
      spdlog::warn("OTLP export of {} to {} failed: {} ({} {} records dropped so far)",
                   signal_name(s), opts.endpoint.url, what, st.dropped(), signal_name(s));
    warnings_suppressed = 0;
    last_warning = now;
  }

  milliseconds remaining_grace() const {
    std::lock_guard lock(mu);
    if (!stopping) return opts.request_timeout;
    const auto left = std::chrono::duration_cast<milliseconds>(stop_deadline - Clock::now());
    return std::clamp(left, milliseconds(1), opts.request_timeout);
  }

  bool is_stopping() const {
    std::lock_guard lock(mu);
    return stopping;
  }

  // The client's callbacks as awaitables (the completion is posted, so it never resumes the
  // coroutine from inside the call that started it).
  awaitable<std::optional<std::string>> connect(milliseconds timeout) {
    std::optional<net::OutboundFailure> failure =
        co_await asio::async_initiate<decltype(use_awaitable),
                                      void(std::optional<net::OutboundFailure>)>(
            [this, timeout](auto handler) {
              auto h = std::make_shared<decltype(handler)>(std::move(handler));
              client.connect(
                  opts.endpoint.http, timeout, [this, h](std::optional<net::OutboundFailure> f) {
                    asio::post(io, [h, f = std::move(f)]() mutable { (*h)(std::move(f)); });
                  });
            },
            use_awaitable);
    if (failure) co_return std::move(failure->message);
    co_return std::nullopt;
  }

  awaitable<PostResult> post(const std::string& target, const std::string& body) {
    net::OutboundRequest req;
    req.target = http_target(opts.endpoint, target);
    req.method = "POST";
    req.headers.reserve(opts.headers.size() + 2);
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("User-Agent", "iii-engine OTLP exporter");
    for (const auto& h : opts.headers) req.headers.push_back(h);
    req.body = body;
    req.timeout = remaining_grace();
    req.max_response_bytes = 1 << 20;
    req.keep_response_headers = true;
    auto [failure, res] = co_await asio::async_initiate<
        decltype(use_awaitable), void(std::optional<net::OutboundFailure>, net::OutboundResponse)>(
        [this](auto handler, net::OutboundRequest req) {
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          client.send(std::move(req),
                      [this, h](std::optional<net::OutboundFailure> f, net::OutboundResponse r) {
                        asio::post(io, [h, f = std::move(f), r = std::move(r)]() mutable {
                          (*h)(std::move(f), std::move(r));
                        });
                      });
        },
        use_awaitable, std::move(req));
    PostResult r;
    if (failure) {
      r.error = std::move(failure->message);
      co_return r;
    }
    r.status = static_cast<int>(res.status);
    if (r.status >= 200 && r.status < 300) {
      r.ok = true;
      co_return r;
    }
    r.retryable = r.status == 429 || r.status == 502 || r.status == 503 || r.status == 504;
    r.error = "HTTP " + std::to_string(r.status);
    if (!res.body.empty()) r.error += ": " + res.body.substr(0, 200);
    if (auto ra = res.header("Retry-After")) {
      try {
        const long secs = std::stol(std::string(*ra));
        if (secs >= 0) r.retry_after = milliseconds(std::min<long>(secs, 3600) * 1000);
      } catch (const std::exception&) {
        // an HTTP date: use our own backoff
      }
    }
    co_return r;
  }

  awaitable<void> send_batch(Signal s, std::vector<Item> batch) {
    const size_t n = batch.size();
    // The body is built once a connection is open (the client keeps it idle for the request):
    // while the collector is down, batches are retried and dropped without their records ever
    // being converted.
    std::string body;
    bool built = false;
    const std::string target = opts.endpoint.target(s);
    milliseconds backoff = opts.backoff_initial;
    for (int attempt = 1;; ++attempt) {
      PostResult r;
      std::optional<std::string> conn_error;
      conn_error = co_await connect(remaining_grace());
      if (conn_error) {
        r.error = std::move(*conn_error);
      } else {
        if (!built) {
          body = build_body(s, batch);
          batch.clear();
          built = true;
        }
        r = co_await post(target, body);
      }
      {
        std::lock_guard lock(mu);
        OtlpSignalStats& st = queues[static_cast<int>(s)].stats;
        ++st.requests;
        if (r.ok) {
          st.exported += n;
          co_return;
        }
        ++st.failed_requests;
        if (!r.retryable)
          st.dropped_rejected += n;
        else if (attempt >= opts.max_attempts || stopping)
          st.dropped_failed += n;
      }
      if (!r.retryable) {
        warn_failure(s, r.error + " (not retryable; " + std::to_string(n) + " records dropped)");
        co_return;
      }
      if (attempt >= opts.max_attempts || is_stopping()) {
        warn_failure(s, r.error + " (gave up after " + std::to_string(attempt) + " attempts; " +
                            std::to_string(n) + " records dropped)");
        co_return;
      }
      if (attempt == 1) warn_failure(s, r.error + " (retrying with backoff)");
      milliseconds wait = backoff;
      if (r.retry_after) {
        wait = std::min(*r.retry_after, opts.backoff_max);
      } else {
        // Full jitter in [backoff/2, backoff].
        std::uniform_int_distribution<int64_t> d(backoff.count() / 2, backoff.count());
        wait = milliseconds(d(rng));
      }
      backoff = std::min(backoff * 2, opts.backoff_max);
      boost::system::error_code ec;
      backoff_timer.expires_after(wait);
      co_await backoff_timer.async_wait(asio::redirect_error(use_awaitable, ec));
    }
  }

  awaitable<void> pump() {
    for (;;) {
      if (!is_stopping()) {
        boost::system::error_code ec;
        wake.expires_after(opts.flush_interval);
        co_await wake.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      {
        std::lock_guard lock(mu);
        wake_posted = false;
      }
      const bool last_round = is_stopping();
      for (int i = 0; i < kSignalCount; ++i) {
        const Signal s = static_cast<Signal>(i);
        for (;;) {
          if (last_round && Clock::now() >= stop_deadline) break;
          std::vector<Item> batch = take_batch(s);
          if (batch.empty()) break;
          co_await send_batch(s, std::move(batch));
        }
      }
      if (last_round) break;
    }
    client.stop();  // closes the kept connection
    done_promise.set_value();
  }

  OtlpSignalStats stats(Signal s) const {
    std::lock_guard lock(mu);
    const Queue& q = queues[static_cast<int>(s)];
    OtlpSignalStats st = q.stats;
    st.queued_records = q.items.size();
    st.queued_bytes = q.bytes;
    return st;
  }
};

OtlpExporter::OtlpExporter(OtlpExporterOptions opts)
    : impl_(std::make_unique<Impl>(std::move(opts))) {
  if (impl_->opts.max_batch_records == 0) impl_->opts.max_batch_records = 1;
  if (impl_->opts.max_attempts < 1) impl_->opts.max_attempts = 1;
}

OtlpExporter::~OtlpExporter() { stop(milliseconds(0)); }

void OtlpExporter::start() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->started || impl_->stopping) return;
    impl_->started = true;
  }
  Impl* impl = impl_.get();
  asio::co_spawn(impl->io, impl->pump(), asio::detached);
  impl->thread = std::thread([impl] {
    try {
      impl->io.run();
    } catch (const std::exception& e) {
      spdlog::error("OTLP exporter stopped: {}", e.what());
    }
  });
}

void OtlpExporter::stop(milliseconds grace) {
  Impl& d = *impl_;
  {
    std::lock_guard lock(d.mu);
    if (d.stopped) return;
    d.stopped = true;
    d.stopping = true;
    d.stop_deadline = Clock::now() + grace;
    if (!d.started) return;
  }
  asio::post(d.io, [impl = impl_.get()] {
    impl->wake.cancel();
    impl->backoff_timer.cancel();
  });
  // The pump makes one last round (bounded by the grace through each request's timeout).
  d.done.wait_for(grace + milliseconds(200));
  d.io.stop();
  if (d.thread.joinable()) d.thread.join();
}

bool OtlpExporter::exports(Signal s) const { return impl_->opts.signals[static_cast<int>(s)]; }

void OtlpExporter::enqueue(Signal s, std::shared_ptr<const OtlpOrigin> origin,
                           json::object record) {
  if (!exports(s) || !origin) return;
  const size_t bytes = approx_json_bytes(record);
  impl_->enqueue(s, Impl::Item{std::move(origin), std::move(record), bytes, nullptr});
}

void OtlpExporter::enqueue(Signal s, std::unique_ptr<DeferredRecord> record, size_t bytes) {
  if (!exports(s) || !record) return;
  impl_->enqueue(s, Impl::Item{nullptr, {}, bytes, std::move(record)});
}

OtlpSignalStats OtlpExporter::stats(Signal s) const { return impl_->stats(s); }
const OtlpExporterOptions& OtlpExporter::options() const { return impl_->opts; }

}  // namespace iii::observability
