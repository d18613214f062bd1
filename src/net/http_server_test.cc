// net::HttpServer on loopback, driven by raw sockets (so that malformed, slow, pipelined and
// abandoned requests can be written byte for byte) and by a Beast WebSocket client: bodies and
// their bound (413), the header bound (431), keep-alive, pipelining in order, Connection:
// close and HTTP/1.0, the header deadline (408), answers given later and streamed in pieces,
// WebSocket upgrades, and clients that leave in the middle of a request or a response.
#include "net/http_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/ws_session.h"

namespace iii::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Response = http::response<http::string_body>;

// A blocking client on a plain socket; every read gives up after 5 s.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() { close(); }

  bool connected() const { return connected_; }
  void send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // One response, or nothing if the connection ended (or 5 s passed) before it was complete.
  std::optional<Response> read_response(bool head_request = false) {
    http::response_parser<http::string_body> p;
    p.eager(true);
    p.body_limit(boost::none);
    p.skip(head_request);
    for (;;) {
      while (!in_.empty()) {
        beast::error_code ec;
        const size_t n = p.put(asio::buffer(in_), ec);
        in_.erase(0, n);
        if (ec == http::error::need_more) break;
        if (ec) return std::nullopt;
        if (p.is_done()) return p.release();
        if (n == 0) break;
      }
      char buf[65536];
      const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
      if (r <= 0) {
        if (r == 0 && p.got_some()) {  // (put_eof completes an empty parser)
          beast::error_code ec;
          p.put_eof(ec);
          if (!ec && p.is_done()) return p.release();
        }
        return std::nullopt;
      }
      in_.append(buf, static_cast<size_t>(r));
    }
  }

  // True once the server has closed the connection (EOF or reset) with nothing more sent.
  bool closed_by_server() {
    char c;
    const ssize_t r = ::recv(fd_, &c, 1, 0);
    return in_.empty() && (r == 0 || (r < 0 && errno == ECONNRESET));
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string in_;
};

std::string get(std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra) + "\r\n";
}

std::string post(std::string_view target, std::string_view body, std::string_view extra = "") {
  return "POST " + std::string(target) +
         " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions opts, RequestRouter router) {
    opts.host = "127.0.0.1";
    opts.port = 0;
    server_.emplace(io_, std::move(opts), std::move(router));
    port_ = server_->port();
    thread_ = std::thread([this] { io_.run(); });
  }

  // Answers every request with "<method> <target> <body>", and counts them.
  void start_echo(HttpServerOptions opts = {}) {
    start(std::move(opts), [this](std::shared_ptr<IncomingRequest> r) {
      ++served_;
      r->respond(HttpStatus::ok,
                 std::string(r->method()) + " " + std::string(r->target()) + " " + r->body());
    });
  }

  void TearDown() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] { server_->stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::optional<HttpServer> server_;
  uint16_t port_ = 0;
  std::atomic<int> served_{0};
  std::thread thread_;
};

TEST_F(HttpServerTest, ReadsTheRequestBody) {
  start_echo();
  RawClient c(port_);
  const std::string body(200000, 'b');  // several reads
  c.send(post("/upload?x=1", body));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::ok);
  EXPECT_EQ(res->body(), "POST /upload?x=1 " + body);
  EXPECT_EQ((*res)[http::field::server], "iii/" III_VERSION);

  // A chunked body, announced with Expect: 100-continue: the interim answer comes first.
  c.send(
      "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
  auto interim = c.read_response();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->result(), http::status::continue_);
  c.send("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body(), "POST /c hello world");
}

TEST_F(HttpServerTest, ABodyOverTheLimitIs413) {
  HttpServerOptions opts;
  opts.max_body_bytes = 1000;
  start_echo(opts);
  {
    RawClient c(port_);
    c.send(post("/", std::string(1000, 'a')));  // at the limit: served
    auto ok = c.read_response();
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->result(), http::status::ok);
    c.send(post("/", std::string(1001, 'a')));  // refused on its Content-Length
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::payload_too_large);
    EXPECT_FALSE(res->keep_alive());
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    RawClient c(port_);  // chunked: refused once the chunks pass the limit
    c.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; ++i) c.send("190\r\n" + std::string(400, 'x') + "\r\n");
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::payload_too_large);
  }
  EXPECT_EQ(served_, 1);
}

