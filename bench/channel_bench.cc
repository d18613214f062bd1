// Data-channel throughput: writer -> engine -> reader, compared with a raw loopback TCP copy.
//
//   channel_bench --url ws://127.0.0.1:49134 [--bytes 1073741824] [--chunk-bytes 65536]
//                 [--buffer-size 64] [--runs 1] [--engine-pid PID] [--skip-raw] [--timeout-s 120]
//
// Each run creates a channel with the C++ SDK (`create_channel`, i.e. engine::channels::create
// {buffer_size}), and its ChannelWriter and ChannelReader run on two threads of this process:
// the writer pushes --bytes in binary messages of --chunk-bytes (64 KiB like the official SDKs;
// client frames are masked as RFC 6455 requires) and ends the stream. Throughput is taken at
// the reader: from just before the writer's first message until the reader has the last byte
// and the engine's Close frame. The first 8 bytes of every message carry its sequence number,
// so the reader checks that messages arrive complete and in order.
//
// The ceiling is the same transfer (same total, same chunk size) over one plain loopback TCP
// connection between two threads of this process, measured the same way (first write to EOF).
// The channel path crosses loopback twice and the engine copies each frame once, so on a
// machine with few cores it cannot reach 100 % of that ceiling.
//
// A transfer that has not finished after --timeout-s seconds is aborted: both sides' byte
// counts are printed and the run fails instead of hanging.
//
// With --engine-pid the engine's VmRSS is sampled every 100 ms during each channel transfer,
// and the engine's CPU time for the transfer is reported (ms per GB, and the throughput one
// engine core could sustain), which unlike MB/s hardly depends on other load on the machine.
// MB/s are 10^6 bytes per second. Prints a human line and a JSON line per run, and with
// --runs > 1 a summary (medians) at the end.
#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string url = "ws://127.0.0.1:49134";
  int64_t bytes = int64_t{1} << 30;
  int64_t chunk_bytes = 64 * 1024;
  int64_t buffer_size = 64;
  int runs = 1;
  long engine_pid = 0;
  bool skip_raw = false;
  double timeout_s = 120;  // per transfer; on expiry the progress is printed and the run fails
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: channel_bench [--url ws://127.0.0.1:49134] [--bytes N] [--chunk-bytes N]\n"
               "                     [--buffer-size N] [--runs N] [--engine-pid PID] [--skip-raw]\n"
               "                     [--timeout-s S]\n");
  std::exit(code);
}

int64_t parse_int(const std::string& flag, const std::string& s) {
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
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
    if (arg == "--skip-raw") {
      f.skip_raw = true;
      continue;
    }
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
    else if (name == "--bytes")
      f.bytes = parse_int(name, value);
    else if (name == "--chunk-bytes")
      f.chunk_bytes = parse_int(name, value);
    else if (name == "--buffer-size")
      f.buffer_size = parse_int(name, value);
    else if (name == "--runs")
      f.runs = static_cast<int>(parse_int(name, value));
    else if (name == "--engine-pid")
      f.engine_pid = static_cast<long>(parse_int(name, value));
    else if (name == "--timeout-s")
      f.timeout_s = static_cast<double>(parse_int(name, value));
    else {
      std::fprintf(stderr, "unknown flag %s\n", name.c_str());
      usage(2);
    }
  }
  if (f.chunk_bytes < 8 || f.bytes < f.chunk_bytes || f.runs < 1) usage(2);
  return f;
}

