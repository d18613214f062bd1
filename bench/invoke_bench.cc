// Invoke round-trip benchmark: caller -> engine -> worker -> engine -> caller.
//
// One "worker" client registers `bench::echo` (returns its input) and one "caller" client
// keeps N calls in flight. Each completion callback issues the next call directly on the
// caller's SDK I/O thread, so the measured latency contains no extra thread hop.
//
//   invoke_bench --url ws://127.0.0.1:49134 --concurrency 1,64 --payload-bytes 100,1048576
//
// Lists run every combination. Prints a human-readable line and a one-line JSON summary per
// combination. With --engine-pid the engine's CPU time per call is reported too (from
// /proc/<pid>/task/*/schedstat), a figure that depends far less on other load than latency.
#include <algorithm>
#include <atomic>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string url = "ws://127.0.0.1:49134";
  std::vector<int64_t> concurrency{1};
  std::vector<int64_t> payload_bytes{100};
  double duration_s = 5;
  double warmup_s = 1;
  int timeout_ms = 30000;
  long engine_pid = 0;  // report the engine's CPU time per call
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: invoke_bench [--url ws://127.0.0.1:49134] [--concurrency N[,N...]]\n"
               "                    [--payload-bytes N[,N...]] [--duration-s S] [--warmup-s S]\n"
               "                    [--timeout-ms MS] [--engine-pid PID]\n");
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
    if (item.empty() || *end != '\0' || v < 0) {
      std::fprintf(stderr, "invalid value for %s: '%s'\n", flag.c_str(), s.c_str());
      usage(2);
    }
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

double parse_double(const std::string& flag, const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || v < 0) {
    std::fprintf(stderr, "invalid value for %s: '%s'\n", flag.c_str(), s.c_str());
    usage(2);
  }
  return v;
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
    else if (name == "--concurrency")
      f.concurrency = parse_list(name, value);
    else if (name == "--payload-bytes")
      f.payload_bytes = parse_list(name, value);
    else if (name == "--duration-s")
      f.duration_s = parse_double(name, value);
    else if (name == "--warmup-s")
      f.warmup_s = parse_double(name, value);
    else if (name == "--timeout-ms")
      f.timeout_ms = static_cast<int>(parse_double(name, value));
    else if (name == "--engine-pid")
      f.engine_pid = static_cast<long>(parse_double(name, value));
    else {
      std::fprintf(stderr, "unknown flag %s\n", name.c_str());
      usage(2);
    }
  }
  for (auto c : f.concurrency)
    if (c < 1) usage(2);
  if (f.duration_s <= 0) usage(2);
  return f;
}

// State of one measurement. Only touched on the caller's I/O thread once started.
struct Run {
  iii::III* caller = nullptr;
  iii::TriggerRequest request;
  Clock::time_point measure_start, measure_end;
  std::vector<int64_t> latencies_ns;
  int64_t completed_in_window = 0;
  int64_t completed_total = 0;  // including warm-up, for the engine CPU per call
  int64_t errors = 0;
  std::string first_error;
  int64_t lanes_active = 0;
  std::promise<void> done;
};

void issue(Run* run) {
  const auto t0 = Clock::now();
  run->caller->trigger_async(run->request, [run, t0](iii::TriggerOutcome outcome) {
    const auto t1 = Clock::now();
    if (!outcome.ok()) {
      if (run->errors++ == 0) run->first_error = outcome.error->what();
    } else {
      ++run->completed_total;
      if (t1 >= run->measure_start && t1 <= run->measure_end) {
        ++run->completed_in_window;
        if (t0 >= run->measure_start)
          run->latencies_ns.push_back(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      }
    }
    if (t1 < run->measure_end) {
      issue(run);
    } else if (--run->lanes_active == 0) {
      run->done.set_value();
    }
  });
}

double percentile_us(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t idx = std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()));
  return sorted[idx] / 1000.0;
}