// Reads a body in pieces, reporting each; answers with the pieces, or 413.
struct BodyReader : std::enable_shared_from_this<BodyReader> {
  std::shared_ptr<IncomingRequest> r;
  std::vector<std::string> pieces;
  std::function<void(size_t)> on_piece;
  void next() {
    r->read_body(
        [self = shared_from_this()](beast::error_code ec, std::string_view piece, bool last) {
          if (ec == http::error::body_limit)
            return self->r->respond(HttpStatus::payload_too_large, "too big");
          if (ec) return;
          if (!piece.empty()) {
            self->pieces.emplace_back(piece);
            self->on_piece(self->pieces.size());
          }
          if (!last) return self->next();
          std::string all;
          for (const auto& p : self->pieces) all += "[" + p + "]";
          self->r->respond(HttpStatus::ok, all);
        });
  }
};

// With stream_body, the router has the request before its body and reads the body as it
// comes: the second piece is sent only once the router has had the first.
TEST_F(HttpServerTest, ABodyCanBeReadInPiecesAsItArrives) {
  HttpServerOptions opts;
  opts.max_body_bytes = 1000;
  opts.stream_body = [](const HttpRequest& r) { return r.target() == "/stream"; };
  std::promise<void> got[2];
  bool routed_one = false;
  start(opts, [&](std::shared_ptr<IncomingRequest> r) {
    if (r->target() != "/stream") return r->respond(HttpStatus::ok, "whole " + r->body());
    auto reader = std::make_shared<BodyReader>();
    reader->r = std::move(r);
    reader->on_piece = [&got, first = !routed_one](size_t n) {
      if (first && n <= 2) got[n - 1].set_value();
    };
    routed_one = true;
    reader->next();
  });
  RawClient c(port_);
  c.send(
      "POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: "
      "100-continue\r\n\r\n");
  auto interim = c.read_response();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->result(), http::status::continue_);
  c.send("5\r\nhello\r\n");
  ASSERT_EQ(got[0].get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  c.send("5\r\nworld\r\n");
  ASSERT_EQ(got[1].get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  c.send("0\r\n\r\n");
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body(), "[hello][world]");
  c.send(post("/other", "abc"));  // the connection goes on, bodies read whole again
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body(), "whole abc");

  RawClient big(port_);  // over the limit in pieces: the router answers 413, then the close
  big.send("POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; ++i) big.send("190\r\n" + std::string(400, 'x') + "\r\n");
  res = big.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::payload_too_large);
  EXPECT_FALSE(res->keep_alive());
  EXPECT_TRUE(big.closed_by_server());
}

TEST_F(HttpServerTest, HeadersOverTheLimitAre431) {
  HttpServerOptions opts;
  opts.max_header_bytes = 4096;
  start_echo(opts);
  RawClient c(port_);
  c.send(get("/", "X-Big: " + std::string(5000, 'h') + "\r\n"));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::request_header_fields_too_large);
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(served_, 0);
}

TEST_F(HttpServerTest, KeepsTheConnectionAliveForSeveralRequests) {
  start_echo();
  RawClient c(port_);
  for (int i = 0; i < 3; ++i) {
    c.send(post("/n" + std::to_string(i), "body" + std::to_string(i)));
    auto res = c.read_response();
    ASSERT_TRUE(res) << "request " << i;
    EXPECT_TRUE(res->keep_alive());
    EXPECT_EQ(res->body(), "POST /n" + std::to_string(i) + " body" + std::to_string(i));
  }
  EXPECT_EQ(served_, 3);
}

// Three requests in one write; the first is answered last (from a timer), yet the responses
// come in the order of the requests.
TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  std::vector<std::string> routed;
  start({}, [&](std::shared_ptr<IncomingRequest> r) {
    routed.emplace_back(r->target());
    if (r->target() != "/slow") return r->respond(HttpStatus::ok, std::string(r->target()));
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
    timer->async_wait([r, timer](beast::error_code) { r->respond(HttpStatus::ok, "/slow"); });
  });
  RawClient c(port_);
  c.send(get("/slow") + post("/second", "2") + get("/third"));
  for (const char* want : {"/slow", "/second", "/third"}) {
    auto res = c.read_response();
    ASSERT_TRUE(res) << want;
    EXPECT_EQ(res->body(), want);
  }
  EXPECT_EQ(routed, (std::vector<std::string>{"/slow", "/second", "/third"}));
}

