// Stream fan-out benchmark: one setter, N WebSocket stream subscribers on one group.
//
//   stream_fanout_bench --url ws://127.0.0.1:49700 --stream-url ws://127.0.0.1:49701/
//                       --subscribers 1,100,1000 [--rate 0] [--inflight 64] [--flow delivered]
//
// N raw Beast WebSocket clients (spread over --io-threads threads) connect to the iii-stream
// server and join `bench/<group>` (a fresh group per measurement). One SDK client calls
// `stream::set {stream_name: bench, group_id, item_id: i<seq % items>, data}` with
// `data = {bench_seq, bench_t, pad}`; bench_t is this process's steady clock in ns just before
// the call, so the latency of a delivery is (arrival time at the subscriber - bench_t): set
// request -> engine -> store -> fan-out -> subscriber socket.
//
// Pacing (--rate): 0 = closed loop, i.e. as fast as the window allows; R > 0 = one set every
// 1/R s from a pacer thread. --events-rate E instead paces at E/N sets/s, i.e. an offered load
// of E events/s summed over the N subscribers (open loop; if the window is full the pacer waits and
// the run reports it as `late`). The window (--inflight W) counts sets that are not finished, where
// --flow says when a set is finished:
//   delivered (default)  its ack arrived and every subscriber received its event, so the
//                        setter can never outrun the subscribers (sustainable throughput);
//   ack                  its `stream::set` ack arrived (delivery may lag behind; queues grow).
//
// Reported per N: events delivered per second summed over subscribers, sets per second, p50/
// p90/p99/max set-to-delivery latency, ack latency, engine CPU per thread (with --engine-pid)
// and this process's CPU. Human line + JSON line.
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: stream_fanout_bench [--url ws://127.0.0.1:49700] [--stream-url ws://127.0.0.1:49701/]\n"
    "         [--subscribers N[,N...]] [--rate SETS_PER_S[,...] | --events-rate "
    "EVENTS_PER_S[,...]]\n"
    "         [--inflight W] [--flow delivered|ack]\n"
    "         [--duration-s S] [--warmup-s S] [--io-threads T] [--items K] [--payload-bytes B]\n"
    "         [--engine-pid PID] [--stream-name bench] [--drain-timeout-s S]\n";

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Parses the integer after `key` (e.g. "\"bench_seq\":") in a frame, or returns -1.
int64_t find_int(std::string_view s, std::string_view key) {
  const auto p = s.find(key);
  if (p == std::string_view::npos) return -1;
  int64_t v = 0;
  bool any = false;
  for (size_t i = p + key.size(); i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    v = v * 10 + (s[i] - '0');
    any = true;
  }
  return any ? v : -1;
}

struct alignas(64) ThreadStats {
  int64_t delivered_window = 0;
  int64_t delivered_total = 0;
  int64_t read_errors = 0;
  std::string first_error;
  std::vector<int64_t> latency_ns;  // deliveries in the window whose set started in the window
};

struct Run;

struct Subscriber {
  Subscriber(asio::io_context& io, ThreadStats* s) : ws(io), stats(s) {}
  websocket::stream<tcp::socket> ws;
  beast::flat_buffer buf;
  ThreadStats* stats;
  Run* run = nullptr;
};

struct Run {
  int64_t subscribers = 0;
  bool flow_delivered = true;
  int64_t window = 64;
  double rate = 0;
  int64_t items = 100;
  std::string group;
  std::string pad;
  iii::III* setter = nullptr;
  int64_t measure_start_ns = 0, measure_end_ns = 0;

  static constexpr size_t kRing = 1 << 20;
  std::unique_ptr<std::atomic<int32_t>[]> remaining { new std::atomic<int32_t>[ kRing ] };
  std::atomic<int64_t> next_seq{0};

  // Setter-side results; touched only on the SDK I/O thread.
  int64_t acked_window = 0, errors = 0;
  std::string first_error;
  std::vector<int64_t> ack_latency_ns;

  // Closed loop: lanes still running. Paced: window tokens.
  std::atomic<int64_t> lanes_active{0};
  std::promise<void> done;
  std::atomic<bool> done_set{false};
  std::counting_semaphore<1 << 20> tokens{0};
  std::atomic<int64_t> late{0};

  void finish() {
    if (!done_set.exchange(true)) done.set_value();
  }

  void issue() {
    const int64_t seq = next_seq.fetch_add(1);
    remaining[seq % kRing].store(flow_delivered ? static_cast<int32_t>(subscribers) + 1 : 1);
    iii::TriggerRequest req;
    req.function_id = "stream::set";
    const int64_t t0 = now_ns();
    req.payload =
        json::object{{"stream_name", "bench"},
                     {"group_id", group},
                     {"item_id", "i" + std::to_string(seq % items)},
                     {"data", json::object{{"bench_seq", seq}, {"bench_t", t0}, {"pad", pad}}}};
    setter->trigger_async(req, [this, seq, t0](iii::TriggerOutcome o) {
      const int64_t t1 = now_ns();
      if (!o.ok()) {
        if (errors++ == 0) first_error = o.error->what();
        // No event was published for a failed set: nothing more will arrive for it.
        if (remaining[seq % kRing].exchange(0) > 0) slot_free();
        return;
      }
      if (t1 >= measure_start_ns && t1 <= measure_end_ns) {
        ++acked_window;
        if (t0 >= measure_start_ns) ack_latency_ns.push_back(t1 - t0);
      }
      release(seq);
    });
  }

  void release(int64_t seq) {
    if (remaining[seq % kRing].fetch_sub(1) == 1) slot_free();
  }

  void slot_free() {
    if (rate > 0) {
      tokens.release();
      return;
    }
    if (now_ns() < measure_end_ns)
      issue();
    else if (lanes_active.fetch_sub(1) == 1)
      finish();
  }

  // On a subscriber's I/O thread.
  void delivered(ThreadStats& st, std::string_view frame) {
    const int64_t t1 = now_ns();
    const int64_t seq = find_int(frame, "\"bench_seq\":");
    const int64_t t0 = find_int(frame, "\"bench_t\":");
    if (seq < 0 || t0 < 0) return;  // the sync frame
    ++st.delivered_total;
    if (t1 >= measure_start_ns && t1 <= measure_end_ns) {
      ++st.delivered_window;
      if (t0 >= measure_start_ns) st.latency_ns.push_back(t1 - t0);
    }
    if (flow_delivered) release(seq);
  }
};

void read_loop(Subscriber* s) {
  s->ws.async_read(s->buf, [s](beast::error_code ec, size_t) {
    if (ec) {
      if (ec != asio::error::operation_aborted && ec != websocket::error::closed &&
          s->stats->read_errors++ == 0)
        s->stats->first_error = ec.message();
      return;
    }
    const auto data = s->buf.cdata();
    s->run->delivered(*s->stats,
                      std::string_view(static_cast<const char*>(data.data()), data.size()));
    s->buf.consume(s->buf.size());
    read_loop(s);
  });
}

struct Endpoint {
  std::string host, port, path;
};

Endpoint parse_ws_url(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("ws://", 0) == 0) rest = rest.substr(5);
  Endpoint e;
  const auto slash = rest.find('/');
  e.path = slash == std::string::npos ? "/" : rest.substr(slash);
  const std::string hostport = rest.substr(0, slash);
  const auto colon = hostport.rfind(':');
  e.host = hostport.substr(0, colon);
  e.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  return e;
}

