// Small helpers shared by the benchmarks: flag parsing, percentiles, and /proc sampling of the
// engine process (RSS, CPU time in total and per thread).
#pragma once

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

// --name value / --name=value flags. Unknown flags and missing values exit with code 2.
class Flags {
 public:
  Flags(int argc, char** argv, std::set<std::string> known, std::string usage)
      : usage_(std::move(usage)) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::printf("%s", usage_.c_str());
        std::exit(0);
      }
      std::string name = arg, value;
      if (auto eq = arg.find('='); eq != std::string::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
      } else {
        if (i + 1 >= argc) fail("missing value for " + arg);
        value = argv[++i];
      }
      if (!known.count(name)) fail("unknown flag " + name);
      values_[name] = value;
    }
  }

  [[noreturn]] void fail(const std::string& msg) const {
    std::fprintf(stderr, "%s\n%s", msg.c_str(), usage_.c_str());
    std::exit(2);
  }

  std::string str(const std::string& name, std::string def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }

  double num(const std::string& name, double def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    char* end = nullptr;
    double v = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0' || v < 0) fail("invalid value for " + name);
    return v;
  }

  int64_t integer(const std::string& name, int64_t def) const {
    return static_cast<int64_t>(num(name, static_cast<double>(def)));
  }

  std::vector<int64_t> list(const std::string& name, std::vector<int64_t> def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    std::vector<int64_t> out;
    std::stringstream ss(it->second);
    std::string item;
    while (std::getline(ss, item, ',')) {
      char* end = nullptr;
      long long v = std::strtoll(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || v < 0) fail("invalid value for " + name);
      out.push_back(v);
    }
    if (out.empty()) fail("invalid value for " + name);
    return out;
  }

  std::vector<std::string> words(const std::string& name, std::vector<std::string> def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    std::vector<std::string> out;
    std::stringstream ss(it->second);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) out.push_back(item);
    if (out.empty()) fail("invalid value for " + name);
    return out;
  }

 private:
  std::string usage_;
  std::map<std::string, std::string> values_;
};

// q-quantile of an ascending vector (nearest rank), or 0 when empty.
template <typename T>
double percentile(const std::vector<T>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t idx = std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()));
  return static_cast<double>(sorted[idx]);
}

// Raises the soft open-file limit to the hard limit. Returns the new soft limit.
inline rlim_t raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

// A "VmRSS:" style line of /proc/<pid>/status in KiB, or -1.
inline int64_t proc_status_kib(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
  }
  return -1;
}

// A field of /proc/<pid>/io (e.g. "write_bytes", "wchar"), or -1 (needs the same user or root).
inline int64_t proc_io(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
  }
  return -1;
}

// CPU time (user + system) consumed so far by all threads of a process, in ns, from
// /proc/<pid>/task/*/schedstat; -1 if unreadable.
inline int64_t cpu_ns(long pid) {
  namespace fs = std::filesystem;
  std::error_code ec;
  int64_t total = 0;
  bool any = false;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(t.path() / "schedstat");
    long long ns = 0;
    if (in >> ns) {
      total += ns;
      any = true;
    }
  }
  return any ? total : -1;
}

struct ThreadCpu {
  std::string name;
  double seconds = 0;  // utime + stime
};

// CPU time of every thread of `pid`, keyed by tid (from /proc/<pid>/task/<tid>/stat).
inline std::map<int, ThreadCpu> thread_cpu(int pid) {
  std::map<int, ThreadCpu> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(dir + "/" + e->d_name + "/stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto open = s.find('('), close = s.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::stringstream rest(s.substr(close + 2));
    std::vector<std::string> f;
    std::string tok;
    while (rest >> tok) f.push_back(tok);
    // After the comm field: state(0) ppid(1) ... utime(11) stime(12).
    if (f.size() < 13) continue;
    ThreadCpu t;
    t.name = s.substr(open + 1, close - open - 1);
    t.seconds = (std::strtod(f[11].c_str(), nullptr) + std::strtod(f[12].c_str(), nullptr)) / hz;
    out[std::atoi(e->d_name)] = t;
  }
  closedir(d);
  return out;
}

// "name/tid=12.3%,..." CPU share of each thread between two samples over `wall_s` seconds,
// plus the process total. Threads below 0.5 % are left out.
inline std::string cpu_delta(const std::map<int, ThreadCpu>& a, const std::map<int, ThreadCpu>& b,
                             double wall_s, double* total_pct = nullptr) {
  std::string out;
  double total = 0;
  for (const auto& [tid, t] : b) {
    auto it = a.find(tid);
    const double d = t.seconds - (it == a.end() ? 0 : it->second.seconds);
    total += d;
    const double pct = 100.0 * d / wall_s;
    if (pct < 0.5) continue;
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s%s/%d=%.0f%%", out.empty() ? "" : ",", t.name.c_str(), tid,
                  pct);
    out += buf;
  }
  if (total_pct) *total_pct = 100.0 * total / wall_s;
  return out;
}

// CPU time the whole machine has spent busy (everything but idle and iowait, so interrupts and
// softirqs too, which no process is charged for) and in softirqs, from /proc/stat, in seconds.
struct MachineCpu {
  double busy_s = -1;
  double softirq_s = -1;
};

inline MachineCpu machine_cpu() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  // user nice system idle iowait irq softirq steal
  double v[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return {};
  for (double& x : v)
    if (!(in >> x)) return {};
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  MachineCpu m;
  m.busy_s = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
  m.softirq_s = v[6] / hz;
  return m;
}

inline double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// JSON string literal (the inputs here are plain ASCII; quotes and backslashes escaped).
inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace bench