TEST_F(HttpServerTest, ConnectionCloseAndHttp10EndTheConnection) {
  start_echo();
  {
    RawClient c(port_);
    c.send(get("/a", "Connection: close\r\n") + get("/never"));
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->body(), "GET /a ");
    EXPECT_FALSE(res->keep_alive());
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    RawClient c(port_);
    c.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->body(), "GET /old ");
    EXPECT_TRUE(c.closed_by_server());
  }
  EXPECT_EQ(served_, 2);
}

// After stop(), a kept-alive connection's next request is not routed (the router may belong
// to an object that is gone): the connection is closed.
TEST_F(HttpServerTest, NoRequestIsRoutedAfterStop) {
  start_echo();
  RawClient c(port_);
  c.send(get("/"));
  ASSERT_TRUE(c.read_response());
  std::promise<void> stopped;
  asio::post(io_, [&] {
    server_->stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  c.send(get("/after"));
  EXPECT_FALSE(c.read_response());
  EXPECT_EQ(served_, 1);
}

TEST_F(HttpServerTest, TheRouterCanCloseTheConnection) {
  start({}, [](std::shared_ptr<IncomingRequest> r) {
    HttpFields f;
    f.set(http::field::connection, "close");
    r->respond(HttpStatus::ok, "bye", "text/plain", std::move(f));
  });
  RawClient c(port_);
  c.send(get("/"));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_FALSE(res->keep_alive());
  EXPECT_TRUE(c.closed_by_server());
}

TEST_F(HttpServerTest, SlowHeadersGet408AndIdleConnectionsAreClosed) {
  HttpServerOptions opts;
  opts.header_timeout = std::chrono::milliseconds(200);
  start_echo(opts);
  RawClient partial(port_), idle(port_);
  const auto t0 = std::chrono::steady_clock::now();
  partial.send("GET / HTTP/1.1\r\nHost:");
  auto res = partial.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::request_timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(190));
  EXPECT_TRUE(partial.closed_by_server());
  EXPECT_TRUE(idle.closed_by_server());  // nothing was asked: no answer, just the close
  // The deadline also bounds the wait for a kept-alive connection's next request.
  RawClient kept(port_);
  kept.send(get("/"));
  ASSERT_TRUE(kept.read_response());
  EXPECT_TRUE(kept.closed_by_server());
  EXPECT_EQ(served_, 1);
}

// Writes "ab0", "ab1", "ab2", each once the previous one has left, then ends the body (or
// writes 64 KiB pieces until the client is gone, then reports it).
struct Pieces : std::enable_shared_from_this<Pieces> {
  std::shared_ptr<IncomingRequest> r;
  int i = 0;
  bool forever = false;
  std::function<void()> on_gone;
  void next() {
    if (!forever && i == 3) return r->end_response();
    std::string piece = forever ? std::string(64 * 1024, 'f') : "ab" + std::to_string(i);
    ++i;
    r->write_body(std::move(piece), [self = shared_from_this()](bool ok) {
      if (ok) return self->next();
      if (self->on_gone) self->on_gone();
    });
  }
};

TEST_F(HttpServerTest, AnswersCanComeLaterAndInPieces) {
  start({}, [this](std::shared_ptr<IncomingRequest> r) {
    if (r->target() == "/drop") return;  // unanswered: 500
    const bool sized = r->target() == "/sized";
    // The head now, the pieces from later handlers.
    r->start_response(HttpStatus::ok, {}, sized ? std::optional<uint64_t>(9) : std::nullopt);
    auto pieces = std::make_shared<Pieces>();
    pieces->r = std::move(r);
    asio::post(io_, [pieces] { pieces->next(); });
  });
  RawClient c(port_);
  c.send(get("/chunked"));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_TRUE(res->chunked());
  EXPECT_EQ(res->body(), "ab0ab1ab2");
  c.send(get("/sized"));
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ((*res)[http::field::content_length], "9");
  EXPECT_EQ(res->body(), "ab0ab1ab2");
  c.send(get("/drop"));
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::status::internal_server_error);
  c.send("HEAD /sized HTTP/1.1\r\nHost: t\r\n\r\n");
  res = c.read_response(true);
  ASSERT_TRUE(res);
  EXPECT_EQ((*res)[http::field::content_length], "9");
  c.send("GET /close-delimited HTTP/1.0\r\n\r\n");
  res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body(), "ab0ab1ab2");
  EXPECT_TRUE(c.closed_by_server());
}

