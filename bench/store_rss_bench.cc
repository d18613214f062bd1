// Memory footprint of a large file_based iii-state store.
//
//   store_rss_bench --url ws://127.0.0.1:49700 --engine-pid PID [--fill 1000000]
//                   [--value-bytes 1024] [--scopes 100] [--concurrency 64] [--gets 5000]
//                   [--key-space N] [--data-dir /tmp/iii-bench-state] [--label TEXT]
//
// Phase 1 (--fill N > 0): writes N items `state::set {scope: rss-<i % scopes>, key: k<i>,
// value: {"v": "xxx..."}}` (value serialised to --value-bytes bytes) with --concurrency calls in
// flight, sampling the engine's VmRSS every --sample-every items.
// Phase 2 (--gets M > 0): M `state::get`s of uniformly random keys among the first --key-space
// items (default: --fill, or 1,000,000 when not filling), e.g. after restarting the engine on
// the filled store. Every get must hit; misses are reported.
// Prints the engine's VmRSS / VmHWM (peak) before and after each phase and, with --data-dir,
// the on-disk size of the store (sum of allocated blocks of the files in the directory).
// Human lines + one JSON line.
#include <sys/stat.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
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
    "usage: store_rss_bench --engine-pid PID [--url ws://127.0.0.1:49700] [--fill N]\n"
    "         [--value-bytes B] [--scopes S] [--concurrency C] [--gets M] [--key-space N]\n"
    "         [--sample-every N] [--data-dir DIR] [--label TEXT]\n";

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Runs `limit` calls with `lanes` in flight; make(i) builds call i. Returns wall seconds.
struct Phase {
  iii::III* client = nullptr;
  std::function<iii::TriggerRequest(int64_t)> make;
  int64_t limit = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> lanes_active{0};
  std::vector<int64_t> latencies_ns;  // SDK I/O thread only
  int64_t errors = 0, misses = 0;     // SDK I/O thread only
  std::string first_error;
  std::promise<void> done;

  void issue() {
    const int64_t i = next.fetch_add(1);
    if (i >= limit) {
      if (lanes_active.fetch_sub(1) == 1) done.set_value();
      return;
    }
    const auto t0 = Clock::now();
    client->trigger_async(make(i), [this, t0](iii::TriggerOutcome o) {
      latencies_ns.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (!o.ok()) {
        if (errors++ == 0) first_error = o.error->what();
      } else if (!o.result) {
        ++misses;
      }
      completed.fetch_add(1);
      issue();
    });
  }
};

int64_t dir_bytes(const std::string& dir) {
  namespace fs = std::filesystem;
  int64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::stat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
      total += int64_t(st.st_blocks) * 512;
  }
  return total;
}

