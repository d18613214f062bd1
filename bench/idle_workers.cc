// Opens N raw worker WebSocket connections to the engine and keeps them idle, so the engine's
// per-connection memory can be measured (RSS from /proc/<pid>/status).
//
//   idle_workers --url ws://127.0.0.1:49134 --count 1000 [--register] [--engine-pid PID]
//                [--hold-s S]   (0 = hold until SIGINT/SIGTERM)
//
// Each connection completes the upgrade, reads the engine's `workerregistered`, optionally
// registers one function, then only answers app-level pings. When everything is connected the
// tool prints "READY <n>" (and the engine RSS if --engine-pid is given).
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../sdk/cpp/src/support.h"  // ws:// URL parsing shared with the SDK
#include "bench_util.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string url = "ws://127.0.0.1:49134";
  int count = 1000;
  int parallel = 64;  // connects in flight at once (keeps the accept backlog happy)
  bool register_fn = false;
  long engine_pid = 0;
  double hold_s = 0;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: idle_workers [--url ws://127.0.0.1:49134] [--count N] [--parallel N]\n"
               "                    [--register] [--engine-pid PID] [--hold-s S]\n");
  std::exit(code);
}

Flags parse_flags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") usage(0);
    if (arg == "--register") {
      f.register_fn = true;
      continue;
    }
    std::string name = arg, value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc) usage(2);
      value = argv[++i];
    }
    if (name == "--url")
      f.url = value;
    else if (name == "--count")
      f.count = std::atoi(value.c_str());
    else if (name == "--parallel")
      f.parallel = std::max(1, std::atoi(value.c_str()));
    else if (name == "--engine-pid")
      f.engine_pid = std::atol(value.c_str());
    else if (name == "--hold-s")
      f.hold_s = std::atof(value.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", name.c_str());
      usage(2);
    }
  }
  if (f.count < 0) usage(2);
  return f;
}

void raise_fd_limit(int needed) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < static_cast<rlim_t>(needed))
    std::fprintf(stderr, "warning: RLIMIT_NOFILE is %llu, below the %d descriptors needed\n",
                 static_cast<unsigned long long>(lim.rlim_cur), needed);
}

struct Conn {
  explicit Conn(asio::io_context& ioc) : ws(ioc) {}
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buf;
  std::string out;
  int index = 0;
};

class Swarm {
 public:
  Swarm(asio::io_context& ioc, Flags flags, iii::detail::WsUrl url, tcp::resolver::results_type eps)
      : ioc_(ioc), flags_(std::move(flags)), url_(std::move(url)), endpoints_(std::move(eps)) {}

  void start() {
    started_ = Clock::now();
    for (int i = 0; i < flags_.parallel && next_ < flags_.count; ++i) open_next();
    if (flags_.count == 0) on_all_done();
  }

  int ready() const { return ready_; }

