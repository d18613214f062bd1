// iii-http round trip benchmark: HTTP client -> engine (iii-http) -> worker -> engine -> client,
// next to floors measured in the same run.
//
//   http_bench --binary build/release/iii [--concurrency 1,8,128] [--body-bytes 100,1048576]
//              [--rps-concurrency 64] [--routes 1000] [--batch 8] [--batches 200]
//              [--duration-s 2] [--warmup-s 0.5] [--modes latency,rps,routes,nagle]
//
// The tool starts the engine itself (`--binary`, a config with iii-worker-manager on a free port
// and iii-http on port 0: the port is read from the "iii-http listening on host:port" log line)
// or uses a running one (`--url ws://host:port --http-port N`). One C++ SDK worker registers
// `bench::http_echo` (returns {status_code: 200, body: <request body, or path_params>}) and binds
// it to `POST /echo` and `GET /r/:id` with `http` triggers. The HTTP client is one thread with
// epoll and plain non-blocking keep-alive sockets (TCP_NODELAY): N connections, each sending
// its next request as soon as the previous response is complete.
//
// Modes (each prints a human-readable line and a JSON line per measurement):
//   latency  p50/p99 per concurrency and body size, for three paths driven the same way:
//              http    the engine's iii-http and the worker,
//              floor   a bare HTTP echo server (forked child of this process: one thread, epoll,
//                      keep-alive, no engine) with the same client and concurrency,
//              invoke  a C++ SDK caller triggering bench::http_echo directly (the worker invoke
//                      round trip, as invoke_bench measures it), payload {"body": <body>}.
//   rps      requests per second at --rps-concurrency (100 B), http and floor.
//   routes   POST /echo and GET /r/42 at concurrency 1 (100 B) with the two routes above, then
//            again once --routes routes in all are registered (POST /echo<i>, GET
//            /api/items<i>/:id).
//   nagle    batches of --batch concurrent requests (POST /echo, 100 B, on --batch connections)
//            vs single requests, against the normal worker (TCP_NODELAY, as the SDK sets it) and
//            against a second worker whose WebSocket socket has Nagle's algorithm back on (the
//            bench clears TCP_NODELAY on the SDK's socket after it connected), bound to
//            `POST /echo-nagle`. Reports the p50/p99 time of a whole batch and of one request,
//            and the same for the bare server.
//
// Latency samples are the requests issued in the window (after --warmup-s, for --duration-s),
// including those that complete after it; req/s counts the completions inside the window.
//
// With an engine it started (or --engine-pid) the engine's CPU time per request is reported too.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "iii/iii.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "http_bench: %s (%s)\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

void set_nodelay(int fd, int on) { setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on); }

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

int listen_loopback(uint16_t port, uint16_t* bound) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 1024) != 0)
    die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound = ntohs(a.sin_port);
  return fd;
}

int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  set_nodelay(fd, 1);
  set_nonblocking(fd);
  return fd;
}

