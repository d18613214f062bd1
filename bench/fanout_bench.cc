// Trigger fan-out latency: one engine event delivered to N bound functions.
//
//   fanout_bench --url ws://127.0.0.1:49134 [--fanout 1,128] [--rounds 200] [--warmup-rounds 10]
//
// For each N, one SDK worker registers N functions `bench::fan::<i>` (async handlers, so they
// run on the SDK I/O thread with no thread hop) and binds each to the engine's built-in event
// trigger type `engine::workers-available`. Then, per round, a separate raw WebSocket "probe"
// connects; the engine sends the probe its `workerregistered` frame and fires
// `{"event":"worker_connected","worker_id":<probe>}` to every bound trigger. The handlers
// record the arrival time of each event; the round's latency ends at the N-th (last) one.
// The probe then closes and the bench waits for the N `worker_disconnected` invocations too
// before the next round.
//
// Latency start points (all on this machine's steady clock, across threads):
//   * registered: the probe has read its `workerregistered` frame (primary figure). The engine
//     queues that frame immediately before firing the event, so this is the event time plus
//     one loopback hop (it slightly under-states, and for N=1 can even be a few us negative
//     when the worker's thread is scheduled before the probe's);
//   * connect: just before the probe's TCP connect (an upper bound: it adds the TCP
//     handshake and the HTTP upgrade);
//   * close: for the disconnect half, just before the probe sends its Close frame.
// Prints a human line and a JSON line per N with p50/p90/p99/max in microseconds. With
// --engine-pid the engine's CPU time per round is reported too (load-independent).
#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../sdk/cpp/src/support.h"  // ws:// URL parsing shared with the SDK
#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string url = "ws://127.0.0.1:49134";
  std::vector<int64_t> fanout{1, 128};
  int rounds = 200;
  int warmup_rounds = 10;
  int timeout_ms = 10000;
  long engine_pid = 0;  // report the engine's CPU time per round
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: fanout_bench [--url ws://127.0.0.1:49134] [--fanout N[,N...]]\n"
               "                    [--rounds N] [--warmup-rounds N] [--timeout-ms MS]\n"
               "                    [--engine-pid PID]\n");
  std::exit(code);
}

std::vector<int64_t> parse_list(const std::string& flag, const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1) {
      std::fprintf(stderr, "invalid value for %s: '%s'\n", flag.c_str(), s.c_str());
      usage(2);
    }
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

Flags parse_flags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") usage(0);
    std::string name = arg, value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", arg.c_str());
        usage(2);
      }
      value = argv[++i];
    }
    if (name == "--url")
      f.url = value;
    else if (name == "--fanout")
      f.fanout = parse_list(name, value);
    else if (name == "--rounds")
      f.rounds = std::atoi(value.c_str());
    else if (name == "--warmup-rounds")
      f.warmup_rounds = std::atoi(value.c_str());
    else if (name == "--timeout-ms")
      f.timeout_ms = std::atoi(value.c_str());
    else if (name == "--engine-pid")
      f.engine_pid = std::atol(value.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", name.c_str());
      usage(2);
    }
  }
  if (f.rounds < 1 || f.warmup_rounds < 0 || f.timeout_ms < 1) usage(2);
  return f;
}

// Arrivals per probe worker id, written by the handlers on the SDK I/O thread.
struct Arrivals {
  int connected = 0, disconnected = 0;
  Clock::time_point last_connected, last_disconnected;
};

class Recorder {
 public:
  void record(const std::string& event, const std::string& worker_id, Clock::time_point t) {
    std::lock_guard lock(mu_);
    Arrivals& a = by_worker_[worker_id];
    if (event == "worker_connected") {
      ++a.connected;
      a.last_connected = t;
    } else if (event == "worker_disconnected") {
      ++a.disconnected;
      a.last_disconnected = t;
    } else {
      return;
    }
    cv_.notify_all();
  }

  // Waits until `n` events of the kind arrived for `worker_id`; returns the last arrival time.
  std::optional<Clock::time_point> wait(const std::string& worker_id, bool connected, int n,
                                        std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    const bool done = cv_.wait_for(lock, timeout, [&] {
      const Arrivals& a = by_worker_[worker_id];
      return (connected ? a.connected : a.disconnected) >= n;
    });
    if (!done) return std::nullopt;
    const Arrivals& a = by_worker_[worker_id];
    return connected ? a.last_connected : a.last_disconnected;
  }

