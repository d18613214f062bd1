#include "storage/redis/redis_client.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "storage/redis/redis_test_server.h"

namespace iii::storage::redis {
namespace {

using namespace std::chrono_literals;

using testing::run_until;

ClientOptions opts(const std::string& url,
                   ClientOptions::Mode mode = ClientOptions::Mode::kCommands) {
  ClientOptions o;
  o.url = url;
  o.mode = mode;
  o.reconnect_min = 20ms;
  o.reconnect_max = 100ms;
  return o;
}

Reply call(boost::asio::io_context& io, RedisClient& c, std::vector<std::string> args) {
  std::optional<Reply> r;
  c.command(std::move(args), [&](Reply x) { r = std::move(x); });
  run_until(io, [&] { return r.has_value(); });
  return r.value_or(Reply::error("no reply"));
}

TEST(RedisUrlTest, ParsesHostPortAuthAndDb) {
  auto u = RedisUrl::parse("redis://localhost:6379");
  EXPECT_EQ(u.host, "localhost");
  EXPECT_EQ(u.port, 6379);
  EXPECT_FALSE(u.tls);
  EXPECT_EQ(u.db, 0);
  u = RedisUrl::parse("rediss://alice:s3cret@cache.example:6380/4");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.username, "alice");
  EXPECT_EQ(u.password, "s3cret");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 4);
  EXPECT_EQ(u.display(), "rediss://alice:***@cache.example:6380/4");
  u = RedisUrl::parse("redis://:pw@127.0.0.1");
  EXPECT_EQ(u.username, "");
  EXPECT_EQ(u.password, "pw");
  EXPECT_EQ(u.port, 6379);
  EXPECT_TRUE(RedisUrl::parse("rediss://h/#insecure").tls_insecure);
  EXPECT_THROW(RedisUrl::parse("http://localhost"), std::invalid_argument);
  EXPECT_THROW(RedisUrl::parse("redis://localhost/abc"), std::invalid_argument);
  EXPECT_THROW(RedisUrl::parse("not a url"), std::invalid_argument);
}

TEST(RedisClientTest, CommandsArePipelinedAndAnsweredInOrder) {
  testing::RedisServer server;
  boost::asio::io_context io;
  RedisClient c(io, opts(server.url()));
  c.start();
  // Issued before the connection is ready: they wait for it.
  std::vector<int64_t> got;
  for (int i = 0; i < 1000; ++i)
    c.command({"INCR", "counter"}, [&](Reply r) {
      ASSERT_EQ(r.type, Reply::Type::kInteger) << r.str;
      got.push_back(r.integer);
    });
  run_until(io, [&] { return got.size() == 1000; });
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got[i], i + 1);
  EXPECT_TRUE(c.ready());

  Reply r = call(io, c, {"SET", "k", std::string("a\0b\r\n", 5)});
  EXPECT_EQ(r.type, Reply::Type::kStatus);
  r = call(io, c, {"GET", "k"});
  EXPECT_EQ(r.str, std::string("a\0b\r\n", 5));
  EXPECT_TRUE(call(io, c, {"GET", "missing"}).is_nil());
  r = call(io, c, {"NOSUCHCOMMAND"});
  EXPECT_TRUE(r.is_error());
  call(io, c, {"RPUSH", "l", "x", "y"});
  r = call(io, c, {"LRANGE", "l", "0", "-1"});
  ASSERT_EQ(r.type, Reply::Type::kArray);
  ASSERT_EQ(r.elements.size(), 2u);
  EXPECT_EQ(r.elements[1].str, "y");
}