// Content-Length of a header block (case-insensitive), or -1.
long content_length(std::string_view head) {
  static const std::string_view kName = "content-length:";
  for (size_t i = 0; i + kName.size() <= head.size(); ++i) {
    if (strncasecmp(head.data() + i, kName.data(), kName.size()) != 0) continue;
    if (i > 0 && head[i - 1] != '\n') continue;
    return std::strtol(head.data() + i + kName.size(), nullptr, 10);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// The floor: a bare keep-alive HTTP echo server (one thread, epoll), run in a forked child.

[[noreturn]] void floor_server(int listen_fd) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  set_nonblocking(listen_fd);
  int ep = epoll_create1(0);
  epoll_event ev{EPOLLIN, {.fd = listen_fd}};
  epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
  struct Peer {
    std::string in, out;
    size_t out_pos = 0;
  };
  std::vector<std::unique_ptr<Peer>> peers(65536);
  std::vector<char> buf(256 * 1024);
  epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd) {
        for (;;) {
          int c = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          set_nodelay(c, 1);
          peers[c] = std::make_unique<Peer>();
          epoll_event cev{EPOLLIN, {.fd = c}};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      Peer& p = *peers[fd];
      bool closed = false;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = read(fd, buf.data(), buf.size());
          if (r > 0) {
            p.in.append(buf.data(), r);
            continue;
          }
          if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
          break;
        }
      }
      // Answer every complete request in the input.
      for (;;) {
        const size_t he = p.in.find("\r\n\r\n");
        if (he == std::string::npos) break;
        const long cl = std::max(0L, content_length(std::string_view(p.in).substr(0, he + 2)));
        if (p.in.size() < he + 4 + cl) break;
        p.out += "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " +
                 std::to_string(cl) + "\r\n\r\n";
        p.out.append(p.in, he + 4, cl);
        p.in.erase(0, he + 4 + cl);
      }
      while (!closed && p.out_pos < p.out.size()) {
        ssize_t w = write(fd, p.out.data() + p.out_pos, p.out.size() - p.out_pos);
        if (w > 0) {
          p.out_pos += w;
        } else {
          if (errno != EAGAIN && errno != EWOULDBLOCK) closed = true;
          break;
        }
      }
      if (p.out_pos == p.out.size()) {
        p.out.clear();
        p.out_pos = 0;
      }
      if (closed) {
        close(fd);
        peers[fd].reset();
        continue;
      }
      epoll_event mev{
          static_cast<uint32_t>(EPOLLIN) | (p.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT)),
          {.fd = fd}};
      epoll_ctl(ep, EPOLL_CTL_MOD, fd, &mev);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The client: N keep-alive connections on one epoll thread.

struct Conn {
  int fd = -1;
  const std::string* request = nullptr;
  size_t sent = 0;
  std::string in;
  size_t header_end = 0;  // 0 until the header block is complete
  size_t total = 0;       // header + body bytes of the response
  Clock::time_point t0;
  bool busy = false;
  bool want_out = false;
};

struct Sample {
  std::vector<int64_t> ns;  // sorted latencies
  int64_t completed = 0;    // in the measuring window
  int64_t errors = 0;
  std::string first_error;
  double window_s = 0;
};

class Client {
 public:
  Client(uint16_t port, size_t n) : port_(port), ep_(epoll_create1(0)), buf_(256 * 1024) {
    conns_.resize(n);
    for (auto& c : conns_) {
      c.fd = connect_loopback(port);
      epoll_event ev{EPOLLIN, {.ptr = &c}};
      epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
    }
  }
  ~Client() {
    for (auto& c : conns_) close(c.fd);
    close(ep_);
  }