bool wait_for_echo(iii::III& caller) {
  // The worker's registration travels on another connection; poll until the engine knows it.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::string last;
  while (Clock::now() < deadline) {
    try {
      iii::TriggerRequest probe;
      probe.function_id = "bench::echo";
      probe.payload = json::object{{"probe", true}};
      probe.timeout_ms = 2000;
      caller.trigger(probe);
      return true;
    } catch (const std::exception& e) {
      last = e.what();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::fprintf(stderr, "bench::echo never became callable: %s\n", last.c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);

  iii::InitOptions wopts;
  wopts.worker_name = "bench-worker";
  auto worker = iii::register_worker(flags.url, wopts);
  iii::FunctionOptions echo_opts;
  echo_opts.description = "echo (invoke_bench)";
  worker->register_function(
      "bench::echo",
      iii::AsyncHandler([](const json::value& in, iii::Responder reply) { reply.ok(in); }),
      echo_opts);

  iii::InitOptions copts;
  copts.worker_name = "bench-caller";
  copts.invocation_timeout_ms = flags.timeout_ms;
  auto caller = iii::register_worker(flags.url, copts);

  if (!worker->wait_connected(std::chrono::seconds(10)) ||
      !caller->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(
        stderr, "cannot connect to %s: %s\n", flags.url.c_str(),
        (worker->last_error().empty() ? caller->last_error() : worker->last_error()).c_str());
    return 1;
  }
  if (!wait_for_echo(*caller)) return 1;

  int exit_code = 0;
  for (int64_t payload_bytes : flags.payload_bytes) {
    for (int64_t concurrency : flags.concurrency) {
      Run run;
      run.caller = caller.get();
      run.request.function_id = "bench::echo";
      run.request.payload = json::object{{"data", std::string(payload_bytes, 'x')}};
      run.request.timeout_ms = flags.timeout_ms;
      const auto start = Clock::now();
      run.measure_start = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(flags.warmup_s));
      run.measure_end = run.measure_start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(flags.duration_s));
      run.latencies_ns.reserve(1 << 20);
      run.lanes_active = concurrency;
      auto finished = run.done.get_future();
      const int64_t cpu_before = flags.engine_pid ? bench::cpu_ns(flags.engine_pid) : -1;
      // Only the first call of each lane is issued from this thread; every later one (and all
      // bookkeeping in Run) happens in callbacks on the caller's I/O thread.
      for (int64_t i = 0; i < concurrency; ++i) issue(&run);
      finished.wait();
      // Engine CPU per completed call (warm-up included); -1 without --engine-pid.
      double engine_cpu_us = -1;
      if (cpu_before >= 0 && run.completed_total > 0) {
        const int64_t cpu_after = bench::cpu_ns(flags.engine_pid);
        if (cpu_after >= 0) engine_cpu_us = (cpu_after - cpu_before) / 1e3 / run.completed_total;
      }

      auto& lat = run.latencies_ns;
      std::sort(lat.begin(), lat.end());
      const double calls_per_s = run.completed_in_window / flags.duration_s;
      const double p50 = percentile_us(lat, 0.50), p90 = percentile_us(lat, 0.90),
                   p99 = percentile_us(lat, 0.99);
      const double max_us = lat.empty() ? 0 : lat.back() / 1000.0;
      std::printf(
          "invoke concurrency=%lld payload=%lldB: %.0f calls/s  p50=%.1fus p90=%.1fus "
          "p99=%.1fus max=%.1fus  (samples=%zu errors=%lld)\n",
          static_cast<long long>(concurrency), static_cast<long long>(payload_bytes), calls_per_s,
          p50, p90, p99, max_us, lat.size(), static_cast<long long>(run.errors));
      if (engine_cpu_us >= 0)
        std::printf("  engine CPU %.1f us per call (%.0f calls/s per engine core)\n", engine_cpu_us,
                    engine_cpu_us > 0 ? 1e6 / engine_cpu_us : 0.0);
      if (run.errors) std::printf("  first error: %s\n", run.first_error.c_str());
      // Hand-formatted so numbers stay plain decimals (Boost.JSON would print 2E0).
      std::printf(
          "{\"bench\":\"invoke\",\"url\":%s,\"concurrency\":%lld,\"payload_bytes\":%lld,"
          "\"duration_s\":%g,\"calls\":%lld,\"calls_per_s\":%.1f,\"p50_us\":%.1f,"
          "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"engine_cpu_us_per_call\":%.2f,"
          "\"errors\":%lld}\n",
          json::serialize(json::value(flags.url)).c_str(), static_cast<long long>(concurrency),
          static_cast<long long>(payload_bytes), flags.duration_s,
          static_cast<long long>(run.completed_in_window), calls_per_s, p50, p90, p99, max_us,
          engine_cpu_us, static_cast<long long>(run.errors));
      std::fflush(stdout);
      if (run.errors) exit_code = 1;
    }
  }
  caller->shutdown();
  worker->shutdown();
  return exit_code;
}