// Samples an engine's RSS every 100 ms until stopped.
class RssSampler {
 public:
  explicit RssSampler(long pid) : pid_(pid) {
    if (!pid_) return;
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        long v = bench::proc_status_kib(static_cast<int>(pid_), "VmRSS");
        if (v >= 0) {
          min_ = min_ < 0 ? v : std::min(min_, v);
          max_ = std::max(max_, v);
        }
        for (int i = 0; i < 10 && !stop_.load(); ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  // Returns {min, max} in KiB ({-1, -1} without a pid).
  std::pair<long, long> stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return {min_, max_};
  }
  ~RssSampler() { stop(); }

 private:
  long pid_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  long min_ = -1, max_ = -1;
};

// One chunk of payload; the first 8 bytes are overwritten with the sequence number.
std::string make_chunk(int64_t size) {
  std::string s(static_cast<size_t>(size), '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

void put_seq(std::string& chunk, uint64_t seq) { std::memcpy(chunk.data(), &seq, 8); }
bench::MachineCpu machine_delta(const bench::MachineCpu& a, const bench::MachineCpu& b) {
  if (a.busy_s < 0 || b.busy_s < 0) return {};
  return {b.busy_s - a.busy_s, b.softirq_s - a.softirq_s};
}

// CPU time of the calling thread, in seconds.
double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

uint64_t get_seq(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

struct TransferResult {
  bool ok = false;
  std::string error;
  int64_t received = 0;
  double seconds = 0;
  double engine_cpu_s = -1;   // engine CPU time during the transfer (with --engine-pid)
  double writer_cpu_s = 0;    // the writing thread's CPU time
  double reader_cpu_s = 0;    // the reading thread's CPU time
  bench::MachineCpu machine;  // the whole machine's CPU time during the transfer
  double mb_s() const { return seconds > 0 ? received / seconds / 1e6 : 0; }
};

// ---------------------------------------------------------------- channel through the engine

TransferResult run_channel(iii::III& client, const Flags& flags, long* rss_min, long* rss_max) {
  TransferResult r;
  std::optional<iii::Channel> ch;
  try {
    ch.emplace(client.create_channel(flags.buffer_size));
  } catch (const std::exception& e) {
    r.error = std::string("create_channel failed: ") + e.what();
    return r;
  }
  std::atomic<int64_t> t0_ns{0};
  std::atomic<int64_t> written{0}, received{0};
  std::atomic<bool> writer_done{false}, reader_done{false};
  std::string writer_error;
  const int64_t chunks = flags.bytes / flags.chunk_bytes;
  const int64_t tail = flags.bytes % flags.chunk_bytes;

  RssSampler sampler(flags.engine_pid);
  const int64_t cpu_before = flags.engine_pid ? bench::cpu_ns(flags.engine_pid) : -1;

  // Watchdog: a stuck transfer is reported with its progress and ends the process (the SDK's
  // blocking calls cannot be interrupted from outside).
  std::mutex wd_mu;
  std::condition_variable wd_cv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock lock(wd_mu);
    if (wd_cv.wait_for(lock, std::chrono::duration<double>(flags.timeout_s),
                       [&] { return finished; }))
      return;
    std::fprintf(stderr,
                 "channel transfer stuck after %.0f s: writer sent %lld bytes (%s), reader got "
                 "%lld bytes (%s)\n",
                 flags.timeout_s, static_cast<long long>(written.load()),
                 writer_done ? "finished" : "blocked", static_cast<long long>(received.load()),
                 reader_done ? "done" : "blocked");
    std::fflush(stderr);
    std::_Exit(3);
  });

  const bench::MachineCpu machine_before = bench::machine_cpu();
  // The reader connects first, as a worker handed the reader ref usually would.
  std::thread reader_thread([&] {
    uint64_t expected = 0;
    bool binary;
    std::string_view data;
    const double cpu0 = thread_cpu_s();
    try {
      while (ch->reader.next(&binary, &data)) {
        if (data.size() >= 8 && get_seq(data.data()) != expected && r.error.empty())
          r.error = "message " + std::to_string(expected) + " arrived out of order or corrupted";
        ++expected;
        r.received += static_cast<int64_t>(data.size());
        received.store(r.received, std::memory_order_relaxed);
      }
    } catch (const std::exception& e) {
      if (r.error.empty()) r.error = std::string("reader: ") + e.what();
    }
    reader_done = true;
    r.reader_cpu_s = thread_cpu_s() - cpu0;
    const auto t1 = Clock::now();
    r.seconds = std::chrono::duration<double>(t1.time_since_epoch() -
                                              std::chrono::nanoseconds(t0_ns.load()))
                    .count();
  });

  std::thread writer_thread([&] {
    std::string chunk = make_chunk(flags.chunk_bytes);
    const double cpu0 = thread_cpu_s();
    t0_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                .count();
    try {
      for (int64_t i = 0; i < chunks; ++i) {
        put_seq(chunk, static_cast<uint64_t>(i));
        ch->writer.write(chunk);
        written.fetch_add(flags.chunk_bytes, std::memory_order_relaxed);
      }
      if (tail > 0) {
        chunk.resize(static_cast<size_t>(std::max<int64_t>(tail, 8)));
        put_seq(chunk, static_cast<uint64_t>(chunks));
        ch->writer.write(std::string_view(chunk.data(), static_cast<size_t>(tail)));
      }
      ch->writer.end();
    } catch (const std::exception& e) {
      writer_error = std::string("writer: ") + e.what();
    }
    r.writer_cpu_s = thread_cpu_s() - cpu0;
    writer_done = true;
  });

  writer_thread.join();
  reader_thread.join();
  r.machine = machine_delta(machine_before, bench::machine_cpu());
  {
    std::lock_guard lock(wd_mu);
    finished = true;
  }
  wd_cv.notify_all();
  watchdog.join();
  if (cpu_before >= 0) {
    const int64_t cpu_after = bench::cpu_ns(flags.engine_pid);
    if (cpu_after >= 0) r.engine_cpu_s = (cpu_after - cpu_before) / 1e9;
  }
  auto [mn, mx] = sampler.stop();
  *rss_min = mn;
  *rss_max = mx;
  if (r.error.empty() && !writer_error.empty()) r.error = writer_error;
  if (r.error.empty() && r.received != flags.bytes)
    r.error =
        "received " + std::to_string(r.received) + " of " + std::to_string(flags.bytes) + " bytes";
  r.ok = r.error.empty();
  return r;
}

// ---------------------------------------------------------------- raw loopback TCP ceiling

TransferResult run_raw_tcp(const Flags& flags) {
  TransferResult r;
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto ep = acceptor.local_endpoint();
  tcp::socket out(ioc);
  error_code ec;
  out.connect(ep, ec);
  if (ec) {
    r.error = "raw connect: " + ec.message();
    return r;
  }
  tcp::socket in = acceptor.accept(ec);
  if (ec) {
    r.error = "raw accept: " + ec.message();
    return r;
  }
  out.set_option(tcp::no_delay(true), ec);
  in.set_option(tcp::no_delay(true), ec);

  std::atomic<int64_t> t0_ns{0};
  const int64_t chunks = flags.bytes / flags.chunk_bytes;
  const int64_t tail = flags.bytes % flags.chunk_bytes;

  const bench::MachineCpu machine_before = bench::machine_cpu();
  std::thread reader([&] {
    std::vector<char> buf(static_cast<size_t>(flags.chunk_bytes));
    error_code rec;
    const double cpu0 = thread_cpu_s();
    for (;;) {
      size_t n = in.read_some(asio::buffer(buf), rec);
      r.received += static_cast<int64_t>(n);
      if (rec) break;
    }
    r.reader_cpu_s = thread_cpu_s() - cpu0;
    const auto t1 = Clock::now();
    if (rec != asio::error::eof) r.error = "raw reader: " + rec.message();
    r.seconds = std::chrono::duration<double>(t1.time_since_epoch() -
                                              std::chrono::nanoseconds(t0_ns.load()))
                    .count();
  });
  std::thread writer([&] {
    std::string chunk = make_chunk(flags.chunk_bytes);
    error_code wec;
    const double cpu0 = thread_cpu_s();
    t0_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                .count();
    for (int64_t i = 0; i < chunks && !wec; ++i) {
      put_seq(chunk, static_cast<uint64_t>(i));
      asio::write(out, asio::buffer(chunk), wec);
    }
    if (!wec && tail > 0) asio::write(out, asio::buffer(chunk.data(), size_t(tail)), wec);
    out.shutdown(tcp::socket::shutdown_send, wec);
    r.writer_cpu_s = thread_cpu_s() - cpu0;
  });
  writer.join();
  reader.join();
  r.machine = machine_delta(machine_before, bench::machine_cpu());
  if (r.error.empty() && r.received != flags.bytes)
    r.error = "raw: received " + std::to_string(r.received) + " bytes";
  r.ok = r.error.empty();
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  iii::InitOptions opts;
  opts.worker_name = "channel-bench";
  auto client = iii::register_worker(flags.url, opts);
  if (!client->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", flags.url.c_str(),
                 client->last_error().c_str());
    return 1;
  }

  std::vector<double> engine_mbs, raw_mbs, ratios;
  int exit_code = 0;
  for (int run = 0; run < flags.runs; ++run) {
    long rss_min = -1, rss_max = -1;
    TransferResult ch = run_channel(*client, flags, &rss_min, &rss_max);
    TransferResult raw;
    if (!flags.skip_raw) raw = run_raw_tcp(flags);
    if (!ch.ok) {
      std::fprintf(stderr, "channel transfer failed: %s\n", ch.error.c_str());
      exit_code = 1;
    }
    if (!flags.skip_raw && !raw.ok) {
      std::fprintf(stderr, "raw TCP transfer failed: %s\n", raw.error.c_str());
      exit_code = 1;
    }
    const double ratio = raw.mb_s() > 0 ? ch.mb_s() / raw.mb_s() : 0;
    engine_mbs.push_back(ch.mb_s());
    raw_mbs.push_back(raw.mb_s());
    ratios.push_back(ratio);
    std::printf(
        "channel run=%d bytes=%lld chunk=%lldB buffer_size=%lld: engine %.1f MB/s (%.3f s)  "
        "raw loopback TCP %.1f MB/s (%.3f s)  ratio %.1f%%",
        run + 1, static_cast<long long>(flags.bytes), static_cast<long long>(flags.chunk_bytes),
        static_cast<long long>(flags.buffer_size), ch.mb_s(), ch.seconds, raw.mb_s(), raw.seconds,
        ratio * 100);
    // Engine CPU per GB, and the rate the engine could sustain if it had a core to itself.
    const double cpu_ms_per_gb =
        ch.engine_cpu_s > 0 ? ch.engine_cpu_s * 1e3 / (ch.received / 1e9) : -1;
    const double cpu_bound_mb_s = ch.engine_cpu_s > 0 ? ch.received / ch.engine_cpu_s / 1e6 : -1;
    if (flags.engine_pid)
      std::printf(
          "  engine RSS min=%ld KiB max=%ld KiB  engine CPU %.3f s (%.0f ms/GB, "
          "%.0f MB/s per engine core)",
          rss_min, rss_max, ch.engine_cpu_s, cpu_ms_per_gb, cpu_bound_mb_s);
    // Client threads' CPU per GB: the writer and reader of the channel, and the raw copy's.
    auto per_gb = [](double s, const TransferResult& t) {
      return t.received > 0 ? s * 1e3 / (t.received / 1e9) : 0;
    };
    std::printf("  clients CPU ms/GB: channel writer %.0f reader %.0f", per_gb(ch.writer_cpu_s, ch),
                per_gb(ch.reader_cpu_s, ch));
    if (!flags.skip_raw)
      std::printf(", raw writer %.0f reader %.0f", per_gb(raw.writer_cpu_s, raw),
                  per_gb(raw.reader_cpu_s, raw));
    // The whole machine, softirqs included: what the transfer cost in all.
    std::printf("  machine CPU ms/GB: channel %.0f (softirq %.0f)", per_gb(ch.machine.busy_s, ch),
                per_gb(ch.machine.softirq_s, ch));
    if (!flags.skip_raw)
      std::printf(", raw %.0f (softirq %.0f)", per_gb(raw.machine.busy_s, raw),
                  per_gb(raw.machine.softirq_s, raw));
    std::printf("\n");
    std::printf(
        "{\"bench\":\"channel\",\"run\":%d,\"bytes\":%lld,\"chunk_bytes\":%lld,"
        "\"buffer_size\":%lld,\"engine_mb_s\":%.1f,\"engine_s\":%.4f,\"raw_tcp_mb_s\":%.1f,"
        "\"raw_tcp_s\":%.4f,\"ratio\":%.3f,\"engine_rss_min_kib\":%ld,\"engine_rss_max_kib\":%ld,"
        "\"engine_cpu_s\":%.4f,\"engine_cpu_ms_per_gb\":%.1f,\"writer_cpu_ms_per_gb\":%.1f,"
        "\"reader_cpu_ms_per_gb\":%.1f,\"raw_writer_cpu_ms_per_gb\":%.1f,"
        "\"raw_reader_cpu_ms_per_gb\":%.1f,\"machine_cpu_ms_per_gb\":%.1f,"
        "\"raw_machine_cpu_ms_per_gb\":%.1f,\"ok\":%s}\n",
        run + 1, static_cast<long long>(flags.bytes), static_cast<long long>(flags.chunk_bytes),
        static_cast<long long>(flags.buffer_size), ch.mb_s(), ch.seconds, raw.mb_s(), raw.seconds,
        ratio, rss_min, rss_max, ch.engine_cpu_s, cpu_ms_per_gb, per_gb(ch.writer_cpu_s, ch),
        per_gb(ch.reader_cpu_s, ch), per_gb(raw.writer_cpu_s, raw), per_gb(raw.reader_cpu_s, raw),
        per_gb(ch.machine.busy_s, ch), per_gb(raw.machine.busy_s, raw),
        ch.ok && (flags.skip_raw || raw.ok) ? "true" : "false");
    std::fflush(stdout);
  }
  if (flags.runs > 1) {
    std::printf(
        "channel median of %d runs: engine %.1f MB/s  raw loopback TCP %.1f MB/s  "
        "ratio %.1f%%\n",
        flags.runs, median(engine_mbs), median(raw_mbs), median(ratios) * 100);
    std::printf(
        "{\"bench\":\"channel_median\",\"runs\":%d,\"engine_mb_s\":%.1f,"
        "\"raw_tcp_mb_s\":%.1f,\"ratio\":%.3f}\n",
        flags.runs, median(engine_mbs), median(raw_mbs), median(ratios));
  }
  client->shutdown();
  return exit_code;
}