  // Every connection loops request -> response from now until warmup + duration.
  Sample run(const std::vector<const std::string*>& requests, double warmup_s, double duration_s,
             int64_t* total_completed) {
    Sample s;
    const auto start = Clock::now();
    const auto m0 = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(warmup_s));
    const auto m1 =
        m0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration_s));
    size_t next_req = 0;
    for (auto& c : conns_) begin(c, requests[next_req++ % requests.size()]);
    size_t busy = conns_.size();
    int64_t total = 0;
    while (busy > 0) {
      poll([&](Conn& c, bool ok, const std::string& err) {
        const auto t1 = Clock::now();
        if (!ok) {
          if (s.errors++ == 0) s.first_error = err;
        } else {
          ++total;
          if (t1 >= m0 && t1 <= m1) ++s.completed;
          // Every request issued in the window counts, even if it ends after it: a 1 MiB
          // request at concurrency 128 can take longer than the whole window.
          if (c.t0 >= m0) s.ns.push_back((t1 - c.t0).count());
        }
        if (t1 < m1 && ok)
          begin(c, requests[next_req++ % requests.size()]);
        else
          --busy;
      });
    }
    std::sort(s.ns.begin(), s.ns.end());
    s.window_s = duration_s;
    if (total_completed) *total_completed = total;
    return s;
  }

  // `batches` times: one request on each connection at once; the time until the last response.
  Sample batches(const std::string& request, int64_t batches) {
    Sample s;
    for (int64_t b = 0; b < batches; ++b) {
      const auto t0 = Clock::now();
      for (auto& c : conns_) begin(c, &request);
      size_t busy = conns_.size();
      bool failed = false;
      while (busy > 0) {
        poll([&](Conn&, bool ok, const std::string& err) {
          if (!ok && s.errors++ == 0) s.first_error = err;
          failed |= !ok;
          --busy;
        });
      }
      if (!failed) {
        s.ns.push_back((Clock::now() - t0).count());
        ++s.completed;
      }
    }
    std::sort(s.ns.begin(), s.ns.end());
    return s;
  }

 private:
  void begin(Conn& c, const std::string* request) {
    c.request = request;
    c.sent = 0;
    c.in.clear();
    c.header_end = c.total = 0;
    c.busy = true;
    c.t0 = Clock::now();
    flush(c);
  }

  void flush(Conn& c) {
    while (c.sent < c.request->size()) {
      ssize_t w = write(c.fd, c.request->data() + c.sent, c.request->size() - c.sent);
      if (w > 0) {
        c.sent += w;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) die("write");
      break;
    }
    const bool want = c.sent < c.request->size();
    if (want != c.want_out) {
      c.want_out = want;
      epoll_event ev{static_cast<uint32_t>(EPOLLIN) | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u),
                     {.ptr = &c}};
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    }
  }

  template <typename Done>
  void poll(Done&& done) {
    epoll_event events[256];
    int n = epoll_wait(ep_, events, 256, 30000);
    if (n == 0) {
      std::fprintf(stderr, "http_bench: no response for 30 s\n");
      std::exit(1);
    }
    for (int i = 0; i < n; ++i) {
      Conn& c = *static_cast<Conn*>(events[i].data.ptr);
      if (events[i].events & EPOLLOUT) flush(c);
      if (!(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      for (;;) {
        ssize_t r = read(c.fd, buf_.data(), buf_.size());
        if (r > 0) {
          c.in.append(buf_.data(), r);
          if (static_cast<size_t>(r) < buf_.size()) break;
          continue;
        }
        if (r == 0) die("connection closed by the server");
        if (errno != EAGAIN && errno != EWOULDBLOCK) die("read");
        break;
      }
      if (!c.busy) continue;
      if (c.header_end == 0) {
        const size_t he = c.in.find("\r\n\r\n");
        if (he == std::string::npos) continue;
        c.header_end = he + 4;
        const long cl = content_length(std::string_view(c.in).substr(0, he + 2));
        if (cl < 0) die("response without content-length");
        c.total = c.header_end + cl;
      }
      if (c.in.size() < c.total) continue;
      c.busy = false;
      const bool ok = c.in.compare(0, 12, "HTTP/1.1 200") == 0;
      done(c, ok, ok ? std::string() : c.in.substr(0, std::min<size_t>(c.in.size(), 300)));
    }
  }

  uint16_t port_;
  int ep_;
  std::vector<char> buf_;
  std::vector<Conn> conns_;
};

std::string http_request(const std::string& method, const std::string& target,
                         const std::string& body) {
  std::string r = method + " " + target + " HTTP/1.1\r\nhost: 127.0.0.1\r\n";
  if (!body.empty())
    r +=
        "content-type: application/json\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
  r += "\r\n";
  return r + body;
}

// A JSON string literal of exactly `bytes` bytes (quotes included).
std::string json_body(int64_t bytes) {
  return "\"" + std::string(std::max<int64_t>(0, bytes - 2), 'x') + "\"";
}

// ---------------------------------------------------------------------------------------------
// The engine.

struct Engine {
  pid_t pid = 0;
  std::string log_path, config_path;
  uint16_t ws_port = 0, http_port = 0;
};

uint16_t free_port() {
  uint16_t port = 0;
  int fd = listen_loopback(0, &port);
  close(fd);
  return port;
}

Engine start_engine(const std::string& binary) {
  Engine e;
  char dir[] = "/tmp/http_bench.XXXXXX";
  if (!mkdtemp(dir)) die("mkdtemp");
  e.log_path = std::string(dir) + "/engine.log";
  e.config_path = std::string(dir) + "/config.yaml";
  e.ws_port = free_port();
  {
    std::ofstream cfg(e.config_path);
    cfg << "workers:\n"
        << "  - name: iii-worker-manager\n"
        << "    config: { host: 127.0.0.1, port: " << e.ws_port << " }\n"
        << "  - name: iii-http\n"
        << "    config: { host: 127.0.0.1, port: 0 }\n";
  }
  e.pid = fork();
  if (e.pid < 0) die("fork");
  if (e.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int fd = open(e.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(binary.c_str(), binary.c_str(), "--config", e.config_path.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    std::ifstream in(e.log_path);
    std::string line;
    bool ws_up = false;
    while (std::getline(in, line)) {
      if (auto at = line.find("iii-http listening on "); at != std::string::npos)
        e.http_port = static_cast<uint16_t>(std::atoi(line.c_str() + line.rfind(':') + 1));
      if (line.find("listening on") != std::string::npos &&
          line.find(":" + std::to_string(e.ws_port)) != std::string::npos)
        ws_up = true;
    }
    if (e.http_port && ws_up) return e;
    if (waitpid(e.pid, nullptr, WNOHANG) == e.pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "http_bench: the engine did not start; its log (%s):\n", e.log_path.c_str());
  std::ifstream in(e.log_path);
  std::fprintf(stderr, "%s\n", std::string(std::istreambuf_iterator<char>(in), {}).c_str());
  std::exit(1);
}

// ---------------------------------------------------------------------------------------------
// The workers.

json::value echo(const json::value& in) {
  const auto* o = in.if_object();
  const json::value* body = o ? o->if_contains("body") : nullptr;
  json::object out{{"status_code", 200}};
  if (body && !body->is_null())
    out["body"] = *body;
  else if (const auto* pp = o ? o->if_contains("path_params") : nullptr)
    out["body"] = *pp;
  else
    out["body"] = nullptr;
  return out;
}

void bind_http(iii::III& w, const std::string& fn, const std::string& method,
               const std::string& path) {
  iii::TriggerConfig t;
  t.type = "http";
  t.function_id = fn;
  t.config = json::object{{"api_path", path}, {"http_method", method}};
  w.register_trigger(std::move(t));
}

// TCP socket file descriptors of this process connected to 127.0.0.1:`port`.
std::set<int> sockets_to(uint16_t port) {
  std::set<int> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(e.path().filename().c_str());
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
        peer.sin_family == AF_INET && ntohs(peer.sin_port) == port)
      out.insert(fd);
  }
  return out;
}

// Polls `target` until it answers 200 (registrations travel asynchronously).
void wait_route(uint16_t http_port, const std::string& request) {
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    Client c(http_port, 1);
    auto s = c.batches(request, 1);
    if (s.errors == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr, "http_bench: route never answered: %s\n", request.substr(0, 60).c_str());
  std::exit(1);
}

// ---------------------------------------------------------------------------------------------
// Invoke round trip through the SDK (as invoke_bench).

struct InvokeRun {
  iii::III* caller = nullptr;
  iii::TriggerRequest request;
  Clock::time_point m0, m1;
  std::vector<int64_t> ns;
  int64_t completed = 0, total = 0, errors = 0, lanes = 0;
  std::string first_error;
  std::promise<void> done;
};

void issue(InvokeRun* run) {
  const auto t0 = Clock::now();
  run->caller->trigger_async(run->request, [run, t0](iii::TriggerOutcome o) {
    const auto t1 = Clock::now();
    if (!o.ok()) {
      if (run->errors++ == 0) run->first_error = o.error->what();
    } else {
      ++run->total;
      if (t1 >= run->m0 && t1 <= run->m1) ++run->completed;
      if (t0 >= run->m0) run->ns.push_back((t1 - t0).count());  // as Client::run
    }
    if (t1 < run->m1)
      issue(run);
    else if (--run->lanes == 0)
      run->done.set_value();
  });
}

Sample invoke(iii::III& caller, const std::string& fn, const std::string& body, int64_t concurrency,
              double warmup_s, double duration_s, int64_t* total) {
  InvokeRun run;
  run.caller = &caller;
  run.request.function_id = fn;
  run.request.payload = json::object{{"body", json::string(body.substr(1, body.size() - 2))}};
  const auto start = Clock::now();
  run.m0 =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_s));
  run.m1 = run.m0 +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration_s));
  run.lanes = concurrency;
  auto finished = run.done.get_future();
  for (int64_t i = 0; i < concurrency; ++i) issue(&run);
  finished.wait();
  Sample s;
  s.ns = std::move(run.ns);
  std::sort(s.ns.begin(), s.ns.end());
  s.completed = run.completed;
  s.errors = run.errors;
  s.first_error = run.first_error;
  s.window_s = duration_s;
  if (total) *total = run.total;
  return s;
}

