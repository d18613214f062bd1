// iii-pubsub fan-out throughput and iii-cron firing jitter, against a running engine that has
// the iii-pubsub and iii-cron workers.
//
//   pubsub_cron_bench --url ws://127.0.0.1:49134 [--mode publish,cron]
//                     [--fanout 1,100,1000] [--deliveries 200000] [--window 16]
//                     [--jobs 1000] [--seconds 10] [--engine-pid PID]
//
// publish: for each N, a subscriber worker registers N functions `bench::sub::<N>::<i>`
// (async handlers: they count on the SDK I/O thread and answer at once) and one `subscribe`
// trigger each on topic `bench-<N>`. A separate publisher worker calls `publish` with up to
// `--window` calls in flight (and at most 20,000 deliveries outstanding) until `--deliveries`
// handler calls arrived. Reports deliveries/s and publishes/s (and with --engine-pid the
// engine's CPU time per delivery).
//
// cron: a worker registers `--jobs` functions and one `cron` trigger each, all `* * * * * *`,
// then records for `--seconds` seconds, per call: engine jitter = actual_time - scheduled_time
// (from the payload: the engine's timer precision and dispatch order) and end-to-end jitter =
// arrival wall time in the handler - scheduled_time. Prints p50/p99/max in milliseconds, and
// with --engine-pid the engine's CPU time per second (the cost of one batch of firings).
// Each line is also printed as JSON.
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using std::chrono::system_clock;

iii::InitOptions options(const std::string& name) {
  iii::InitOptions o;
  o.worker_name = name;
  o.invocation_timeout_ms = 60000;
  o.send_worker_metadata = false;
  o.log = [](iii::LogLevel level, const std::string& msg) {
    if (level >= iii::LogLevel::kWarn) std::fprintf(stderr, "sdk: %s\n", msg.c_str());
  };
  return o;
}

