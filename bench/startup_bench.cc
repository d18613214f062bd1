// Engine start-up time: from fork/exec of the engine to the first log line containing a
// marker (default "listening on", logged once the worker listener is bound).
//
//   startup_bench --binary build/bench/iii --config cfg.yaml [--runs 20] [--marker "listening on"]
//
// Each run starts the engine with stdout and stderr on a pipe, reads lines until the marker
// appears, records the elapsed time, then sends SIGTERM and waits for the process to exit
// (that part is not timed). Prints every run, then min/median/max, and a JSON line.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string binary = "build/release/iii";
  std::string config;
  std::string marker = "listening on";
  int runs = 20;
  int timeout_ms = 10000;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: startup_bench [--binary PATH] [--config FILE] [--runs N] "
               "[--marker TEXT] [--timeout-ms MS]\n");
  std::exit(code);
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
      if (i + 1 >= argc) usage(2);
      value = argv[++i];
    }
    if (name == "--binary")
      f.binary = value;
    else if (name == "--config")
      f.config = value;
    else if (name == "--marker")
      f.marker = value;
    else if (name == "--runs")
      f.runs = std::atoi(value.c_str());
    else if (name == "--timeout-ms")
      f.timeout_ms = std::atoi(value.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", name.c_str());
      usage(2);
    }
  }
  if (f.runs < 1) usage(2);
  return f;
}

// Returns the start-up time in microseconds, or a negative value on failure.
double one_run(const Flags& f) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  std::vector<std::string> args{f.binary};
  if (!f.config.empty()) {
    args.push_back("--config");
    args.push_back(f.config);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const auto t0 = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);

  std::string seen;
  double us = -1;
  char buf[4096];
  const auto deadline = t0 + std::chrono::milliseconds(f.timeout_ms);
  while (Clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) continue;
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // engine exited (or closed its output) before the marker
    seen.append(buf, static_cast<size_t>(n));
    if (seen.find(f.marker) != std::string::npos) {
      us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      break;
    }
  }
  if (us < 0)
    std::fprintf(stderr, "marker '%s' not seen; output:\n%s\n", f.marker.c_str(), seen.c_str());
  kill(pid, SIGTERM);
  // Keep draining so the engine never blocks on a full pipe while shutting down.
  while (read(fds[0], buf, sizeof buf) > 0) {
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f = parse_flags(argc, argv);
  std::vector<double> samples;
  for (int i = 0; i < f.runs; ++i) {
    const double us = one_run(f);
    if (us < 0) return 1;
    samples.push_back(us);
    std::printf("run %d: %.0f us\n", i + 1, us);
  }
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  const double median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  std::printf("startup (exec -> '%s') over %zu runs: min=%.0fus median=%.0fus max=%.0fus\n",
              f.marker.c_str(), n, samples.front(), median, samples.back());
  std::printf(
      "{\"bench\":\"startup\",\"runs\":%zu,\"min_us\":%.0f,\"median_us\":%.0f,"
      "\"max_us\":%.0f}\n",
      n, samples.front(), median, samples.back());
  return 0;
}