// ---------------------------------------------------------------------------------------------

struct Report {
  long engine_pid = 0;
  std::string label;

  void print(const std::string& mode, const std::string& path, const std::string& variant,
             int64_t concurrency, int64_t body_bytes, const Sample& s, double engine_cpu_us) {
    const double p50 = bench::percentile(s.ns, 0.50) / 1e3,
                 p99 = bench::percentile(s.ns, 0.99) / 1e3;
    const double rps = s.window_s > 0 ? s.completed / s.window_s : 0;
    std::printf(
        "%-7s %-6s %-14s c=%-4lld body=%-8lld p50=%9.1fus p99=%9.1fus %8.0f req/s "
        "samples=%zu errors=%lld",
        mode.c_str(), path.c_str(), variant.c_str(), static_cast<long long>(concurrency),
        static_cast<long long>(body_bytes), p50, p99, rps, s.ns.size(),
        static_cast<long long>(s.errors));
    if (engine_cpu_us >= 0) std::printf(" engine_cpu=%.1fus/req", engine_cpu_us);
    std::printf("\n");
    if (s.errors) std::printf("  first error: %s\n", s.first_error.c_str());
    std::printf(
        "{\"bench\":\"http\",\"label\":%s,\"mode\":\"%s\",\"path\":\"%s\",\"variant\":\"%s\","
        "\"concurrency\":%lld,\"body_bytes\":%lld,\"p50_us\":%.1f,\"p99_us\":%.1f,"
        "\"req_per_s\":%.1f,\"samples\":%zu,\"errors\":%lld,\"engine_cpu_us\":%.2f}\n",
        bench::quote(label).c_str(), mode.c_str(), path.c_str(), variant.c_str(),
        static_cast<long long>(concurrency), static_cast<long long>(body_bytes), p50, p99, rps,
        s.ns.size(), static_cast<long long>(s.errors), engine_cpu_us);
    std::fflush(stdout);
  }
};