bool wait_for_function(iii::III& c, const std::string& id) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    try {
      iii::TriggerRequest probe;
      probe.function_id = id;
      probe.payload = json::object{{"stream_name", "bench-probe"}, {"group_id", "p"}};
      probe.timeout_ms = 2000;
      c.trigger(probe);
      return true;
    } catch (const std::exception& e) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(
      argc, argv,
      {"--url", "--stream-url", "--subscribers", "--rate", "--events-rate", "--inflight", "--flow",
       "--duration-s", "--warmup-s", "--io-threads", "--items", "--payload-bytes", "--engine-pid",
       "--stream-name", "--drain-timeout-s"},
      kUsage);
  const std::string url = flags.str("--url", "ws://127.0.0.1:49700");
  // Several comma-separated URLs (engines sharing one Redis): subscriber i joins on URL i % n.
  std::vector<Endpoint> stream_eps;
  {
    const std::string urls = flags.str("--stream-url", "ws://127.0.0.1:49701/");
    size_t start = 0;
    for (;;) {
      const size_t comma = urls.find(',', start);
      stream_eps.push_back(parse_ws_url(urls.substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  const auto subscriber_counts = flags.list("--subscribers", {1, 100, 1000});
  const auto events_rates = flags.list("--events-rate", {});
  const bool per_event_rate = !events_rates.empty();
  const auto rates = per_event_rate ? events_rates : flags.list("--rate", {0});
  const int64_t window = flags.integer("--inflight", 64);
  const std::string flow = flags.str("--flow", "delivered");
  if (flow != "delivered" && flow != "ack") flags.fail("--flow must be delivered or ack");
  const double duration_s = flags.num("--duration-s", 5);
  const double warmup_s = flags.num("--warmup-s", 1);
  const int io_threads = static_cast<int>(flags.integer("--io-threads", 2));
  const int64_t items = flags.integer("--items", 100);
  const int64_t payload_bytes = flags.integer("--payload-bytes", 0);
  const int engine_pid = static_cast<int>(flags.integer("--engine-pid", 0));
  const double drain_timeout_s = flags.num("--drain-timeout-s", 15);
  if (window < 1 || window > (1 << 19) || io_threads < 1 || items < 1 || duration_s <= 0)
    flags.fail("invalid --inflight/--io-threads/--items/--duration-s");
  const rlim_t nofile = bench::raise_nofile();

  iii::InitOptions sopts;
  sopts.worker_name = "bench-stream-setter";
  sopts.invocation_timeout_ms = 60000;
  auto setter = iii::register_worker(url, sopts);
  if (!setter->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", url.c_str(), setter->last_error().c_str());
    return 1;
  }
  if (!wait_for_function(*setter, "stream::list")) {
    std::fprintf(stderr, "stream::list is not callable: is iii-stream configured?\n");
    return 1;
  }

  int exit_code = 0;
  int run_no = 0;
  for (int64_t rate_flag : rates) {
    for (int64_t n : subscriber_counts) {
      const int64_t rate =
          per_event_rate ? std::max<int64_t>(1, (rate_flag + n - 1) / n) : rate_flag;
      if (static_cast<rlim_t>(n) + 64 > nofile) {
        std::fprintf(stderr, "RLIMIT_NOFILE %llu is too low for %lld subscribers\n",
                     static_cast<unsigned long long>(nofile), static_cast<long long>(n));
        return 1;
      }
      auto run = std::make_shared<Run>();  // leaked into late callbacks if a drain times out
      run->subscribers = n;
      run->flow_delivered = flow == "delivered";
      run->window = window;
      run->rate = static_cast<double>(rate);
      run->items = items;
      run->group = "g" + std::to_string(getpid()) + "-" + std::to_string(run_no++);
      run->pad = std::string(static_cast<size_t>(payload_bytes), 'x');
      run->setter = setter.get();

      // Subscribers: connect, upgrade, join and read the sync reply synchronously, so every
      // one is in the group before the first set.
      std::vector<std::unique_ptr<asio::io_context>> ios;
      std::vector<std::unique_ptr<ThreadStats>> stats;
      for (int t = 0; t < io_threads; ++t) {
        ios.push_back(std::make_unique<asio::io_context>(1));
        stats.push_back(std::make_unique<ThreadStats>());
        stats.back()->latency_ns.reserve(1 << 20);
      }
      std::vector<std::unique_ptr<Subscriber>> subs;
      const auto connect_start = Clock::now();
      try {
        tcp::resolver resolver(*ios[0]);
        std::vector<tcp::resolver::results_type> resolved;
        for (const auto& ep : stream_eps) resolved.push_back(resolver.resolve(ep.host, ep.port));
        const std::string join_prefix =
            "{\"type\":\"join\",\"data\":{\"streamName\":\"bench\",\"groupId\":\"" + run->group +
            "\",\"subscriptionId\":\"s";
        for (int64_t i = 0; i < n; ++i) {
          const int t = static_cast<int>(i % io_threads);
          auto s = std::make_unique<Subscriber>(*ios[t], stats[t].get());
          s->run = run.get();
          const Endpoint& stream_ep = stream_eps[i % stream_eps.size()];
          asio::connect(s->ws.next_layer(), resolved[i % stream_eps.size()]);
          s->ws.next_layer().set_option(tcp::no_delay(true));
          s->ws.read_message_max(64 << 20);
          s->ws.handshake(stream_ep.host + ":" + stream_ep.port, stream_ep.path);
          s->ws.text(true);
          s->ws.write(asio::buffer(join_prefix + std::to_string(i) + "\"}}"));
          s->ws.read(s->buf);  // the sync wrapper
          s->buf.consume(s->buf.size());
          subs.push_back(std::move(s));
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "subscriber %zu: %s\n", subs.size(), e.what());
        return 1;
      }
      const double connect_s = std::chrono::duration<double>(Clock::now() - connect_start).count();
      for (auto& s : subs) read_loop(s.get());
      std::vector<std::thread> threads;
      for (auto& io : ios) threads.emplace_back([io = io.get()] { io->run(); });

      const int64_t start = now_ns();
      run->measure_start_ns = start + static_cast<int64_t>(warmup_s * 1e9);
      run->measure_end_ns = run->measure_start_ns + static_cast<int64_t>(duration_s * 1e9);
      auto finished = run->done.get_future();
      std::thread pacer;
      if (rate > 0) {
        run->tokens.release(window);
        pacer = std::thread([run] {
          const double period_ns = 1e9 / run->rate;
          const int64_t t_start = now_ns();
          for (int64_t i = 0;; ++i) {
            const int64_t target = t_start + static_cast<int64_t>(i * period_ns);
            if (target >= run->measure_end_ns) break;
            std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(target)));
            if (!run->tokens.try_acquire()) {
              run->late.fetch_add(1);
              run->tokens.acquire();
            }
            run->issue();
          }
          // Drain: every token back means every set finished.
          for (int64_t i = 0; i < run->window; ++i) run->tokens.acquire();
          run->finish();
        });
      } else {
        run->lanes_active = window;
        for (int64_t i = 0; i < window; ++i) run->issue();
      }

      std::this_thread::sleep_until(
          Clock::time_point(std::chrono::nanoseconds(run->measure_start_ns)));
      const auto cpu0 =
          engine_pid ? bench::thread_cpu(engine_pid) : std::map<int, bench::ThreadCpu>{};
      const double self0 = bench::self_cpu_seconds();
      std::this_thread::sleep_until(
          Clock::time_point(std::chrono::nanoseconds(run->measure_end_ns)));
      const auto cpu1 =
          engine_pid ? bench::thread_cpu(engine_pid) : std::map<int, bench::ThreadCpu>{};
      const double self1 = bench::self_cpu_seconds();
      const int64_t rss_kib = engine_pid ? bench::proc_status_kib(engine_pid, "VmRSS") : -1;

      const bool drained = finished.wait_for(std::chrono::duration<double>(drain_timeout_s)) ==
                           std::future_status::ready;
      if (pacer.joinable()) {
        if (drained)
          pacer.join();
        else
          pacer.detach();
      }
      // Stop the subscribers (the engine sees the TCP connections drop).
      for (auto& io : ios) io->stop();
      for (auto& t : threads) t.join();

      int64_t delivered = 0, delivered_total = 0, read_errors = 0;
      std::string read_error;
      std::vector<int64_t> lat;
      for (auto& st : stats) {
        delivered += st->delivered_window;
        delivered_total += st->delivered_total;
        read_errors += st->read_errors;
        if (read_error.empty()) read_error = st->first_error;
        lat.insert(lat.end(), st->latency_ns.begin(), st->latency_ns.end());
      }
      std::sort(lat.begin(), lat.end());
      // The setter's I/O thread may still touch ack_latency_ns if the drain timed out.
      std::vector<int64_t> ack = drained ? run->ack_latency_ns : std::vector<int64_t>{};
      std::sort(ack.begin(), ack.end());
      const double events_per_s = delivered / duration_s;
      const double sets_per_s = run->acked_window / duration_s;
      const double p50 = bench::percentile(lat, 0.5) / 1e3, p90 = bench::percentile(lat, 0.9) / 1e3,
                   p99 = bench::percentile(lat, 0.99) / 1e3,
                   max_us = lat.empty() ? 0 : lat.back() / 1e3;
      const double ack_p50 = bench::percentile(ack, 0.5) / 1e3,
                   ack_p99 = bench::percentile(ack, 0.99) / 1e3;
      double engine_cpu_pct = 0;
      const std::string engine_threads =
          engine_pid ? bench::cpu_delta(cpu0, cpu1, duration_s, &engine_cpu_pct) : "";
      const double self_cpu_pct = 100.0 * (self1 - self0) / duration_s;
      const int64_t expected = static_cast<int64_t>(run->next_seq.load()) * n;

      std::printf(
          "stream fan-out subscribers=%lld rate=%s flow=%s inflight=%lld: %.0f events/s "
          "(%.0f sets/s)  delivery p50=%.0fus p90=%.0fus p99=%.0fus max=%.0fus  ack p50=%.0fus "
          "p99=%.0fus  engine cpu=%.0f%% [%s] bench cpu=%.0f%%  rss=%lldKiB  late=%lld "
          "errors=%lld read_errors=%lld drained=%s delivered=%lld/%lld connect=%.2fs\n",
          static_cast<long long>(n), rate ? std::to_string(rate).c_str() : "max", flow.c_str(),
          static_cast<long long>(window), events_per_s, sets_per_s, p50, p90, p99, max_us, ack_p50,
          ack_p99, engine_cpu_pct, engine_threads.c_str(), self_cpu_pct,
          static_cast<long long>(rss_kib), static_cast<long long>(run->late.load()),
          static_cast<long long>(run->errors), static_cast<long long>(read_errors),
          drained ? "yes" : "no", static_cast<long long>(delivered_total),
          static_cast<long long>(expected), connect_s);
      if (run->errors) std::printf("  first set error: %s\n", run->first_error.c_str());
      if (read_errors) std::printf("  first subscriber error: %s\n", read_error.c_str());
      std::printf(
          "{\"bench\":\"stream_fanout\",\"subscribers\":%lld,\"rate\":%lld,\"offered_events_per_"
          "s\":%lld,\"flow\":\"%s\","
          "\"inflight\":%lld,\"payload_bytes\":%lld,\"duration_s\":%g,\"events\":%lld,"
          "\"events_per_s\":%.1f,\"sets_per_s\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
          "\"p99_us\":%.1f,\"max_us\":%.1f,\"ack_p50_us\":%.1f,\"ack_p99_us\":%.1f,"
          "\"engine_cpu_pct\":%.1f,\"engine_threads\":%s,\"bench_cpu_pct\":%.1f,"
          "\"engine_rss_kib\":%lld,\"late\":%lld,\"errors\":%lld,\"read_errors\":%lld,"
          "\"drained\":%s}\n",
          static_cast<long long>(n), static_cast<long long>(rate), static_cast<long long>(rate * n),
          flow.c_str(), static_cast<long long>(window), static_cast<long long>(payload_bytes),
          duration_s, static_cast<long long>(delivered), events_per_s, sets_per_s, p50, p90, p99,
          max_us, ack_p50, ack_p99, engine_cpu_pct, bench::quote(engine_threads).c_str(),
          self_cpu_pct, static_cast<long long>(rss_kib), static_cast<long long>(run->late.load()),
          static_cast<long long>(run->errors), static_cast<long long>(read_errors),
          drained ? "true" : "false");
      std::fflush(stdout);
      if (run->errors || read_errors || !drained) exit_code = 1;
      subs.clear();
      if (!drained) {
        // Late callbacks may still reference the run; keep it alive.
        new std::shared_ptr<Run>(run);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the engine reap
    }
  }
  setter->shutdown();
  return exit_code;
}