class EchoSession : public SessionHandler {
 public:
  uint64_t on_open(std::shared_ptr<engine::Connection> conn, const std::string&) override {
    conn_ = std::move(conn);
    return 1;
  }
  void on_frame(uint64_t, std::string_view frame, bool) override {
    conn_->send(engine::make_frame(std::string(frame)));
  }
  void on_close(uint64_t) override {
    conn_.reset();  // the session holds this handler: drop the cycle
    closed.set_value();
  }
  std::promise<void> closed;

 private:
  std::shared_ptr<engine::Connection> conn_;
};

TEST_F(HttpServerTest, UpgradesAreHandedOverWithTcpNoDelay) {
  std::atomic<int> nodelay{-1};
  auto opts = std::make_shared<const SessionOptions>(SessionOptions{"test"});
  auto echo = std::make_shared<EchoSession>();
  auto closed = echo->closed.get_future();
  start({}, [&](std::shared_ptr<IncomingRequest> r) {
    if (!r->is_websocket_upgrade()) return r->respond(HttpStatus::upgrade_required, "");
    tcp::socket s = r->release_socket();
    int v = 0;
    socklen_t len = sizeof v;
    ::getsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &v, &len);
    nodelay = v != 0;
    run_ws_session(std::move(s), std::move(r->request()), r->ip(), opts, echo);
  });
  {  // after a plain request on the same connection
    RawClient c(port_);
    c.send(get("/"));
    auto res = c.read_response();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::upgrade_required);
  }
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  ws.handshake("127.0.0.1", "/ws?x=1");
  ws.write(asio::buffer(std::string("hello")));
  beast::flat_buffer buf;
  ws.read(buf);
  EXPECT_EQ(beast::buffers_to_string(buf.data()), "hello");
  ws.close(websocket::close_code::normal);
  EXPECT_EQ(nodelay, 1);
  // The server side finishes its close before the fixture stops the server (else the
  // session and its handler would be torn down mid-close).
  EXPECT_EQ(closed.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

// Clients that leave with a request half sent, with a request the router still holds, and in
// the middle of a streamed response. The server keeps serving; under ASan nothing leaks.
TEST_F(HttpServerTest, ClientsLeavingMidRequestAreForgotten) {
  std::shared_ptr<IncomingRequest> held;
  std::promise<bool> stream_ended, held_now;
  start({}, [&](std::shared_ptr<IncomingRequest> r) {
    if (r->target() == "/hold") {
      held = std::move(r);
      held_now.set_value(true);
      return;
    }
    if (r->target() == "/answer-held") {
      held->respond(HttpStatus::ok, "too late");  // its client is gone
      held.reset();
      return r->respond(HttpStatus::ok, "done");
    }
    if (r->target() == "/forever") {  // pieces until the client leaves
      r->start_response(HttpStatus::ok, {});
      auto pieces = std::make_shared<Pieces>();
      pieces->r = std::move(r);
      pieces->forever = true;
      pieces->on_gone = [&stream_ended] { stream_ended.set_value(true); };
      return pieces->next();
    }
    r->respond(HttpStatus::ok, "fine");
  });
  {
    RawClient c(port_);
    c.send("GET / HTTP/1.1\r\nHo");
  }
  {
    RawClient c(port_);
    c.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
  }
  {
    RawClient c(port_);
    c.send(get("/hold"));
    ASSERT_EQ(held_now.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
  {
    RawClient c(port_);
    c.send(get("/forever"));
    ASSERT_FALSE(c.closed_by_server());  // reads the first byte of the response, then leaves
  }
  auto done = stream_ended.get_future();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  RawClient c(port_);
  c.send(get("/answer-held"));
  auto res = c.read_response();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body(), "done");
}

}  // namespace
}  // namespace iii::net