TEST(RedisClientTest, ScriptsRunWithEvalThenEvalsha) {
  testing::RedisServer server;
  boost::asio::io_context io;
  RedisClient c(io, opts(server.url()));
  c.start();
  static const Script script(
      "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])");
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i)
    c.eval(script, {"key"}, {"v" + std::to_string(i)}, [&](Reply r) {
      ASSERT_FALSE(r.is_error()) << r.str;
      got.push_back(r.str);
    });
  run_until(io, [&] { return got.size() == 3; });
  EXPECT_EQ(got, (std::vector<std::string>{"v0", "v1", "v2"}));
  // A flushed script cache fails one call, and the next one sends the text again.
  call(io, c, {"SCRIPT", "FLUSH"});
  std::optional<Reply> r1, r2;
  c.eval(script, {"key"}, {"a"}, [&](Reply r) { r1 = r; });
  run_until(io, [&] { return r1.has_value(); });
  EXPECT_TRUE(r1->is_error());
  c.eval(script, {"key"}, {"b"}, [&](Reply r) { r2 = r; });
  run_until(io, [&] { return r2.has_value(); });
  EXPECT_EQ(r2->str, "b");
}

TEST(RedisClientTest, PubSubDeliversMessages) {
  testing::RedisServer server;
  boost::asio::io_context io;
  RedisClient pub(io, opts(server.url()));
  RedisClient sub(io, opts(server.url(), ClientOptions::Mode::kSubscriber));
  pub.start();
  sub.start();
  std::vector<std::string> got;
  sub.subscribe("ch", [&](std::string_view ch, std::string_view payload) {
    EXPECT_EQ(ch, "ch");
    got.emplace_back(payload);
  });
  // Publish until the subscription is in place (PUBLISH returns the receiver count).
  run_until(io, [&] { return call(io, pub, {"PUBLISH", "ch", "hello"}).integer == 1; });
  run_until(io, [&] { return !got.empty(); });
  EXPECT_EQ(got.back(), "hello");
  sub.unsubscribe("ch");
  run_until(io, [&] { return call(io, pub, {"PUBLISH", "ch", "x"}).integer == 0; });
}

TEST(RedisClientTest, AuthenticatesAndSelectsTheDatabase) {
  testing::RedisServer server({"--requirepass", "pw1"});
  boost::asio::io_context io;
  const std::string base = "127.0.0.1:" + std::to_string(server.port());
  {
    RedisClient c(io, opts("redis://:pw1@" + base + "/3"));
    c.start();
    EXPECT_EQ(call(io, c, {"SET", "in3", "yes"}).str, "OK");
    EXPECT_EQ(call(io, c, {"CLIENT", "INFO"}).str.find("db=3") != std::string::npos, true);
    EXPECT_EQ(call(io, c, {"ACL", "SETUSER", "alice", "on", ">pw2", "~*", "&*", "+@all"}).str,
              "OK");
  }
  {
    RedisClient c(io, opts("redis://alice:pw2@" + base + "?db=3"));
    c.start();
    EXPECT_EQ(call(io, c, {"GET", "in3"}).str, "yes");
    EXPECT_EQ(call(io, c, {"ACL", "WHOAMI"}).str, "alice");
  }
  {
    RedisClient c(io, opts("redis://:wrong@" + base));
    c.start();
    Reply r = call(io, c, {"GET", "in3"});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("AUTH failed"), std::string::npos) << r.str;
  }
}

TEST(RedisClientTest, OutageFailsFastThenReconnectsAndResubscribes) {
  testing::RedisServer server;
  boost::asio::io_context io;
  RedisClient c(io, opts(server.url()));
  RedisClient sub(io, opts(server.url(), ClientOptions::Mode::kSubscriber));
  int ready_count = 0;
  sub.on_ready([&] { ++ready_count; });
  c.start();
  sub.start();
  std::vector<std::string> got;
  sub.subscribe("ch", [&](std::string_view, std::string_view p) { got.emplace_back(p); });
  EXPECT_EQ(call(io, c, {"SET", "a", "1"}).str, "OK");
  run_until(io, [&] { return call(io, c, {"PUBLISH", "ch", "before"}).integer == 1; });
  run_until(io, [&] { return !got.empty(); });

  server.kill();
  run_until(io, [&] { return !c.ready() && !sub.ready(); });
  // During the outage every call fails at once with a clear error.
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Reply r = call(io, c, {"GET", "a"});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("Redis"), std::string::npos) << r.str;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  }

  server.start();
  run_until(io, [&] { return c.ready() && sub.ready(); });
  EXPECT_EQ(ready_count, 2);
  EXPECT_TRUE(call(io, c, {"GET", "a"}).is_nil());  // no persistence configured in this test
  got.clear();
  run_until(io, [&] { return call(io, c, {"PUBLISH", "ch", "after"}).integer == 1; });
  run_until(io, [&] { return !got.empty(); });
  EXPECT_EQ(got.back(), "after");
}

