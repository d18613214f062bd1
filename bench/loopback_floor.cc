// What this machine's loopback TCP can do with no engine at all: the floors that the engine's
// figures in docs/performance.md are compared with. Plain blocking POSIX sockets, no WebSocket,
// no JSON, processes made with fork() so that every hop crosses a process boundary as it does
// between the engine and its workers.
//
//   loopback_floor [--mode rtt,relay,copy,fanout] [--samples 30000] [--copy-bytes 4294967296]
//                  [--fanout 1000] [--rounds 200]
//
//   rtt     one 100 B round trip between two processes: p50/p99.
//   relay   caller -> relay -> echo -> relay -> caller, 100 B, the relay does nothing but
//           forward: the least an invoke round trip through any broker process can take here.
//   copy    4 GiB from one thread to another in 64 KiB send()/recv() calls: MB/s and the CPU
//           time both sides spend per GB (the ceiling the channel benchmark is compared with).
//   fanout  one process sends a 150 B message to each of N connected sockets, one send() each,
//           as a stream fan-out must; a second process receives them with epoll. Reports the
//           sender's CPU per send and the time from the first send to the last receive.
//
// Human-readable line and JSON line per mode.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int listen_loopback(int backlog, int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(fd, backlog) != 0)
    die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int connect_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  nodelay(fd);
  return fd;
}

int accept_one(int lfd) {
  int fd = accept(lfd, nullptr, nullptr);
  if (fd < 0) die("accept");
  nodelay(fd);
  return fd;
}