  int count(const std::string& worker_id, bool connected) {
    std::lock_guard lock(mu_);
    const Arrivals& a = by_worker_[worker_id];
    return connected ? a.connected : a.disconnected;
  }

  void forget(const std::string& worker_id) {
    std::lock_guard lock(mu_);
    by_worker_.erase(worker_id);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Arrivals> by_worker_;
};

struct Sample {
  double from_registered_us, from_connect_us, disconnect_us;
};

double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

// Polls engine::triggers::list until all N triggers are stored (registertrigger has no reply).
bool wait_for_triggers(iii::III& worker, int64_t n, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    try {
      iii::TriggerRequest req;
      req.function_id = "engine::triggers::list";
      req.payload = json::object{};
      req.timeout_ms = 5000;
      auto res = worker.trigger(req);
      int64_t bound = 0;
      if (res && res->is_object())
        if (auto* arr = res->as_object().if_contains("triggers"); arr && arr->is_array())
          for (const auto& t : arr->as_array())
            if (t.as_object().at("trigger_type").as_string() == "engine::workers-available" &&
                t.as_object().at("function_id").as_string().starts_with("bench::fan::"))
              ++bound;
      if (bound == n) return true;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "engine::triggers::list: %s\n", e.what());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// One probe connection: connect, upgrade, read workerregistered, wait for N handler calls,
// close, wait for N disconnect calls.
bool probe_round(const iii::detail::WsUrl& url, const tcp::resolver::results_type& eps,
                 Recorder& rec, int n, std::chrono::milliseconds timeout, Sample* out) {
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  error_code ec;
  const auto t_connect = Clock::now();
  asio::connect(ws.next_layer(), eps, ec);
  if (ec) {
    std::fprintf(stderr, "probe connect: %s\n", ec.message().c_str());
    return false;
  }
  ws.next_layer().set_option(tcp::no_delay(true), ec);
  ws.handshake(url.host_header, "/", ec);
  if (ec) {
    std::fprintf(stderr, "probe upgrade: %s\n", ec.message().c_str());
    return false;
  }
  beast::flat_buffer buf;
  ws.read(buf, ec);
  const auto t_registered = Clock::now();
  if (ec) {
    std::fprintf(stderr, "probe read: %s\n", ec.message().c_str());
    return false;
  }
  std::string worker_id;
  try {
    auto v = json::parse(beast::buffers_to_string(buf.data()));
    if (v.at("type").as_string() == "workerregistered")
      worker_id = std::string(v.at("worker_id").as_string());
  } catch (const std::exception&) {
  }
  if (worker_id.empty()) {
    std::fprintf(stderr, "probe: first frame is not workerregistered: %s\n",
                 beast::buffers_to_string(buf.data()).c_str());
    return false;
  }
  auto last = rec.wait(worker_id, true, n, timeout);
  if (!last) {
    std::fprintf(stderr, "probe %s: only %d of %d worker_connected invocations arrived\n",
                 worker_id.c_str(), rec.count(worker_id, true), n);
    return false;
  }
  out->from_registered_us = us_between(t_registered, *last);
  out->from_connect_us = us_between(t_connect, *last);

  const auto t_close = Clock::now();
  ws.close(websocket::close_code::normal, ec);
  auto last_disc = rec.wait(worker_id, false, n, timeout);
  rec.forget(worker_id);
  if (!last_disc) {
    std::fprintf(stderr, "probe %s: only %d of %d worker_disconnected invocations arrived\n",
                 worker_id.c_str(), rec.count(worker_id, false), n);
    return false;
  }
  out->disconnect_us = us_between(t_close, *last_disc);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  std::string error;
  auto url = iii::detail::parse_ws_url(flags.url, &error);
  if (!url) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  asio::io_context resolve_ioc;
  tcp::resolver resolver(resolve_ioc);
  error_code ec;
  auto eps = resolver.resolve(url->host, url->port, ec);
  if (ec) {
    std::fprintf(stderr, "cannot resolve %s: %s\n", url->host.c_str(), ec.message().c_str());
    return 1;
  }
  const auto timeout = std::chrono::milliseconds(flags.timeout_ms);

  int exit_code = 0;
  for (int64_t n : flags.fanout) {
    Recorder rec;
    iii::InitOptions opts;
    opts.worker_name = "fanout-bench";
    auto worker = iii::register_worker(flags.url, opts);
    for (int64_t i = 0; i < n; ++i) {
      const std::string id = "bench::fan::" + std::to_string(i);
      worker->register_function(
          id, iii::AsyncHandler([&rec](const json::value& in, iii::Responder reply) {
            const auto t = Clock::now();
            reply.ok();
            const auto* o = in.if_object();
            if (!o) return;
            const auto* ev = o->if_contains("event");
            const auto* wid = o->if_contains("worker_id");
            if (ev && wid && ev->is_string() && wid->is_string())
              rec.record(std::string(ev->get_string()), std::string(wid->get_string()), t);
          }));
      worker->register_trigger(
          {.type = "engine::workers-available", .function_id = id, .config = json::object{}});
    }
    if (!worker->wait_connected(std::chrono::seconds(10))) {
      std::fprintf(stderr, "cannot connect to %s: %s\n", flags.url.c_str(),
                   worker->last_error().c_str());
      return 1;
    }
    if (!wait_for_triggers(*worker, n, flags.timeout_ms)) {
      std::fprintf(stderr, "the engine did not store %lld workers-available triggers\n",
                   static_cast<long long>(n));
      return 1;
    }

    std::vector<Sample> samples;
    int failures = 0;
    const int64_t cpu_before = flags.engine_pid ? bench::cpu_ns(flags.engine_pid) : -1;
    int completed_rounds = 0;
    for (int r = 0; r < flags.warmup_rounds + flags.rounds; ++r) {
      Sample s{};
      if (!probe_round(*url, eps, rec, static_cast<int>(n), timeout, &s)) {
        if (++failures > 3) break;
        continue;
      }
      ++completed_rounds;
      if (r >= flags.warmup_rounds) samples.push_back(s);
    }
    // Engine CPU per round (warm-up included): one connect and one disconnect, each fanned out
    // to N functions, plus the probe's upgrade. -1 without --engine-pid.
    double engine_cpu_us_round = -1;
    if (cpu_before >= 0 && completed_rounds > 0) {
      const int64_t cpu_after = bench::cpu_ns(flags.engine_pid);
      if (cpu_after >= 0) engine_cpu_us_round = (cpu_after - cpu_before) / 1e3 / completed_rounds;
    }
    std::vector<double> reg, con, disc;
    for (const auto& s : samples) {
      reg.push_back(s.from_registered_us);
      con.push_back(s.from_connect_us);
      disc.push_back(s.disconnect_us);
    }
    auto mx = [](const std::vector<double>& v) {
      return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
    };
    std::printf(
        "fanout N=%lld rounds=%zu: workerregistered->last handler p50=%.1fus p90=%.1fus "
        "p99=%.1fus max=%.1fus | connect->last p50=%.1fus p99=%.1fus | close->last disconnect "
        "p50=%.1fus p99=%.1fus (failures=%d)\n",
        static_cast<long long>(n), samples.size(), percentile(reg, 0.5), percentile(reg, 0.9),
        percentile(reg, 0.99), mx(reg), percentile(con, 0.5), percentile(con, 0.99),
        percentile(disc, 0.5), percentile(disc, 0.99), failures);
    if (engine_cpu_us_round >= 0)
      std::printf("  engine CPU %.1f us per round (%.2f us per handler invocation)\n",
                  engine_cpu_us_round, engine_cpu_us_round / (2.0 * n));
    std::printf(
        "{\"bench\":\"fanout\",\"fanout\":%lld,\"rounds\":%zu,\"p50_us\":%.1f,\"p90_us\":%.1f,"
        "\"p99_us\":%.1f,\"max_us\":%.1f,\"connect_p50_us\":%.1f,\"connect_p99_us\":%.1f,"
        "\"disconnect_p50_us\":%.1f,\"disconnect_p99_us\":%.1f,\"engine_cpu_us_per_round\":%.1f,"
        "\"failures\":%d}\n",
        static_cast<long long>(n), samples.size(), percentile(reg, 0.5), percentile(reg, 0.9),
        percentile(reg, 0.99), mx(reg), percentile(con, 0.5), percentile(con, 0.99),
        percentile(disc, 0.5), percentile(disc, 0.99), engine_cpu_us_round, failures);
    std::fflush(stdout);
    if (failures) exit_code = 1;
    worker->shutdown();
    // Let the engine drop this worker's functions and triggers before the next N registers.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return exit_code;
}
