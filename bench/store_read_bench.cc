// Does a long store read stall other calls? p99 of `stream::get` on a hot key, (a) alone and
// (b) while a second client lists a large cold group (`stream::list`) back to back.
//
//   store_read_bench --url ws://127.0.0.1:49700 [--items 100000] [--item-bytes 100]
//                    [--rate 2000] [--duration-s 5] [--warmup-s 1] [--engine-pid PID]
//                    [--label TEXT]
//
// Start the engine with the iii-stream adapter set to file_based (bench/store_read_runs.sh
// does). The tool first fills stream `bench-read`, group `cold` with --items items of
// --item-bytes bytes (skipped when the group already holds them) and one hot item. The getter
// is one SDK client sending gets of the hot item at --rate per second (open loop, see
// GetRun). The lister is a second SDK client (its own
// connection and I/O thread) calling `stream::list` on the cold group in a loop from its own
// thread. Human line + JSON line per phase, then a summary line with the p99 ratio b/a.
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
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
    "usage: store_read_bench [--url ws://127.0.0.1:49700] [--items N] [--item-bytes B]\n"
    "         [--rate R] [--duration-s S] [--warmup-s S] [--engine-pid PID] [--label TEXT]\n";

constexpr const char* kStream = "bench-read";

json::object item_ref(const char* group, const std::string& item) {
  return json::object{{"stream_name", kStream}, {"group_id", group}, {"item_id", item}};
}

// Open loop: gets are issued at --rate per second from a pacing thread whatever the replies
// do, and each latency is measured from the time the get was due, so a stall of the engine
// shows up in every get that should have been sent during it (a closed loop would record one
// slow sample and then simply send fewer gets).
struct GetRun {
  std::mutex mu;
  Clock::time_point measure_start, measure_end;
  std::vector<int64_t> latencies_ns;
  int64_t issued = 0, completed = 0, errors = 0, misses = 0;
  std::string first_error;
  std::condition_variable cv;
};

struct Phase {
  double per_s = 0, p50 = 0, p90 = 0, p99 = 0, max_us = 0, engine_pct = 0;
  std::string threads;
  int64_t samples = 0, errors = 0;
};

Phase measure_gets(iii::III* client, double rate, double warmup_s, double duration_s,
                   int engine_pid) {
  GetRun run;
  run.latencies_ns.reserve(static_cast<size_t>(rate * duration_s) + 16);
  const auto start = Clock::now();
  auto secs = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  run.measure_start = start + secs(warmup_s);
  run.measure_end = run.measure_start + secs(duration_s);
  std::map<int, bench::ThreadCpu> cpu0, cpu1;
  bool sampled0 = false, sampled1 = false;
  iii::TriggerRequest req;
  req.function_id = "stream::get";
  req.payload = item_ref("hot", "h");
  for (int64_t i = 0;; ++i) {
    const auto due = start + secs(i / rate);
    if (due >= run.measure_end) break;
    std::this_thread::sleep_until(due);
    if (!sampled0 && due >= run.measure_start && engine_pid) {
      cpu0 = bench::thread_cpu(engine_pid);
      sampled0 = true;
    }
    {
      std::lock_guard lock(run.mu);
      ++run.issued;
    }
    client->trigger_async(req, [&run, due](iii::TriggerOutcome o) {
      const auto t1 = Clock::now();
      std::lock_guard lock(run.mu);
      if (!o.ok()) {
        if (run.errors++ == 0) run.first_error = o.error->what();
      } else if (!o.result) {
        ++run.misses;
      } else if (due >= run.measure_start) {
        run.latencies_ns.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - due).count());
      }
      ++run.completed;
      run.cv.notify_all();
    });
  }
  if (engine_pid) {
    cpu1 = bench::thread_cpu(engine_pid);
    sampled1 = true;
  }
  std::unique_lock lock(run.mu);
  run.cv.wait(lock, [&] { return run.completed == run.issued; });
  if (run.errors) std::fprintf(stderr, "get failed: %s\n", run.first_error.c_str());
  if (run.misses) std::fprintf(stderr, "%lld gets missed the hot item\n", (long long)run.misses);
  auto& lat = run.latencies_ns;
  std::sort(lat.begin(), lat.end());
  Phase p;
  p.per_s = static_cast<double>(lat.size()) / duration_s;
  p.p50 = bench::percentile(lat, 0.5) / 1e3;
  p.p90 = bench::percentile(lat, 0.9) / 1e3;
  p.p99 = bench::percentile(lat, 0.99) / 1e3;
  p.max_us = lat.empty() ? 0 : lat.back() / 1e3;
  p.samples = static_cast<int64_t>(lat.size());
  p.errors = run.errors + run.misses;
  if (sampled0 && sampled1) p.threads = bench::cpu_delta(cpu0, cpu1, duration_s, &p.engine_pct);
  return p;
}

