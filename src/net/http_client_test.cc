// net::HttpClient against net::HttpServer on loopback, both on one io_context run by the test:
// URL parsing (http and https defaults, Host header, literals), connect-ahead then send on the
// same kept connection, response headers, a port nothing listens on, the address hook, and
// https really speaking TLS (a plain server fails the handshake). TLS with a trusted CA is
// covered end to end by tests/system (http_functions, observability export over https).
#include "net/http_client.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "net/http_server.h"

namespace iii::net {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

TEST(ParseHttpTarget, DefaultsAndHostHeader) {
  HttpTarget t = parse_http_target("https://Collector.Example/otlp/v1?x=1#frag");
  EXPECT_TRUE(t.https);
  EXPECT_EQ(t.host, "collector.example");
  EXPECT_EQ(t.port, "443");
  EXPECT_EQ(t.target, "/otlp/v1?x=1");
  EXPECT_EQ(t.host_header, "collector.example");
  EXPECT_FALSE(t.literal);
  EXPECT_EQ(t.url(), "https://collector.example/otlp/v1?x=1");
  t = parse_http_target("http://127.0.0.1:4318");
  EXPECT_FALSE(t.https);
  EXPECT_EQ(t.port, "4318");
  EXPECT_EQ(t.target, "/");
  EXPECT_EQ(t.host_header, "127.0.0.1:4318");
  ASSERT_TRUE(t.literal);
  EXPECT_TRUE(t.literal->is_v4());
  t = parse_http_target("https://[::1]:8443/h");
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.host_header, "[::1]:8443");
  EXPECT_EQ(parse_http_target("http://x").port, "80");
  EXPECT_TRUE(parse_http_target("http://127.1/").literal);  // as the resolver would read it
  for (const char* bad : {"ftp://x", "x:80", "not a url", "http://:80", "https://u@x/",
                          "http://x:0", "http://x:65536", "http:/x"})
    EXPECT_THROW(parse_http_target(bad), std::invalid_argument) << bad;
}

class HttpClientTest : public ::testing::Test {
 protected:
  HttpClientTest() {
    HttpServerOptions o;
    o.name = "client-test";
    o.host = "127.0.0.1";
    server_ = std::make_unique<HttpServer>(io_, o, [this](std::shared_ptr<IncomingRequest> r) {
      ++requests_;
      r->respond(HttpStatus::ok, "got " + r->body(), "text/plain");
    });
  }
  ~HttpClientTest() override { server_->stop(); }

  std::string url(const char* scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(server_->port()) + "/p";
  }
  // Runs the io_context until `flag` is set (at most 5 s).
  void run_until(const bool& flag) {
    for (int i = 0; i < 5000 && !flag; ++i) io_.run_for(1ms);
    ASSERT_TRUE(flag);
  }

  asio::io_context io_;
  std::unique_ptr<HttpServer> server_;
  int requests_ = 0;
};

TEST_F(HttpClientTest, ConnectAheadThenSendOnTheSameConnection) {
  HttpClient client(io_);
  bool connected = false;
  std::optional<OutboundFailure> cf{OutboundFailure{"unset", ""}};
  client.connect(parse_http_target(url()), 2s, [&](std::optional<OutboundFailure> f) {
    cf = std::move(f);
    connected = true;
  });
  run_until(connected);
  EXPECT_FALSE(cf) << cf->message;
  EXPECT_EQ(client.connections_opened(), 1u);
  EXPECT_EQ(requests_, 0);  // connecting sends nothing

  OutboundRequest req;
  req.target = parse_http_target(url());
  req.body = "hello";
  req.keep_response_headers = true;
  bool done = false;
  OutboundResponse res;
  client.send(std::move(req), [&](std::optional<OutboundFailure> f, OutboundResponse r) {
    EXPECT_FALSE(f) << f->message;
    res = std::move(r);
    done = true;
  });
  run_until(done);
  EXPECT_EQ(res.status, 200u);
  EXPECT_EQ(res.body, "got hello");
  ASSERT_TRUE(res.header("content-TYPE"));
  EXPECT_EQ(*res.header("Content-Type"), "text/plain");
  EXPECT_FALSE(res.header("X-Absent"));
  EXPECT_EQ(client.connections_opened(), 1u);
  EXPECT_EQ(client.reuses(), 1u);

  // Connecting again finds the kept connection: nothing new is opened.
  connected = false;
  client.connect(parse_http_target(url()), 2s, [&](std::optional<OutboundFailure> f) {
    EXPECT_FALSE(f);
    connected = true;
  });
  run_until(connected);
  EXPECT_EQ(client.connections_opened(), 1u);
}

TEST_F(HttpClientTest, ConnectFailsWhenNothingListens) {
  asio::ip::tcp::acceptor a(io_, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string dead = "http://127.0.0.1:" + std::to_string(a.local_endpoint().port());
  a.close();
  HttpClient client(io_);
  bool done = false;
  std::optional<OutboundFailure> failure;
  client.connect(parse_http_target(dead), 2s, [&](std::optional<OutboundFailure> f) {
    failure = std::move(f);
    done = true;
  });
  run_until(done);
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->code, "http_request_failed");
  EXPECT_NE(failure->message.find("(connect)"), std::string::npos) << failure->message;
}

TEST_F(HttpClientTest, AddressHookRefusesBeforeConnecting) {
  HttpClientHooks hooks;
  hooks.check_address = [](const asio::ip::address& a) -> std::optional<OutboundFailure> {
    if (a.is_loopback()) return OutboundFailure{"refused_here", "loopback"};
    return std::nullopt;
  };
  HttpClient client(io_, hooks);
  OutboundRequest req;
  req.target = parse_http_target(url());
  bool done = false;
  client.send(std::move(req), [&](std::optional<OutboundFailure> f, OutboundResponse) {
    ASSERT_TRUE(f);
    EXPECT_EQ(f->code, "refused_here");
    done = true;
  });
  run_until(done);
  EXPECT_EQ(client.connections_opened(), 0u);
  EXPECT_EQ(requests_, 0);
}

TEST_F(HttpClientTest, HttpsSpeaksTls) {
  HttpClient client(io_);
  OutboundRequest req;
  req.target = parse_http_target(url("https"));
  req.timeout = 3s;
  bool done = false;
  client.send(std::move(req), [&](std::optional<OutboundFailure> f, OutboundResponse) {
    ASSERT_TRUE(f);
    EXPECT_EQ(f->code, "http_request_failed");
    EXPECT_NE(f->message.find("TLS handshake"), std::string::npos) << f->message;
    done = true;
  });
  run_until(done);
  EXPECT_EQ(requests_, 0);
}

TEST_F(HttpClientTest, StoppedClientFailsAtOnce) {
  HttpClient client(io_);
  client.stop();
  bool done = false;
  client.connect(parse_http_target(url()), 1s, [&](std::optional<OutboundFailure> f) {
    EXPECT_TRUE(f);
    done = true;
  });
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace iii::net