bool read_exact(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// p50 and p99 of unsorted samples.
std::pair<double, double> p50_p99(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return {bench::percentile(v, 0.5), bench::percentile(v, 0.99)};
}

constexpr size_t kMsg = 100;

// Echoes fixed-size messages until the peer closes.
[[noreturn]] void echo_forever(int fd) {
  char b[kMsg];
  while (read_exact(fd, b, kMsg) && write_all(fd, b, kMsg)) {
  }
  _exit(0);
}

void round_trips(int fd, int samples, const char* mode) {
  char b[kMsg] = {};
  std::vector<double> us;
  us.reserve(static_cast<size_t>(samples));
  for (int i = 0; i < samples + samples / 10; ++i) {  // the first tenth warms up
    const auto t0 = Clock::now();
    if (!write_all(fd, b, kMsg) || !read_exact(fd, b, kMsg)) die("round trip");
    if (i >= samples / 10)
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const auto [p50, p99] = p50_p99(us);
  std::printf("%-6s 100 B: p50=%.1fus p99=%.1fus (samples=%d)\n", mode, p50, p99, samples);
  std::printf("{\"bench\":\"loopback_floor\",\"mode\":\"%s\",\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
              mode, p50, p99);
}

void mode_rtt(int samples) {
  int port;
  int lfd = listen_loopback(1, &port);
  if (fork() == 0) echo_forever(connect_loopback(port));
  int fd = accept_one(lfd);
  round_trips(fd, samples, "rtt");
  close(fd);
  while (wait(nullptr) > 0) {
  }
  close(lfd);
}

void mode_relay(int samples) {
  int caller_port, worker_port;
  int caller_l = listen_loopback(1, &caller_port);
  int worker_l = listen_loopback(1, &worker_port);
  if (fork() == 0) echo_forever(connect_loopback(worker_port));  // the "worker"
  if (fork() == 0) {                                             // the "engine"
    int worker = accept_one(worker_l);
    int caller = accept_one(caller_l);
    char b[kMsg];
    while (read_exact(caller, b, kMsg) && write_all(worker, b, kMsg) &&
           read_exact(worker, b, kMsg) && write_all(caller, b, kMsg)) {
    }
    _exit(0);
  }
  int fd = connect_loopback(caller_port);
  round_trips(fd, samples, "relay");
  close(fd);
  while (wait(nullptr) > 0) {
  }
  close(caller_l);
  close(worker_l);
}

void mode_copy(long long bytes) {
  constexpr size_t kChunk = 64 * 1024;
  int port;
  int lfd = listen_loopback(1, &port);
  int out = connect_loopback(port);
  int in = accept_one(lfd);
  const double cpu0 = bench::self_cpu_seconds();
  const auto t0 = Clock::now();
  std::atomic<long long> received{0};
  std::thread reader([&] {
    std::vector<char> b(kChunk);
    long long got = 0;
    for (ssize_t n; (n = recv(in, b.data(), b.size(), 0)) > 0;) got += n;
    received = got;
  });
  std::vector<char> chunk(kChunk, 'x');
  for (long long sent = 0; sent < bytes; sent += kChunk)
    if (!write_all(out, chunk.data(), kChunk)) die("copy");
  shutdown(out, SHUT_WR);
  reader.join();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = bench::self_cpu_seconds() - cpu0;
  const double gb = static_cast<double>(received.load()) / 1e9;
  std::printf(
      "copy   %.2f GB in 64 KiB calls: %.1f MB/s, CPU %.0f ms/GB (sender + receiver, "
      "%.2f cores)\n",
      gb, gb * 1e3 / s, cpu * 1e3 / gb, cpu / s);
  std::printf(
      "{\"bench\":\"loopback_floor\",\"mode\":\"copy\",\"mb_s\":%.1f,"
      "\"cpu_ms_per_gb\":%.0f,\"cores\":%.2f}\n",
      gb * 1e3 / s, cpu * 1e3 / gb, cpu / s);
  close(in);
  close(out);
  close(lfd);
}

// One sender process writes one message to each of N sockets per round; the receiver process
// reads them with epoll and answers on a control socket when a round has fully arrived.
void mode_fanout(int n, int rounds) {
  constexpr size_t kEvent = 150;
  int port, ctl_port;
  int lfd = listen_loopback(n + 16, &port);
  int ctl_l = listen_loopback(1, &ctl_port);
  if (fork() == 0) {  // subscribers
    int ctl = connect_loopback(ctl_port);
    std::vector<int> fds;
    int ep = epoll_create1(0);
    for (int i = 0; i < n; ++i) {
      int fd = connect_loopback(port);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      fds.push_back(fd);
    }
    std::vector<epoll_event> evs(1024);
    char b[kEvent * 8];
    long long bytes = 0;
    const long long round_bytes = static_cast<long long>(n) * kEvent;
    for (;;) {
      int k = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), -1);
      for (int i = 0; i < k; ++i) {
        ssize_t r = recv(evs[i].data.fd, b, sizeof b, 0);
        if (r <= 0) _exit(0);
        bytes += r;
      }
      while (bytes >= round_bytes) {
        bytes -= round_bytes;
        if (!write_all(ctl, "r", 1)) _exit(0);
      }
    }
  }
  int ctl = accept_one(ctl_l);
  std::vector<int> subs;
  for (int i = 0; i < n; ++i) subs.push_back(accept_one(lfd));
  char ev[kEvent];
  std::memset(ev, 'e', sizeof ev);
  std::vector<double> round_us;
  const double cpu0 = bench::self_cpu_seconds();
  const auto start = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    for (int fd : subs)
      if (!write_all(fd, ev, kEvent)) die("fanout send");
    char c;
    if (!read_exact(ctl, &c, 1)) die("fanout ack");
    round_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const double events_s =
      static_cast<double>(rounds) * n / std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu_us_per_send =
      (bench::self_cpu_seconds() - cpu0) * 1e6 / (static_cast<double>(rounds) * n);
  const auto [p50, p99] = p50_p99(round_us);
  std::printf(
      "fanout %d sockets x %d rounds back to back: %.0f events/s; one send() costs the "
      "sender %.2f us CPU; first send to last receive p50=%.0fus p99=%.0fus\n",
      n, rounds, events_s, cpu_us_per_send, p50, p99);
  std::printf(
      "{\"bench\":\"loopback_floor\",\"mode\":\"fanout\",\"sockets\":%d,"
      "\"events_s\":%.0f,\"sender_cpu_us_per_send\":%.2f,\"round_p50_us\":%.0f,"
      "\"round_p99_us\":%.0f}\n",
      n, events_s, cpu_us_per_send, p50, p99);
  for (int fd : subs) close(fd);
  close(ctl);
  while (wait(nullptr) > 0) {
  }
  close(lfd);
  close(ctl_l);
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {"--mode", "--samples", "--copy-bytes", "--fanout", "--rounds"},
                           "usage: loopback_floor [--mode rtt,relay,copy,fanout] [--samples N] "
                           "[--copy-bytes N] [--fanout N] [--rounds N]\n");
  const auto modes = flags.words("--mode", {"rtt", "relay", "copy", "fanout"});
  const int samples = static_cast<int>(flags.integer("--samples", 30000));
  const int fanout = static_cast<int>(flags.integer("--fanout", 1000));
  const int rounds = static_cast<int>(flags.integer("--rounds", 200));
  const long long copy_bytes = flags.integer("--copy-bytes", 4LL << 30);
  if (samples < 10 || fanout < 1 || rounds < 1 || copy_bytes < (1 << 16))
    flags.fail("loopback_floor: invalid argument");
  for (const std::string& m : modes)
    if (m != "rtt" && m != "relay" && m != "copy" && m != "fanout") flags.fail("unknown mode " + m);
  const auto has = [&](const char* m) {
    return std::find(modes.begin(), modes.end(), m) != modes.end();
  };
  if (has("rtt")) mode_rtt(samples);
  if (has("relay")) mode_relay(samples);
  if (has("copy")) mode_copy(copy_bytes);
  if (has("fanout")) mode_fanout(fanout, rounds);
  return 0;
}
