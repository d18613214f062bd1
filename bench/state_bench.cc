// iii-state throughput/latency benchmark: `state::set` / `state::get` with C calls in flight.
//
//   state_bench --url ws://127.0.0.1:49700 --op set,get --concurrency 1,64 [--value-bytes 100]
//               [--keys 10000] [--scopes 10] [--duration-s 5] [--warmup-s 1] [--engine-pid PID]
//
// One SDK client keeps C calls in flight; each completion issues the next call from the SDK
// I/O thread (no thread hop), like invoke_bench. Keys cycle over --keys keys spread over
// --scopes scopes (`bench-<s>` / `k<i>`), so after the first pass every set overwrites an
// existing item. `get` first fills the whole key space (concurrency 64) so that every get hits.
// The engine's storage adapter (in_memory / file_based) is whatever the engine was started
// with; run it once per config. Human line + JSON line per (op, concurrency).
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: state_bench [--url ws://127.0.0.1:49700] [--op set|get[,...]] [--concurrency "
    "N[,N...]]\n"
    "         [--value-bytes B] [--keys K] [--scopes S] [--duration-s S] [--warmup-s S]\n"
    "         [--engine-pid PID] [--label TEXT]\n";

struct Run {
  iii::III* client = nullptr;
  std::string op;
  int64_t keys = 0, scopes = 1;
  std::string value;
  Clock::time_point measure_start, measure_end;
  std::atomic<int64_t> next{0};  // key counter
  std::vector<int64_t> latencies_ns;
  int64_t completed_in_window = 0, errors = 0, misses = 0;
  std::string first_error;
  std::atomic<int64_t> lanes_active{0};
  std::promise<void> done;
  // Fill mode: stop after `limit` calls instead of at measure_end.
  int64_t limit = -1;
};

void issue(Run* run) {
  // The first call of each lane comes from the main thread, later ones from completions.
  const int64_t i = run->next.fetch_add(1);
  if (run->limit >= 0 && i >= run->limit) {
    if (run->lanes_active.fetch_sub(1) == 1) run->done.set_value();
    return;
  }
  const int64_t k = i % run->keys;
  iii::TriggerRequest req;
  req.function_id = run->op == "set" ? "state::set" : "state::get";
  json::object p{{"scope", "bench-" + std::to_string(k % run->scopes)},
                 {"key", "k" + std::to_string(k)}};
  if (run->op == "set") p["value"] = json::object{{"v", run->value}};
  req.payload = std::move(p);
  const auto t0 = Clock::now();
  run->client->trigger_async(req, [run, t0](iii::TriggerOutcome o) {
    const auto t1 = Clock::now();
    if (!o.ok()) {
      if (run->errors++ == 0) run->first_error = o.error->what();
    } else {
      if (run->op == "get" && !o.result) ++run->misses;
      if (t1 >= run->measure_start && t1 <= run->measure_end) {
        ++run->completed_in_window;
        if (t0 >= run->measure_start)
          run->latencies_ns.push_back(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      }
    }
    if (run->limit >= 0 || t1 < run->measure_end)
      issue(run);
    else if (run->lanes_active.fetch_sub(1) == 1)
      run->done.set_value();
  });
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv,
                     {"--url", "--op", "--concurrency", "--value-bytes", "--keys", "--scopes",
                      "--duration-s", "--warmup-s", "--engine-pid", "--label"},
                     kUsage);
  const std::string url = flags.str("--url", "ws://127.0.0.1:49700");
  const auto ops = flags.words("--op", {"set", "get"});
  const auto concurrency = flags.list("--concurrency", {1, 64});
  const int64_t value_bytes = flags.integer("--value-bytes", 100);
  const int64_t keys = flags.integer("--keys", 10000);
  const int64_t scopes = flags.integer("--scopes", 10);
  const double duration_s = flags.num("--duration-s", 5);
  const double warmup_s = flags.num("--warmup-s", 1);
  const int engine_pid = static_cast<int>(flags.integer("--engine-pid", 0));
  const std::string label = flags.str("--label", "");
  for (const auto& op : ops)
    if (op != "set" && op != "get") flags.fail("--op must be set or get");
  for (auto c : concurrency)
    if (c < 1) flags.fail("--concurrency must be >= 1");
  if (keys < 1 || scopes < 1 || duration_s <= 0) flags.fail("invalid --keys/--scopes/--duration-s");

  iii::InitOptions opts;
  opts.worker_name = "bench-state";
  opts.invocation_timeout_ms = 60000;
  auto client = iii::register_worker(url, opts);
  if (!client->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", url.c_str(), client->last_error().c_str());
    return 1;
  }
  // The JSON value {"v": "xxx..."} serialises to value_bytes bytes.
  const std::string value(static_cast<size_t>(std::max<int64_t>(0, value_bytes - 8)), 'x');

  bool filled = false;
  int exit_code = 0;
  for (const auto& op : ops) {
    if (op == "get" && !filled) {
      Run fill;
      fill.client = client.get();
      fill.op = "set";
      fill.keys = keys;
      fill.scopes = scopes;
      fill.value = value;
      fill.limit = keys;
      fill.measure_start = fill.measure_end = Clock::now();
      const int64_t lanes = std::min<int64_t>(64, keys);
      fill.lanes_active = lanes;
      auto f = fill.done.get_future();
      for (int64_t i = 0; i < lanes; ++i) issue(&fill);
      f.wait();
      if (fill.errors) {
        std::fprintf(stderr, "fill failed: %s\n", fill.first_error.c_str());
        return 1;
      }
      filled = true;
    }
    for (int64_t c : concurrency) {
      Run run;
      run.client = client.get();
      run.op = op;
      run.keys = keys;
      run.scopes = scopes;
      run.value = value;
      run.latencies_ns.reserve(1 << 22);
      const auto start = Clock::now();
      run.measure_start = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(warmup_s));
      run.measure_end = run.measure_start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(duration_s));
      run.lanes_active = c;
      auto finished = run.done.get_future();
      for (int64_t i = 0; i < c; ++i) issue(&run);
      std::this_thread::sleep_until(run.measure_start);
      const auto cpu0 =
          engine_pid ? bench::thread_cpu(engine_pid) : std::map<int, bench::ThreadCpu>{};
      const double self0 = bench::self_cpu_seconds();
      std::this_thread::sleep_until(run.measure_end);
      const auto cpu1 =
          engine_pid ? bench::thread_cpu(engine_pid) : std::map<int, bench::ThreadCpu>{};
      const double self1 = bench::self_cpu_seconds();
      finished.wait();

      auto& lat = run.latencies_ns;
      std::sort(lat.begin(), lat.end());
      const double per_s = run.completed_in_window / duration_s;
      const double p50 = bench::percentile(lat, 0.5) / 1e3, p90 = bench::percentile(lat, 0.9) / 1e3,
                   p99 = bench::percentile(lat, 0.99) / 1e3,
                   max_us = lat.empty() ? 0 : lat.back() / 1e3;
      double engine_pct = 0;
      const std::string threads =
          engine_pid ? bench::cpu_delta(cpu0, cpu1, duration_s, &engine_pct) : "";
      const double self_pct = 100.0 * (self1 - self0) / duration_s;
      const int64_t rss = engine_pid ? bench::proc_status_kib(engine_pid, "VmRSS") : -1;
      std::printf(
          "state %s %s concurrency=%lld value=%lldB: %.0f ops/s  p50=%.1fus p90=%.1fus p99=%.1fus "
          "max=%.1fus  engine cpu=%.0f%% [%s] bench cpu=%.0f%% rss=%lldKiB (samples=%zu "
          "errors=%lld "
          "misses=%lld)\n",
          label.c_str(), op.c_str(), static_cast<long long>(c), static_cast<long long>(value_bytes),
          per_s, p50, p90, p99, max_us, engine_pct, threads.c_str(), self_pct,
          static_cast<long long>(rss), lat.size(), static_cast<long long>(run.errors),
          static_cast<long long>(run.misses));
      if (run.errors) std::printf("  first error: %s\n", run.first_error.c_str());
      std::printf(
          "{\"bench\":\"state\",\"label\":%s,\"op\":\"%s\",\"concurrency\":%lld,\"value_bytes\":%"
          "lld,"
          "\"keys\":%lld,\"duration_s\":%g,\"ops\":%lld,\"ops_per_s\":%.1f,\"p50_us\":%.1f,"
          "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"engine_cpu_pct\":%.1f,"
          "\"engine_threads\":%s,\"bench_cpu_pct\":%.1f,\"engine_rss_kib\":%lld,\"errors\":%lld,"
          "\"misses\":%lld}\n",
          bench::quote(label).c_str(), op.c_str(), static_cast<long long>(c),
          static_cast<long long>(value_bytes), static_cast<long long>(keys), duration_s,
          static_cast<long long>(run.completed_in_window), per_s, p50, p90, p99, max_us, engine_pct,
          bench::quote(threads).c_str(), self_pct, static_cast<long long>(rss),
          static_cast<long long>(run.errors), static_cast<long long>(run.misses));
      std::fflush(stdout);
      if (run.errors) exit_code = 1;
    }
  }
  client->shutdown();
  return exit_code;
}
