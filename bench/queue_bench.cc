// iii-queue benchmark: enqueue -> handler throughput and latency, and memory with a deep queue.
//
//   queue_bench --url ws://127.0.0.1:49700 --mode flow --queues c1,c64 [--value-bytes 1024]
//               [--duration-s 5] [--warmup-s 1] [--engine-pid PID] [--broker-pid PID]
//               [--label TEXT] [--groups N] [--also-url ws://... --also-pid PID]
//               [--closed 1]
//   queue_bench --url ... --mode fill --queues deep --messages 1000000 [--value-bytes 1024]
//               [--engine-pid PID]
//
// flow: one SDK client registers `bench::queue_sink` (an async handler that answers at once)
// and keeps as many enqueues in flight as the queue's `concurrency` (read from the queue name:
// `c64` or `f64` -> 64), each with its send time in the payload. --groups N adds a FIFO message
// group `g` (g0 .. g<N-1>, round robin) to the payload, for a FIFO queue with
// `message_group_field: g`. --also-url registers the same handler on a second engine (sharing
// the broker), so both consume; --also-pid adds that engine's CPU to the engine figure.
// --closed 1: each lane enqueues its next message when the handler ran (not when the enqueue is
// acknowledged), so at most `concurrency` messages are queued and producing cannot outrun
// consuming: the rate is the consumers', latency is not a backlog, and CPU per message covers
// one enqueue and one handling each. Throughput
// = handler runs per second in the window; latency = handler start - enqueue send (same clock, same
// process), p50/p99. Bytes written per message = the engine's /proc/<pid>/io write_bytes over the
// window / runs. CPU per message = the engine's (and, with --broker-pid, the broker's:
// rabbitmq-server's beam.smp, redis-server) user+system CPU time over the window / runs: on a
// loaded machine this is the figure to compare, not msgs/s. fill: registers a handler that never
// answers (so one message is in flight and the rest stay queued), enqueues --messages messages 64
// at a time, then reports the engine's RSS. Human line + JSON line per run.
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: queue_bench [--url ws://127.0.0.1:49700] [--mode flow|fill] [--queues q[,q...]]\n"
    "         [--value-bytes B] [--messages N] [--duration-s S] [--warmup-s S]\n"
    "         [--engine-pid PID] [--broker-pid PID] [--label TEXT] [--groups N]\n"
    "         [--also-url URL] [--also-pid PID]\n";

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Flow {
  iii::III* client = nullptr;
  std::string queue;
  std::string value;
  int64_t measure_start = 0, measure_end = 0;
  std::mutex mu;
  std::vector<int64_t> latencies_ns;
  std::atomic<int64_t> runs_in_window{0}, errors{0}, sent{0};
  int64_t groups = 0;
  bool closed = false;
  std::string first_error;
  std::atomic<int64_t> lanes{0};
  std::promise<void> done;
};

Flow* g_flow = nullptr;

void enqueue(Flow* f) {
  if (now_ns() >= f->measure_end) {
    if (f->lanes.fetch_sub(1) == 1) f->done.set_value();
    return;
  }
  iii::TriggerRequest req;
  req.function_id = "bench::queue_sink";
  json::object payload{{"t", now_ns()}, {"v", f->value}};
  const int64_t n = f->sent.fetch_add(1);
  if (f->groups > 0) payload["g"] = "g" + std::to_string(n % f->groups);
  req.payload = std::move(payload);
  req.action = iii::TriggerAction::Enqueue(f->queue);
  f->client->trigger_async(req, [f](iii::TriggerOutcome o) {
    if (!o.ok()) {
      std::lock_guard lock(f->mu);
      if (f->errors++ == 0) f->first_error = o.error->what();
    }
    if (!f->closed || !o.ok()) enqueue(f);
  });
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv,
                     {"--url", "--mode", "--queues", "--value-bytes", "--messages", "--duration-s",
                      "--warmup-s", "--engine-pid", "--broker-pid", "--label", "--groups",
                      "--also-url", "--also-pid", "--closed"},
                     kUsage);
  const std::string url = flags.str("--url", "ws://127.0.0.1:49700");
  const std::string mode = flags.str("--mode", "flow");
  const auto queues = flags.words("--queues", {"c1", "c64"});
  const int64_t value_bytes = flags.integer("--value-bytes", 1024);
  const int64_t messages = flags.integer("--messages", 1000000);
  const double duration_s = flags.num("--duration-s", 5);
  const double warmup_s = flags.num("--warmup-s", 1);
  const int engine_pid = static_cast<int>(flags.integer("--engine-pid", 0));
  const int broker_pid = static_cast<int>(flags.integer("--broker-pid", 0));
  const std::string label = flags.str("--label", "");
  const int64_t groups = flags.integer("--groups", 0);
  const std::string also_url = flags.str("--also-url", "");
  const int also_pid = static_cast<int>(flags.integer("--also-pid", 0));
  const bool closed = flags.integer("--closed", 0) != 0;
  if (mode != "flow" && mode != "fill") flags.fail("--mode must be flow or fill");

  iii::InitOptions opts;
  opts.worker_name = "bench-queue";
  opts.invocation_timeout_ms = 600000;
  auto client = iii::register_worker(url, opts);
  if (!client->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", url.c_str(), client->last_error().c_str());
    return 1;
  }
  // {"t":<ns>,"v":"xxx"} is about value_bytes bytes.
  const std::string value(static_cast<size_t>(std::max<int64_t>(0, value_bytes - 30)), 'x');

  if (mode == "fill") {
    std::vector<iii::Responder> held;
    std::mutex held_mu;
    client->register_function("bench::queue_sink",
                              iii::AsyncHandler([&](const json::value&, iii::Responder r) {
                                std::lock_guard lock(held_mu);
                                held.push_back(std::move(r));  // never answered
                              }));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int64_t rss0 = engine_pid ? bench::proc_status_kib(engine_pid, "VmRSS") : -1;
    std::atomic<int64_t> next{0}, errors{0};
    std::atomic<int64_t> lanes{64};
    std::promise<void> done;
    std::function<void()> issue = [&] {
      if (next.fetch_add(1) >= messages) {
        if (lanes.fetch_sub(1) == 1) done.set_value();
        return;
      }
      iii::TriggerRequest req;
      req.function_id = "bench::queue_sink";
      req.payload = json::object{{"t", now_ns()}, {"v", value}};
      req.action = iii::TriggerAction::Enqueue(queues.front());
      client->trigger_async(req, [&](iii::TriggerOutcome o) {
        if (!o.ok()) errors++;
        issue();
      });
    };
    const auto t0 = Clock::now();
    for (int i = 0; i < 64; ++i) issue();
    done.get_future().wait();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const int64_t rss = engine_pid ? bench::proc_status_kib(engine_pid, "VmRSS") : -1;
    const int64_t hwm = engine_pid ? bench::proc_status_kib(engine_pid, "VmHWM") : -1;
    std::printf(
        "queue fill %s: %lld messages of %lldB in %.1fs (%.0f/s), engine rss before=%lldKiB "
        "after=%lldKiB peak=%lldKiB errors=%lld\n",
        label.c_str(), static_cast<long long>(messages), static_cast<long long>(value_bytes), secs,
        messages / secs, static_cast<long long>(rss0), static_cast<long long>(rss),
        static_cast<long long>(hwm), static_cast<long long>(errors.load()));
    std::printf(
        "{\"bench\":\"queue_fill\",\"label\":%s,\"messages\":%lld,\"value_bytes\":%lld,"
        "\"seconds\":%.2f,\"engine_rss_kib\":%lld,\"engine_hwm_kib\":%lld,\"errors\":%lld}\n",
        bench::quote(label).c_str(), static_cast<long long>(messages),
        static_cast<long long>(value_bytes), secs, static_cast<long long>(rss),
        static_cast<long long>(hwm), static_cast<long long>(errors.load()));
    std::fflush(stdout);
    std::_Exit(errors ? 1 : 0);  // the held invocations are never answered
  }

  auto sink = iii::AsyncHandler([](const json::value& payload, iii::Responder r) {
    const int64_t t1 = now_ns();
    Flow* f = g_flow;
    if (f && payload.is_object()) {
      const auto* t = payload.get_object().if_contains("t");
      if (t && t->is_int64() && t1 >= f->measure_start && t1 <= f->measure_end) {
        f->runs_in_window++;
        if (t->get_int64() >= f->measure_start) {
          std::lock_guard lock(f->mu);
          f->latencies_ns.push_back(t1 - t->get_int64());
        }
      }
      if (f->closed) enqueue(f);  // this lane's next message
    }
    r.ok();
  });
  client->register_function("bench::queue_sink", sink);
  std::shared_ptr<iii::III> also;
  if (!also_url.empty()) {
    opts.worker_name = "bench-queue-2";
    also = iii::register_worker(also_url, opts);
    if (!also->wait_connected(std::chrono::seconds(10))) {
      std::fprintf(stderr, "cannot connect to %s: %s\n", also_url.c_str(),
                   also->last_error().c_str());
      return 1;
    }
    also->register_function("bench::queue_sink", sink);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int exit_code = 0;
  for (const auto& q : queues) {
    const int64_t c = q.size() > 1 && (q[0] == 'c' || q[0] == 'f') ? std::stoll(q.substr(1)) : 1;
    auto f = std::make_unique<Flow>();
    f->client = client.get();
    f->queue = q;
    f->value = value;
    f->groups = groups;
    f->closed = closed;
    f->latencies_ns.reserve(1 << 22);
    f->measure_start = now_ns() + int64_t(warmup_s * 1e9);
    f->measure_end = f->measure_start + int64_t(duration_s * 1e9);
    g_flow = f.get();
    f->lanes = c;
    auto finished = f->done.get_future();
    for (int64_t i = 0; i < c; ++i) enqueue(f.get());
    std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(f->measure_start)));
    const int64_t w0 = engine_pid ? bench::proc_io(engine_pid, "write_bytes") : 0;
    const double self0 = bench::self_cpu_seconds();
    const int64_t cpu0 =
        (engine_pid ? bench::cpu_ns(engine_pid) : 0) + (also_pid ? bench::cpu_ns(also_pid) : 0);
    const int64_t bcpu0 = broker_pid ? bench::cpu_ns(broker_pid) : 0;
    std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(f->measure_end)));
    const int64_t w1 = engine_pid ? bench::proc_io(engine_pid, "write_bytes") : 0;
    const double self1 = bench::self_cpu_seconds();
    const int64_t cpu1 =
        (engine_pid ? bench::cpu_ns(engine_pid) : 0) + (also_pid ? bench::cpu_ns(also_pid) : 0);
    const int64_t bcpu1 = broker_pid ? bench::cpu_ns(broker_pid) : 0;
    finished.wait();
    // Let the queue drain (a backlog would be counted in the next run's window).
    for (int i = 0; i < 600; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      try {
        iii::TriggerRequest st;
        st.function_id = "engine::queue::topic_stats";
        st.payload = json::object{{"topic", q}};
        auto r = client->trigger(st);
        const auto* d = r && r->is_object() ? r->get_object().if_contains("depth") : nullptr;
        if (d && d->is_int64() && d->get_int64() == 0) break;
      } catch (const std::exception&) {
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    g_flow = nullptr;
    std::vector<int64_t> lat;
    {
      std::lock_guard lock(f->mu);
      lat = f->latencies_ns;
    }
    std::sort(lat.begin(), lat.end());
    const double per_s = f->runs_in_window / duration_s;
    const double p50 = bench::percentile(lat, 0.5) / 1e3, p99 = bench::percentile(lat, 0.99) / 1e3;
    const double bytes_per = f->runs_in_window ? double(w1 - w0) / f->runs_in_window : 0;
    const double engine_pct = 100.0 * double(cpu1 - cpu0) / 1e9 / duration_s;
    const double self_pct = 100.0 * (self1 - self0) / duration_s;
    const double runs = double(std::max<int64_t>(1, f->runs_in_window));
    const double engine_us_per = double(cpu1 - cpu0) / 1e3 / runs;
    const double broker_us_per = double(bcpu1 - bcpu0) / 1e3 / runs;
    const int64_t rss = engine_pid ? bench::proc_status_kib(engine_pid, "VmRSS") : -1;
    std::printf(
        "queue %s %s concurrency=%lld value=%lldB: %.0f msgs/s  enqueue->handler p50=%.1fus "
        "p99=%.1fus  written=%.0fB/msg engine cpu=%.0f%% (%.1fus/msg) broker cpu=%.1fus/msg "
        "bench cpu=%.0f%% rss=%lldKiB (samples=%zu errors=%lld)\n",
        label.c_str(), q.c_str(), static_cast<long long>(c), static_cast<long long>(value_bytes),
        per_s, p50, p99, bytes_per, engine_pct, engine_us_per, broker_us_per, self_pct,
        static_cast<long long>(rss), lat.size(), static_cast<long long>(f->errors.load()));
    if (f->errors) std::printf("  first error: %s\n", f->first_error.c_str());
    std::printf(
        "{\"bench\":\"queue\",\"label\":%s,\"queue\":\"%s\",\"concurrency\":%lld,"
        "\"value_bytes\":%lld,\"msgs_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
        "\"write_bytes_per_msg\":%.0f,\"engine_cpu_pct\":%.1f,\"engine_cpu_us_per_msg\":%.1f,"
        "\"broker_cpu_us_per_msg\":%.1f,\"engine_rss_kib\":%lld,\"errors\":%lld}\n",
        bench::quote(label).c_str(), q.c_str(), static_cast<long long>(c),
        static_cast<long long>(value_bytes), per_s, p50, p99, bytes_per, engine_pct, engine_us_per,
        broker_us_per, static_cast<long long>(rss), static_cast<long long>(f->errors.load()));
    std::fflush(stdout);
    if (f->errors) exit_code = 1;
  }
  if (also) also->shutdown();
  client->shutdown();
  return exit_code;
}