// Polls engine::triggers::list until `n` triggers of `type` whose function id starts with
// `prefix` are bound (registertrigger has no reply).
bool wait_bound(iii::III& w, const std::string& type, const std::string& prefix, int64_t n) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    iii::TriggerRequest req;
    req.function_id = "engine::triggers::list";
    req.payload = json::object{};
    req.timeout_ms = 10000;
    int64_t bound = 0;
    try {
      auto res = w.trigger(req);
      for (const auto& t : res->as_object().at("triggers").as_array()) {
        const auto& o = t.as_object();
        if (o.at("trigger_type").as_string() == type && o.at("state").as_string() == "bound" &&
            std::string_view(o.at("function_id").as_string()).starts_with(prefix))
          ++bound;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "engine::triggers::list: %s\n", e.what());
    }
    if (bound == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int run_publish(const std::string& url, int64_t n, int64_t target, int64_t window,
                long engine_pid) {
  auto sub = iii::register_worker(url, options("bench-subscriber"));
  std::atomic<int64_t> delivered{0};
  const std::string prefix = "bench::sub::" + std::to_string(n) + "::";
  const std::string topic = "bench-" + std::to_string(n);
  std::vector<iii::TriggerRef> triggers;
  for (int64_t i = 0; i < n; ++i) {
    const std::string fid = prefix + std::to_string(i);
    sub->register_function(fid,
                           iii::AsyncHandler([&delivered](const json::value&, iii::Responder r) {
                             delivered.fetch_add(1, std::memory_order_relaxed);
                             r.ok();
                           }));
    triggers.push_back(
        sub->register_trigger({"subscribe", fid, json::object{{"topic", topic}}, {}}));
  }
  if (!wait_bound(*sub, "subscribe", prefix, n)) {
    std::fprintf(stderr, "publish N=%lld: subscriptions not bound\n", (long long)n);
    return 1;
  }
  auto pub = iii::register_worker(url, options("bench-publisher"));
  const int64_t publishes = std::max<int64_t>(1, target / n);
  const int64_t max_outstanding = std::max<int64_t>(20000, n);
  std::mutex mu;
  std::condition_variable cv;
  int64_t in_flight = 0, sent = 0, failed = 0;
  const int64_t cpu0 = engine_pid > 0 ? bench::cpu_ns(engine_pid) : -1;
  const auto t0 = Clock::now();
  while (sent < publishes) {
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(1), [&] {
        return in_flight < window && sent * n - delivered.load() < max_outstanding;
      });
      if (!(in_flight < window && sent * n - delivered.load() < max_outstanding)) continue;
      ++in_flight;
      ++sent;
    }
    iii::TriggerRequest req;
    req.function_id = "publish";
    req.payload =
        json::object{{"topic", topic}, {"data", json::object{{"seq", sent}, {"body", "hello"}}}};
    req.timeout_ms = 60000;
    pub->trigger_async(req, [&](iii::TriggerOutcome o) {
      std::lock_guard lock(mu);
      --in_flight;
      if (!o.ok()) ++failed;
      cv.notify_one();
    });
  }
  const int64_t expected = publishes * n;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (delivered.load() < expected && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t got = delivered.load();
  // Engine CPU per delivery (publish calls and handler results included).
  const double cpu_us =
      cpu0 >= 0 && got ? double(bench::cpu_ns(engine_pid) - cpu0) / 1e3 / double(got) : -1;
  std::printf(
      "publish N=%-5lld publishes=%lld deliveries=%lld/%lld in %.2fs: %.0f deliveries/s, %.0f "
      "publishes/s; engine CPU %.2f us per delivery%s\n",
      (long long)n, (long long)publishes, (long long)got, (long long)expected, secs, got / secs,
      publishes / secs, cpu_us, failed ? " (publish errors!)" : "");
  std::printf(
      "{\"bench\":\"pubsub_publish\",\"subscribers\":%lld,\"publishes\":%lld,\"deliveries\":%lld,"
      "\"seconds\":%.3f,\"deliveries_per_s\":%.0f,\"publishes_per_s\":%.0f,"
      "\"engine_cpu_us_per_delivery\":%.2f,\"errors\":%lld}\n",
      (long long)n, (long long)publishes, (long long)got, secs, got / secs, publishes / secs,
      cpu_us, (long long)failed);
  for (auto& t : triggers) t.unregister();
  pub->shutdown();
  sub->shutdown();
  return got == expected && failed == 0 ? 0 : 1;
}

double parse_rfc3339_ms(std::string_view s) {
  // 2026-05-05T10:00:00[.fff...]+00:00 (always UTC)
  int y, mo, d, h, mi, sec;
  if (std::sscanf(std::string(s.substr(0, 19)).c_str(), "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi,
                  &sec) != 6)
    return 0;
  using namespace std::chrono;
  const sys_days day{year{y} / month(unsigned(mo)) / unsigned(d)};
  double ms = double(duration_cast<milliseconds>(day.time_since_epoch()).count()) +
              (h * 3600.0 + mi * 60.0 + sec) * 1000.0;
  if (s.size() > 19 && s[19] == '.') {
    double frac = 0, scale = 100;
    for (size_t i = 20; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]));
         ++i, scale /= 10)
      frac += (s[i] - '0') * scale;
    ms += frac;
  }
  return ms;
}