TEST(RedisClientTest, InFlightCommandsFailWhenTheConnectionDrops) {
  testing::RedisServer server;
  boost::asio::io_context io;
  RedisClient c(io, opts(server.url()));
  c.start();
  EXPECT_EQ(call(io, c, {"PING"}).str, "PONG");
  std::optional<Reply> blocked;
  c.command({"BLPOP", "nothing", "0"}, [&](Reply r) { blocked = r; });  // never answered
  io.run_for(50ms);
  server.kill();
  run_until(io, [&] { return blocked.has_value(); });
  EXPECT_TRUE(blocked->is_error());
  EXPECT_NE(blocked->str.find("lost"), std::string::npos) << blocked->str;
}

TEST(RedisClientTest, UnansweredCommandsTimeOut) {
  testing::RedisServer server;
  boost::asio::io_context io;
  ClientOptions o = opts(server.url());
  o.command_timeout = 200ms;
  RedisClient c(io, o);
  c.start();
  EXPECT_EQ(call(io, c, {"PING"}).str, "PONG");
  Reply r = call(io, c, {"BLPOP", "nothing", "0"});
  ASSERT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("no reply within 200 ms"), std::string::npos) << r.str;
  run_until(io, [&] { return c.ready(); });  // and it reconnects
}

TEST(RedisClientTest, TlsWithRediss) {
  testing::RedisServer server({"--requirepass", "pw"}, true);
  boost::asio::io_context io;
  const std::string hostport = "localhost:" + std::to_string(server.port());
  {
    // Self-signed: the certificate check refuses it...
    RedisClient c(io, opts("rediss://:pw@" + hostport));
    c.start();
    Reply r = call(io, c, {"PING"});
    ASSERT_TRUE(r.is_error());
    EXPECT_NE(r.str.find("TLS handshake failed"), std::string::npos) << r.str;
  }
  {
    // ... unless told to skip it.
    RedisClient c(io, opts("rediss://:pw@" + hostport + "/2#insecure"));
    c.start();
    EXPECT_EQ(call(io, c, {"SET", "k", "v"}).str, "OK");
    EXPECT_EQ(call(io, c, {"GET", "k"}).str, "v");
    std::string big(300000, 'x');  // several TLS records each way
    EXPECT_EQ(call(io, c, {"SET", "big", big}).str, "OK");
    EXPECT_EQ(call(io, c, {"GET", "big"}).str, big);
  }
  {
    // Trusting the server's certificate (SSL_CERT_FILE is read by the default verify paths).
    ::setenv("SSL_CERT_FILE", server.cert_file().c_str(), 1);
    RedisClient c(io, opts("rediss://:pw@" + hostport));
    c.start();
    EXPECT_EQ(call(io, c, {"PING"}).str, "PONG");
    ::unsetenv("SSL_CERT_FILE");
  }
}

TEST(RedisClientTest, NoServerFailsFastAfterTheFirstAttempt) {
  boost::asio::io_context io;
  RedisClient c(io, opts("redis://127.0.0.1:" + std::to_string(testing::free_port())));
  c.start();
  Reply r = call(io, c, {"PING"});  // waits for the first attempt, which is refused
  ASSERT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("Redis is unavailable at redis://127.0.0.1:"), std::string::npos) << r.str;
  const auto t0 = std::chrono::steady_clock::now();
  r = call(io, c, {"PING"});
  EXPECT_TRUE(r.is_error());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 200ms);
}

}  // namespace
}  // namespace iii::storage::redis