 private:
  void open_next() {
    auto c = std::make_shared<Conn>(ioc_);
    c->index = next_++;
    conns_.push_back(c);
    auto& layer = beast::get_lowest_layer(c->ws);
    layer.expires_after(std::chrono::seconds(10));
    layer.async_connect(endpoints_, [this, c](error_code ec, const tcp::endpoint&) {
      if (ec) return failed(c, "connect", ec);
      auto& l = beast::get_lowest_layer(c->ws);
      l.socket().set_option(tcp::no_delay(true), ec);
      l.expires_never();
      c->ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
      c->ws.async_handshake(url_.host_header, url_.target, [this, c](error_code ec) {
        if (ec) return failed(c, "handshake", ec);
        c->ws.async_read(c->buf, [this, c](error_code ec, std::size_t) {
          if (ec) return failed(c, "read workerregistered", ec);
          std::string_view first(static_cast<const char*>(c->buf.cdata().data()), c->buf.size());
          if (first.find("workerregistered") == std::string_view::npos)
            std::fprintf(stderr, "conn %d: unexpected first frame: %.200s\n", c->index,
                         std::string(first).c_str());
          c->buf.consume(c->buf.size());
          if (!flags_.register_fn) return established(c);
          c->out = R"({"type":"registerfunction","id":"idle::fn::)" + std::to_string(c->index) +
                   R"(","description":"idle_workers"})";
          c->ws.text(true);
          c->ws.async_write(asio::buffer(c->out), [this, c](error_code ec, std::size_t) {
            if (ec) return failed(c, "register", ec);
            established(c);
          });
        });
      });
    });
  }

  void established(const std::shared_ptr<Conn>& c) {
    ++ready_;
    idle_read(c);
    step();
  }

  void idle_read(const std::shared_ptr<Conn>& c) {
    c->ws.async_read(c->buf, [this, c](error_code ec, std::size_t) {
      if (ec) {
        if (!closing_) std::fprintf(stderr, "conn %d closed: %s\n", c->index, ec.message().c_str());
        return;
      }
      std::string_view msg(static_cast<const char*>(c->buf.cdata().data()), c->buf.size());
      bool ping = msg.find(R"("type":"ping")") != std::string_view::npos;
      c->buf.consume(c->buf.size());
      if (ping) {
        c->out = R"({"type":"pong"})";
        c->ws.text(true);
        c->ws.async_write(asio::buffer(c->out), [](error_code, std::size_t) {});
      }
      idle_read(c);
    });
  }

  void failed(const std::shared_ptr<Conn>& c, const char* what, error_code ec) {
    if (failed_++ < 5)
      std::fprintf(stderr, "conn %d: %s failed: %s\n", c->index, what, ec.message().c_str());
    step();
  }

  void step() {
    if (next_ < flags_.count) open_next();
    if (ready_ + failed_ == flags_.count) on_all_done();
  }

  void on_all_done() {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count();
    std::printf("connected %d/%d (failed %d) in %lld ms%s\n", ready_, flags_.count, failed_,
                static_cast<long long>(ms), flags_.register_fn ? ", one function each" : "");
    std::fflush(stdout);
    done_callback();
  }

 public:
  std::function<void()> done_callback = [] {};
  bool closing_ = false;

 private:
  asio::io_context& ioc_;
  Flags flags_;
  iii::detail::WsUrl url_;
  tcp::resolver::results_type endpoints_;
  std::vector<std::shared_ptr<Conn>> conns_;
  Clock::time_point started_;
  int next_ = 0;
  int ready_ = 0;
  int failed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  raise_fd_limit(flags.count + 64);

  std::string error;
  auto url = iii::detail::parse_ws_url(flags.url, &error);
  if (!url) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }

  asio::io_context ioc(1);
  tcp::resolver resolver(ioc);
  error_code ec;
  auto endpoints = resolver.resolve(url->host, url->port, ec);
  if (ec) {
    std::fprintf(stderr, "cannot resolve %s: %s\n", url->host.c_str(), ec.message().c_str());
    return 1;
  }

  const long rss_before =
      flags.engine_pid ? bench::proc_status_kib(static_cast<int>(flags.engine_pid), "VmRSS") : -1;
  if (flags.engine_pid) std::printf("engine RSS before: %ld KiB\n", rss_before);

  Swarm swarm(ioc, flags, *url, endpoints);
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::steady_timer settle(ioc), hold(ioc);
  auto finish = [&] {
    swarm.closing_ = true;
    signals.cancel();
    hold.cancel();
    ioc.stop();
  };
  signals.async_wait([&](error_code e, int) {
    if (!e) finish();
  });
  swarm.done_callback = [&] {
    // Give the engine a moment to finish per-connection work before sampling its RSS.
    settle.expires_after(std::chrono::seconds(1));
    settle.async_wait([&](error_code e) {
      if (e) return;
      if (flags.engine_pid) {
        long after = bench::proc_status_kib(static_cast<int>(flags.engine_pid), "VmRSS");
        std::printf("engine RSS after: %ld KiB (delta %ld KiB, %.1f KiB per connection)\n", after,
                    after - rss_before,
                    swarm.ready() ? double(after - rss_before) / swarm.ready() : 0.0);
      }
      std::printf("READY %d\n", swarm.ready());
      std::fflush(stdout);
      if (flags.hold_s > 0) {
        hold.expires_after(std::chrono::milliseconds(static_cast<int64_t>(flags.hold_s * 1000)));
        hold.async_wait([&](error_code e2) {
          if (!e2) finish();
        });
      }
    });
  };
  swarm.start();
  ioc.run();
  return swarm.ready() == flags.count ? 0 : 1;
}