int run_cron(const std::string& url, int64_t jobs, int64_t seconds, long engine_pid) {
  auto w = iii::register_worker(url, options("bench-cron"));
  std::mutex mu;
  std::vector<double> engine_ms, e2e_ms;
  bool recording = false;
  for (int64_t i = 0; i < jobs; ++i) {
    const std::string fid = "bench::cron::" + std::to_string(i);
    w->register_function(
        fid, iii::AsyncHandler([&](const json::value& p, iii::Responder r) {
          const double now_ms =
              std::chrono::duration<double, std::milli>(system_clock::now().time_since_epoch())
                  .count();
          const auto& o = p.as_object();
          const double sched = parse_rfc3339_ms(o.at("scheduled_time").as_string());
          const double actual = parse_rfc3339_ms(o.at("actual_time").as_string());
          {
            std::lock_guard lock(mu);
            if (recording) {
              engine_ms.push_back(actual - sched);
              e2e_ms.push_back(now_ms - sched);
            }
          }
          r.ok();
        }));
    w->register_trigger({"cron", fid, json::object{{"expression", "* * * * * *"}}, {}});
  }
  if (!wait_bound(*w, "cron", "bench::cron::", jobs)) {
    std::fprintf(stderr, "cron: triggers not bound\n");
    return 1;
  }
  // Start on a whole second boundary so every recorded second has all jobs.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const int64_t cpu0 = engine_pid > 0 ? bench::cpu_ns(engine_pid) : -1;
  {
    std::lock_guard lock(mu);
    recording = true;
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  {
    std::lock_guard lock(mu);
    recording = false;
  }
  // Engine CPU per second of ticks: what one batch of `jobs` firings costs on an idle core.
  const double cpu_ms_per_s =
      cpu0 >= 0 ? double(bench::cpu_ns(engine_pid) - cpu0) / 1e6 / double(seconds) : -1;
  std::sort(engine_ms.begin(), engine_ms.end());
  std::sort(e2e_ms.begin(), e2e_ms.end());
  auto p = [](const std::vector<double>& v, double q) {
    return v.empty() ? 0.0 : bench::percentile(v, q);
  };
  std::printf(
      "cron jobs=%lld seconds=%lld ticks=%zu: engine jitter p50 %.3f ms p99 %.3f ms max %.3f ms; "
      "end-to-end p50 %.3f ms p99 %.3f ms max %.3f ms; engine CPU %.1f ms/s\n",
      (long long)jobs, (long long)seconds, e2e_ms.size(), p(engine_ms, 0.5), p(engine_ms, 0.99),
      engine_ms.empty() ? 0 : engine_ms.back(), p(e2e_ms, 0.5), p(e2e_ms, 0.99),
      e2e_ms.empty() ? 0 : e2e_ms.back(), cpu_ms_per_s);
  std::printf(
      "{\"bench\":\"cron_jitter\",\"jobs\":%lld,\"seconds\":%lld,\"ticks\":%zu,\"engine_p50_ms\":%."
      "3f,"
      "\"engine_p99_ms\":%.3f,\"engine_max_ms\":%.3f,\"e2e_p50_ms\":%.3f,\"e2e_p99_ms\":%.3f,"
      "\"e2e_max_ms\":%.3f,\"engine_cpu_ms_per_s\":%.1f}\n",
      (long long)jobs, (long long)seconds, e2e_ms.size(), p(engine_ms, 0.5), p(engine_ms, 0.99),
      engine_ms.empty() ? 0 : engine_ms.back(), p(e2e_ms, 0.5), p(e2e_ms, 0.99),
      e2e_ms.empty() ? 0 : e2e_ms.back(), cpu_ms_per_s);
  w->shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv,
                     {"--url", "--mode", "--fanout", "--deliveries", "--window", "--jobs",
                      "--seconds", "--engine-pid"},
                     "usage: pubsub_cron_bench --url ws://127.0.0.1:49134 [--mode publish,cron] "
                     "[--fanout 1,100,1000] [--deliveries 200000] [--window 16] [--jobs 1000] "
                     "[--seconds 10] [--engine-pid PID]\n");
  const std::string url = flags.str("--url", "ws://127.0.0.1:49134");
  const std::string mode = flags.str("--mode", "publish,cron");
  int rc = 0;
  if (mode.find("publish") != std::string::npos)
    for (int64_t n : flags.list("--fanout", {1, 100, 1000}))
      rc |= run_publish(url, n, flags.integer("--deliveries", 200000),
                        flags.integer("--window", 16), long(flags.integer("--engine-pid", 0)));
  if (mode.find("cron") != std::string::npos)
    rc |= run_cron(url, flags.integer("--jobs", 1000), flags.integer("--seconds", 10),
                   long(flags.integer("--engine-pid", 0)));
  return rc;
}