double mib(int64_t kib) { return kib / 1024.0; }

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(
      argc, argv,
      {"--url", "--engine-pid", "--fill", "--value-bytes", "--scopes", "--concurrency", "--gets",
       "--key-space", "--sample-every", "--data-dir", "--label"},
      kUsage);
  const std::string url = flags.str("--url", "ws://127.0.0.1:49700");
  const int pid = static_cast<int>(flags.integer("--engine-pid", 0));
  const int64_t fill = flags.integer("--fill", 1000000);
  const int64_t value_bytes = flags.integer("--value-bytes", 1024);
  const int64_t scopes = flags.integer("--scopes", 100);
  const int64_t concurrency = flags.integer("--concurrency", 64);
  const int64_t gets = flags.integer("--gets", 5000);
  const int64_t key_space = flags.integer("--key-space", fill > 0 ? fill : 1000000);
  const int64_t sample_every = flags.integer("--sample-every", 100000);
  const std::string data_dir = flags.str("--data-dir", "");
  const std::string label = flags.str("--label", "");
  if (pid <= 0) flags.fail("--engine-pid is required");
  if (scopes < 1 || concurrency < 1 || key_space < 1 || sample_every < 1)
    flags.fail("invalid --scopes/--concurrency/--key-space/--sample-every");

  iii::InitOptions opts;
  opts.worker_name = "bench-store-rss";
  opts.invocation_timeout_ms = 120000;
  auto client = iii::register_worker(url, opts);
  if (!client->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", url.c_str(), client->last_error().c_str());
    return 1;
  }
  const std::string value(static_cast<size_t>(std::max<int64_t>(0, value_bytes - 8)), 'x');
  auto key_of = [scopes](int64_t k) {
    return json::object{{"scope", "rss-" + std::to_string(k % scopes)},
                        {"key", "k" + std::to_string(k)}};
  };

  const int64_t rss_start = bench::proc_status_kib(pid, "VmRSS");
  std::printf("engine pid %d: VmRSS %.1f MiB at start\n", pid, mib(rss_start));
  int64_t rss_after_fill = -1, hwm_after_fill = -1, rss_after_gets = -1, hwm_after_gets = -1;
  int64_t fill_write_bytes = -1, fill_wchar = -1;
  std::string fill_threads;
  double fill_per_s = 0, get_per_s = 0, get_p50 = 0, get_p99 = 0, fill_p50 = 0, fill_p99 = 0;
  int64_t errors = 0, misses = 0;
  int exit_code = 0;

  if (fill > 0) {
    Phase ph;
    ph.client = client.get();
    ph.limit = fill;
    ph.latencies_ns.reserve(static_cast<size_t>(fill));
    ph.make = [&](int64_t i) {
      iii::TriggerRequest r;
      r.function_id = "state::set";
      json::object p = key_of(i);
      p["value"] = json::object{{"v", value}};
      r.payload = std::move(p);
      return r;
    };
    const int64_t wb0 = bench::proc_io(pid, "write_bytes"), wc0 = bench::proc_io(pid, "wchar");
    const auto cpu0 = bench::thread_cpu(pid);
    const auto t0 = Clock::now();
    const int64_t lanes = std::min(concurrency, fill);
    ph.lanes_active = lanes;
    auto f = ph.done.get_future();
    for (int64_t i = 0; i < lanes; ++i) ph.issue();
    int64_t next_sample = sample_every;
    while (f.wait_for(std::chrono::milliseconds(200)) != std::future_status::ready) {
      const int64_t c = ph.completed.load();
      if (c >= next_sample) {
        const double el = std::chrono::duration<double>(Clock::now() - t0).count();
        std::printf(
            "  fill %lld items  %.1fs  %.0f sets/s  VmRSS %.1f MiB%s%s\n",
            static_cast<long long>(c), el, c / el, mib(bench::proc_status_kib(pid, "VmRSS")),
            data_dir.empty() ? "" : "  disk ",
            data_dir.empty() ? "" : (std::to_string(dir_bytes(data_dir) >> 20) + " MiB").c_str());
        std::fflush(stdout);
        while (next_sample <= c) next_sample += sample_every;
      }
    }
    const double el = std::chrono::duration<double>(Clock::now() - t0).count();
    fill_threads = bench::cpu_delta(cpu0, bench::thread_cpu(pid), el);
    if (wb0 >= 0) fill_write_bytes = bench::proc_io(pid, "write_bytes") - wb0;
    if (wc0 >= 0) fill_wchar = bench::proc_io(pid, "wchar") - wc0;
    fill_per_s = fill / el;
    std::sort(ph.latencies_ns.begin(), ph.latencies_ns.end());
    fill_p50 = bench::percentile(ph.latencies_ns, 0.5) / 1e3;
    fill_p99 = bench::percentile(ph.latencies_ns, 0.99) / 1e3;
    rss_after_fill = bench::proc_status_kib(pid, "VmRSS");
    hwm_after_fill = bench::proc_status_kib(pid, "VmHWM");
    errors += ph.errors;
    std::printf(
        "fill: %lld items of %lldB in %.1fs = %.0f sets/s (p50=%.0fus p99=%.0fus)  "
        "VmRSS %.1f MiB  VmHWM %.1f MiB  errors=%lld\n",
        static_cast<long long>(fill), static_cast<long long>(value_bytes), el, fill_per_s, fill_p50,
        fill_p99, mib(rss_after_fill), mib(hwm_after_fill), static_cast<long long>(ph.errors));
    std::printf(
        "  engine during fill: cpu [%s]  wrote %.1f MiB to disk (%.1f KiB per item), "
        "wchar %.1f MiB\n",
        fill_threads.c_str(), fill_write_bytes / 1048576.0,
        fill_write_bytes / 1024.0 / static_cast<double>(fill), fill_wchar / 1048576.0);
    if (ph.errors) std::printf("  first error: %s\n", ph.first_error.c_str());
  }

  if (gets > 0) {
    Phase ph;
    ph.client = client.get();
    ph.limit = gets;
    ph.latencies_ns.reserve(static_cast<size_t>(gets));
    ph.make = [&](int64_t i) {
      iii::TriggerRequest r;
      r.function_id = "state::get";
      r.payload = key_of(static_cast<int64_t>(splitmix64(static_cast<uint64_t>(i) + 12345) %
                                              static_cast<uint64_t>(key_space)));
      return r;
    };
    const int64_t rss_before = bench::proc_status_kib(pid, "VmRSS");
    const auto t0 = Clock::now();
    const int64_t lanes = std::min(concurrency, gets);
    ph.lanes_active = lanes;
    auto f = ph.done.get_future();
    for (int64_t i = 0; i < lanes; ++i) ph.issue();
    f.wait();
    const double el = std::chrono::duration<double>(Clock::now() - t0).count();
    get_per_s = gets / el;
    std::sort(ph.latencies_ns.begin(), ph.latencies_ns.end());
    get_p50 = bench::percentile(ph.latencies_ns, 0.5) / 1e3;
    get_p99 = bench::percentile(ph.latencies_ns, 0.99) / 1e3;
    rss_after_gets = bench::proc_status_kib(pid, "VmRSS");
    hwm_after_gets = bench::proc_status_kib(pid, "VmHWM");
    errors += ph.errors;
    misses += ph.misses;
    std::printf(
        "gets: %lld random gets over %lld keys in %.2fs = %.0f gets/s (p50=%.0fus "
        "p99=%.0fus)  VmRSS %.1f -> %.1f MiB  VmHWM %.1f MiB  misses=%lld errors=%lld\n",
        static_cast<long long>(gets), static_cast<long long>(key_space), el, get_per_s, get_p50,
        get_p99, mib(rss_before), mib(rss_after_gets), mib(hwm_after_gets),
        static_cast<long long>(ph.misses), static_cast<long long>(ph.errors));
    if (ph.errors) std::printf("  first error: %s\n", ph.first_error.c_str());
  }

  const int64_t disk = data_dir.empty() ? -1 : dir_bytes(data_dir);
  if (disk >= 0) std::printf("on disk: %.1f MiB in %s\n", disk / 1048576.0, data_dir.c_str());
  std::printf(
      "{\"bench\":\"store_rss\",\"label\":%s,\"fill\":%lld,\"value_bytes\":%lld,\"scopes\":%lld,"
      "\"concurrency\":%lld,\"gets\":%lld,\"key_space\":%lld,\"rss_start_kib\":%lld,"
      "\"fill_sets_per_s\":%.1f,\"fill_p50_us\":%.1f,\"fill_p99_us\":%.1f,"
      "\"rss_after_fill_kib\":%lld,\"hwm_after_fill_kib\":%lld,\"fill_write_bytes\":%lld,"
      "\"fill_wchar\":%lld,\"fill_threads\":%s,\"gets_per_s\":%.1f,"
      "\"get_p50_us\":%.1f,\"get_p99_us\":%.1f,\"rss_after_gets_kib\":%lld,"
      "\"hwm_after_gets_kib\":%lld,\"disk_bytes\":%lld,\"errors\":%lld,\"misses\":%lld}\n",
      bench::quote(label).c_str(), static_cast<long long>(fill),
      static_cast<long long>(value_bytes), static_cast<long long>(scopes),
      static_cast<long long>(concurrency), static_cast<long long>(gets),
      static_cast<long long>(key_space), static_cast<long long>(rss_start), fill_per_s, fill_p50,
      fill_p99, static_cast<long long>(rss_after_fill), static_cast<long long>(hwm_after_fill),
      static_cast<long long>(fill_write_bytes), static_cast<long long>(fill_wchar),
      bench::quote(fill_threads).c_str(), get_per_s, get_p50, get_p99,
      static_cast<long long>(rss_after_gets), static_cast<long long>(hwm_after_gets),
      static_cast<long long>(disk), static_cast<long long>(errors), static_cast<long long>(misses));
  if (errors || misses) exit_code = 1;
  client->shutdown();
  return exit_code;
}