// Fills the cold group with `items` items (64 sets in flight) unless its last item exists.
bool fill(iii::III* client, int64_t items, const std::string& value) {
  iii::TriggerRequest probe;
  probe.function_id = "stream::get";
  probe.payload = item_ref("cold", "i" + std::to_string(items - 1));
  if (client->trigger(probe)) return true;
  std::atomic<int64_t> next{0}, errors{0}, active{64};
  std::promise<void> done;
  std::function<void()> issue = [&] {
    const int64_t i = next.fetch_add(1);
    if (i >= items) {
      if (active.fetch_sub(1) == 1) done.set_value();
      return;
    }
    iii::TriggerRequest req;
    req.function_id = "stream::set";
    json::object p = item_ref("cold", "i" + std::to_string(i));
    p["data"] = json::object{{"n", i}, {"v", value}};
    req.payload = std::move(p);
    client->trigger_async(req, [&](iii::TriggerOutcome o) {
      if (!o.ok()) ++errors;
      issue();
    });
  };
  auto f = done.get_future();
  for (int i = 0; i < 64; ++i) issue();
  f.wait();
  return errors == 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv,
                     {"--url", "--items", "--item-bytes", "--rate", "--duration-s", "--warmup-s",
                      "--engine-pid", "--label"},
                     kUsage);
  const std::string url = flags.str("--url", "ws://127.0.0.1:49700");
  const int64_t items = flags.integer("--items", 100000);
  const int64_t item_bytes = flags.integer("--item-bytes", 100);
  const double rate = flags.num("--rate", 2000);
  const double duration_s = flags.num("--duration-s", 5);
  const double warmup_s = flags.num("--warmup-s", 1);
  const int engine_pid = static_cast<int>(flags.integer("--engine-pid", 0));
  const std::string label = flags.str("--label", "");
  if (items < 1 || rate <= 0 || duration_s <= 0) flags.fail("invalid --items/--rate/--duration-s");

  iii::InitOptions opts;
  opts.worker_name = "bench-store-read-get";
  opts.invocation_timeout_ms = 120000;
  auto getter = iii::register_worker(url, opts);
  opts.worker_name = "bench-store-read-list";
  auto lister = iii::register_worker(url, opts);
  if (!getter->wait_connected(std::chrono::seconds(10)) ||
      !lister->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s\n", url.c_str());
    return 1;
  }
  // {"n":123,"v":"xxx"} serialises to about item_bytes bytes.
  const std::string value(static_cast<size_t>(std::max<int64_t>(0, item_bytes - 20)), 'x');
  const auto fill_start = Clock::now();
  if (!fill(getter.get(), items, value)) {
    std::fprintf(stderr, "fill failed\n");
    return 1;
  }
  const double fill_s = std::chrono::duration<double>(Clock::now() - fill_start).count();
  {
    iii::TriggerRequest req;
    req.function_id = "stream::set";
    json::object p = item_ref("hot", "h");
    p["data"] = json::object{{"v", "hot"}};
    req.payload = std::move(p);
    getter->trigger(req);
  }

  auto report = [&](const char* phase, const Phase& p, const std::string& extra_json) {
    std::printf(
        "store_read %s %s rate=%.0f/s: get %.0f/s p50=%.1fus p90=%.1fus p99=%.1fus max=%.1fus "
        "engine cpu=%.0f%% [%s] (samples=%lld errors=%lld)\n",
        label.c_str(), phase, rate, p.per_s, p.p50, p.p90, p.p99, p.max_us, p.engine_pct,
        p.threads.c_str(), (long long)p.samples, (long long)p.errors);
    std::printf(
        "{\"bench\":\"store_read\",\"label\":%s,\"phase\":\"%s\",\"items\":%lld,"
        "\"item_bytes\":%lld,\"rate\":%.0f,\"duration_s\":%g,\"gets_per_s\":%.1f,"
        "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
        "\"engine_cpu_pct\":%.1f,\"engine_threads\":%s,\"errors\":%lld%s}\n",
        bench::quote(label).c_str(), phase, (long long)items, (long long)item_bytes, rate,
        duration_s, p.per_s, p.p50, p.p90, p.p99, p.max_us, p.engine_pct,
        bench::quote(p.threads).c_str(), (long long)p.errors, extra_json.c_str());
    std::fflush(stdout);
  };

  const Phase alone = measure_gets(getter.get(), rate, warmup_s, duration_s, engine_pid);
  report("alone", alone, "");

  // (b): the lister lists the cold group back to back from its own thread.
  std::atomic<bool> stop{false};
  std::vector<int64_t> list_ns;
  int64_t list_errors = 0;
  size_t list_len = 0;
  std::thread list_thread([&] {
    iii::TriggerRequest req;
    req.function_id = "stream::list";
    req.payload = json::object{{"stream_name", kStream}, {"group_id", "cold"}};
    while (!stop) {
      const auto t0 = Clock::now();
      try {
        auto r = lister->trigger(req);
        list_len = r && r->is_array() ? r->get_array().size() : 0;
        if (list_len != static_cast<size_t>(items)) ++list_errors;
      } catch (const std::exception& e) {
        if (list_errors++ == 0) std::fprintf(stderr, "list failed: %s\n", e.what());
      }
      list_ns.push_back((Clock::now() - t0).count());
    }
  });
  const Phase busy = measure_gets(getter.get(), rate, warmup_s, duration_s, engine_pid);
  stop = true;
  list_thread.join();
  std::sort(list_ns.begin(), list_ns.end());
  const double list_p50_ms = bench::percentile(list_ns, 0.5) / 1e6;
  char extra[256];
  std::snprintf(extra, sizeof extra,
                ",\"lists\":%zu,\"list_p50_ms\":%.1f,\"list_items\":%zu,\"list_errors\":%lld,"
                "\"fill_s\":%.1f",
                list_ns.size(), list_p50_ms, list_len, (long long)list_errors, fill_s);
  report("with-list", busy, extra);
  const double ratio = alone.p99 > 0 ? busy.p99 / alone.p99 : 0;
  std::printf(
      "store_read %s: %zu lists of %lld items (p50 %.1f ms each); get p99 %.1fus alone, "
      "%.1fus while listing: ratio %.2f (target <= 2)\n",
      label.c_str(), list_ns.size(), (long long)items, list_p50_ms, alone.p99, busy.p99, ratio);
  std::printf("{\"bench\":\"store_read\",\"label\":%s,\"phase\":\"summary\",\"p99_ratio\":%.2f}\n",
              bench::quote(label).c_str(), ratio);
  getter->shutdown();
  lister->shutdown();
  return alone.errors || busy.errors || list_errors ? 1 : 0;
}