double cpu_per(long pid, int64_t before, int64_t count) {
  if (!pid || before < 0 || count <= 0) return -1;
  const int64_t after = bench::cpu_ns(pid);
  return after < 0 ? -1 : (after - before) / 1e3 / count;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(
      argc, argv,
      {"--binary", "--url", "--http-port", "--engine-pid", "--concurrency", "--body-bytes",
       "--rps-concurrency", "--routes", "--batch", "--batches", "--duration-s", "--warmup-s",
       "--modes", "--label"},
      "usage: http_bench (--binary PATH | --url ws://127.0.0.1:PORT --http-port N)\n"
      "                  [--concurrency 1,8,128] [--body-bytes 100,1048576] [--rps-concurrency "
      "64]\n"
      "                  [--routes 1000] [--batch 8] [--batches 200] [--duration-s 2]\n"
      "                  [--warmup-s 0.5] [--modes latency,rps,routes,nagle] [--label S]\n"
      "                  [--engine-pid PID]\n");
  const auto concurrency = flags.list("--concurrency", {1, 8, 128});
  const auto body_sizes = flags.list("--body-bytes", {100, 1048576});
  const int64_t rps_c = flags.integer("--rps-concurrency", 64);
  const int64_t routes = flags.integer("--routes", 1000);
  const int64_t batch = flags.integer("--batch", 8);
  const int64_t batches = flags.integer("--batches", 200);
  const double duration = flags.num("--duration-s", 2), warmup = flags.num("--warmup-s", 0.5);
  const auto modes_list = flags.words("--modes", {"latency", "rps", "routes", "nagle"});
  const std::set<std::string> modes(modes_list.begin(), modes_list.end());
  bench::raise_nofile();
  signal(SIGPIPE, SIG_IGN);

  // Forks first, before the SDK starts threads.
  uint16_t floor_port = 0;
  const int floor_listen = listen_loopback(0, &floor_port);
  const pid_t floor_pid = fork();
  if (floor_pid == 0) floor_server(floor_listen);
  close(floor_listen);

  Engine engine;
  std::string url = flags.str("--url", "");
  uint16_t http_port = static_cast<uint16_t>(flags.integer("--http-port", 0));
  long engine_pid = static_cast<long>(flags.integer("--engine-pid", 0));
  if (auto binary = flags.str("--binary", ""); !binary.empty()) {
    engine = start_engine(binary);
    url = "ws://127.0.0.1:" + std::to_string(engine.ws_port);
    http_port = engine.http_port;
    engine_pid = engine.pid;
  }
  if (url.empty() || !http_port) flags.fail("need --binary, or --url and --http-port");
  const uint16_t ws_port = static_cast<uint16_t>(std::atoi(url.c_str() + url.rfind(':') + 1));

  Report report{engine_pid, flags.str("--label", "")};
  std::printf("# http_bench: engine %s (http port %u, pid %ld), floor server port %u\n",
              url.c_str(), http_port, engine_pid, floor_port);

  iii::InitOptions wopts;
  wopts.worker_name = "http-bench-worker";
  auto worker = iii::register_worker(url, wopts);
  worker->register_function(
      "bench::http_echo",
      iii::AsyncHandler([](const json::value& in, iii::Responder r) { r.ok(echo(in)); }));
  bind_http(*worker, "bench::http_echo", "POST", "/echo");
  bind_http(*worker, "bench::http_echo", "GET", "/r/:id");
  iii::InitOptions copts;
  copts.worker_name = "http-bench-caller";
  auto caller = iii::register_worker(url, copts);
  if (!worker->wait_connected(std::chrono::seconds(10)) ||
      !caller->wait_connected(std::chrono::seconds(10))) {
    std::fprintf(stderr, "http_bench: cannot connect to %s\n", url.c_str());
    return 1;
  }
  const std::string small = json_body(100);
  const std::string echo_small = http_request("POST", "/echo", small);
  wait_route(http_port, echo_small);

  auto http_run = [&](const std::string& mode, const std::string& path, const std::string& variant,
                      uint16_t port, int64_t c, int64_t body_bytes,
                      const std::vector<const std::string*>& reqs, bool engine_side) {
    Client client(port, static_cast<size_t>(c));
    const int64_t before = engine_side && engine_pid ? bench::cpu_ns(engine_pid) : -1;
    int64_t total = 0;
    Sample s = client.run(reqs, warmup, duration, &total);
    report.print(mode, path, variant, c, body_bytes, s,
                 engine_side ? cpu_per(engine_pid, before, total) : -1);
    return s;
  };

  // Warms up the engine, the worker and the floor server (first-touch allocations, the
  // kernel's socket state) so that the first measurement is not the slowest.
  {
    Client warm(http_port, 8), warm_floor(floor_port, 8);
    warm.run({&echo_small}, 0, 1, nullptr);
    warm_floor.run({&echo_small}, 0, 0.5, nullptr);
    invoke(*caller, "bench::http_echo", small, 8, 0, 0.5, nullptr);
  }

  int rc = 0;
  if (modes.count("latency")) {
    for (int64_t body_bytes : body_sizes) {
      const std::string body = json_body(body_bytes);
      const std::string req = http_request("POST", "/echo", body);
      for (int64_t c : concurrency) {
        auto h = http_run("latency", "http", "echo", http_port, c, body_bytes, {&req}, true);
        auto f =
            http_run("latency", "floor", "bare-server", floor_port, c, body_bytes, {&req}, false);
        const int64_t before = engine_pid ? bench::cpu_ns(engine_pid) : -1;
        int64_t total = 0;
        auto i = invoke(*caller, "bench::http_echo", body, c, warmup, duration, &total);
        report.print("latency", "invoke", "sdk-trigger", c, body_bytes, i,
                     cpu_per(engine_pid, before, total));
        const double target = 1.3 * (bench::percentile(f.ns, 0.5) + bench::percentile(i.ns, 0.5));
        std::printf("  => http p50 %.1fus vs (floor + invoke) x 1.3 = %.1fus: %s\n",
                    bench::percentile(h.ns, 0.5) / 1e3, target / 1e3,
                    bench::percentile(h.ns, 0.5) <= target ? "met" : "NOT met");
        rc |= (h.errors || f.errors || i.errors) ? 1 : 0;
      }
    }
  }
  if (modes.count("rps")) {
    auto h = http_run("rps", "http", "echo", http_port, rps_c, 100, {&echo_small}, true);
    auto f = http_run("rps", "floor", "bare-server", floor_port, rps_c, 100, {&echo_small}, false);
    rc |= (h.errors || f.errors) ? 1 : 0;
  }
  if (modes.count("routes")) {
    const std::string get_r = http_request("GET", "/r/42", "");
    auto measure = [&](const std::string& variant) {
      http_run("routes", "http", variant + "-post", http_port, 1, 100, {&echo_small}, true);
      http_run("routes", "http", variant + "-get", http_port, 1, 0, {&get_r}, true);
    };
    measure("routes=2");
    for (int64_t i = 1; i <= routes - 2; ++i) {
      if (i % 2)
        bind_http(*worker, "bench::http_echo", "POST", "/echo" + std::to_string(i));
      else
        bind_http(*worker, "bench::http_echo", "GET", "/api/items" + std::to_string(i) + "/:id");
    }
    const int64_t last = routes - 2;
    wait_route(http_port,
               last % 2 ? http_request("POST", "/echo" + std::to_string(last), small)
                        : http_request("GET", "/api/items" + std::to_string(last) + "/7", ""));
    measure("routes=" + std::to_string(routes));
  }
  if (modes.count("nagle")) {
    // A second worker whose socket to the engine has Nagle's algorithm on again.
    const auto before_fds = sockets_to(ws_port);
    iii::InitOptions nopts;
    nopts.worker_name = "http-bench-nagle-worker";
    auto nagle = iii::register_worker(url, nopts);
    nagle->register_function(
        "bench::http_echo_nagle",
        iii::AsyncHandler([](const json::value& in, iii::Responder r) { r.ok(echo(in)); }));
    bind_http(*nagle, "bench::http_echo_nagle", "POST", "/echo-nagle");
    if (!nagle->wait_connected(std::chrono::seconds(10))) {
      std::fprintf(stderr, "http_bench: the Nagle worker cannot connect\n");
      return 1;
    }
    int cleared = 0;
    for (int fd : sockets_to(ws_port)) {
      if (before_fds.count(fd)) continue;
      set_nodelay(fd, 0);
      ++cleared;
    }
    if (cleared != 1) {
      std::fprintf(stderr, "http_bench: expected one new worker socket, found %d\n", cleared);
      return 1;
    }
    const std::string nagle_req = http_request("POST", "/echo-nagle", small);
    wait_route(http_port, nagle_req);
    struct Variant {
      std::string path, name;
      uint16_t port;
      const std::string* req;
    };
    for (const auto& v : {Variant{"floor", "bare-server", floor_port, &echo_small},
                          Variant{"http", "nodelay-worker", http_port, &echo_small},
                          Variant{"http", "nagle-worker", http_port, &nagle_req}}) {
      double single = 0;
      for (int64_t k : {int64_t{1}, batch}) {
        Client client(v.port, static_cast<size_t>(k));
        client.batches(*v.req, 10);  // warm-up
        const bool engine_side = v.path == "http";
        const int64_t before = engine_side && engine_pid ? bench::cpu_ns(engine_pid) : -1;
        Sample s = client.batches(*v.req, batches);
        report.print("nagle", v.path, v.name, k, 100, s,
                     engine_side ? cpu_per(engine_pid, before, s.completed * k) : -1);
        if (k == 1)
          single = bench::percentile(s.ns, 0.5);
        else if (single > 0)
          std::printf("  => batch of %lld / single request (p50): %.1fx\n",
                      static_cast<long long>(k), bench::percentile(s.ns, 0.5) / single);
        rc |= s.errors ? 1 : 0;
      }
    }
    nagle->shutdown();
  }

  caller->shutdown();
  worker->shutdown();
  kill(floor_pid, SIGTERM);
  waitpid(floor_pid, nullptr, 0);
  if (engine.pid) {
    kill(engine.pid, SIGTERM);
    waitpid(engine.pid, nullptr, 0);
  }
  return rc;
}
