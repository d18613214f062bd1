// The redis broker's FIFO path (group lists, leases, Lua scripts) against a real redis-server:
// two brokers on one Redis stand for two engines.
#include "workers/queue/redis_broker.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <set>

#include "storage/redis/redis_client.h"
#include "storage/redis/redis_test_server.h"

namespace iii::workers::queue {
namespace {

using namespace std::chrono_literals;

using storage::redis::testing::run_until;

BrokerTarget fifo_queue(const std::string& name, int64_t backoff_ms = 20) {
  BrokerTarget t;
  t.named = true;
  t.name = name;
  t.fifo = true;
  t.backoff_ms = backoff_ms;
  return t;
}

QueueMessage message(const std::string& group, int i) {
  QueueMessage m;
  m.id = m.message_id = group + "-" + std::to_string(i);
  m.function_id = "fn";
  m.group = group;
  m.data = "{\"i\":" + std::to_string(i) + "}";
  return m;
}

std::unique_ptr<Broker> broker(boost::asio::io_context& io, const std::string& url,
                               int64_t visibility_ms = 30000) {
  RedisBrokerOptions o;
  o.url = url;
  o.poll_interval_ms = 20;
  o.visibility_timeout_ms = visibility_ms;
  auto b = make_redis_broker(io, o);
  b->start();
  return b;
}

// Publishes and waits for every acknowledgement.
void publish_all(boost::asio::io_context& io, Broker& b, const BrokerTarget& t,
                 std::vector<QueueMessage> msgs) {
  size_t acked = 0;
  for (auto& m : msgs)
    b.publish(t, std::move(m), [&](std::optional<std::string> e) {
      EXPECT_FALSE(e) << *e;
      ++acked;
    });
  const size_t n = msgs.size();
  run_until(io, [&] { return acked == n; });
}

int64_t depth(boost::asio::io_context& io, Broker& b, const BrokerTarget& t) {
  std::optional<QueueCounts> k;
  b.counts({t}, [&](QueueCounts c, std::optional<std::string> e) {
    EXPECT_FALSE(e);
    k = c;
  });
  run_until(io, [&] { return k.has_value(); });
  return k->ready;
}

TEST(RedisBrokerFifoTest, GroupsInOrderOnceAcrossTwoBrokersAndInParallel) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  auto a = broker(io, server.url()), b = broker(io, server.url());
  const BrokerTarget q = fifo_queue("orders");
  std::map<std::string, std::vector<int>> seen;
  std::map<std::string, int> running;
  int max_groups_at_once = 0, now_running = 0;
  size_t total = 0;
  auto handler = [&](Broker& self) {
    return [&](Delivery d) {
      const std::string g = d.msg.group.value_or("?");
      EXPECT_EQ(running[g]++, 0) << "two heads of group " << g << " at once";
      max_groups_at_once = std::max(max_groups_at_once, ++now_running);
      seen[g].push_back(std::stoi(d.msg.data.substr(5)));
      // Settle a little later, so that groups overlap.
      auto t = std::make_shared<boost::asio::steady_timer>(io, 2ms);
      t->async_wait([&, d, t, g](boost::system::error_code) {
        --running[g];
        --now_running;
        ++total;
        self.settle(d, Settle::kAck, {}, nullptr);
      });
    };
  };
  a->consume(q, 4, handler(*a));
  b->consume(q, 4, handler(*b));
  std::vector<QueueMessage> msgs;
  for (int i = 0; i < 30; ++i)
    for (const char* g : {"x", "y", "z"}) msgs.push_back(message(g, i));
  publish_all(io, *a, q, msgs);
  run_until(io, [&] { return total == 90; });
  for (const char* g : {"x", "y", "z"}) {
    ASSERT_EQ(seen[g].size(), 30u) << g;
    for (int i = 0; i < 30; ++i) EXPECT_EQ(seen[g][i], i) << g;
  }
  EXPECT_GT(max_groups_at_once, 1) << "groups run in parallel";
  EXPECT_EQ(depth(io, *a, q), 0);
}

TEST(RedisBrokerFifoTest, AFailedHeadBlocksOnlyItsGroupThenDeadLettersAndRedrivesToTheTail) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  auto a = broker(io, server.url()), b = broker(io, server.url());
  const BrokerTarget q = fifo_queue("jobs");
  std::vector<std::string> order;  // "<group><i>/<attempt>"
  std::map<std::string, int> fails;
  size_t settled = 0;
  auto handler = [&](Broker& self) {
    return [&](Delivery d) {
      const std::string g = d.msg.group.value_or("?");
      const std::string key = g + d.msg.data.substr(5, d.msg.data.size() - 6);
      order.push_back(key + "/" + std::to_string(d.msg.attempts));
      // r0 fails twice then succeeds; d0 always fails (dead after 3 attempts).
      const bool fail = (key == "r0" && d.msg.attempts < 2) || key == "d0";
      if (!fail) {
        ++settled;
        return self.settle(d, Settle::kAck, {}, nullptr);
      }
      d.msg.attempts += 1;
      const bool dead = d.msg.attempts >= 3;
      if (dead) ++settled;
      self.settle(d, dead ? Settle::kDeadLetter : Settle::kRetry, "boom", nullptr);
    };
  };
  a->consume(q, 4, handler(*a));
  b->consume(q, 4, handler(*b));
  std::vector<QueueMessage> msgs;
  for (int i = 0; i < 5; ++i)
    for (const char* g : {"r", "d", "s"}) msgs.push_back(message(g, i));
  publish_all(io, *a, q, msgs);
  run_until(io, [&] { return settled == 15; });
  auto pos = [&](const std::string& k) {
    return std::find(order.begin(), order.end(), k) - order.begin();
  };
  auto of = [&](char g) {
    std::vector<std::string> v;
    for (auto& k : order)
      if (k[0] == g) v.push_back(k);
    return v;
  };
  EXPECT_EQ(of('r'),
            (std::vector<std::string>{"r0/0", "r0/1", "r0/2", "r1/0", "r2/0", "r3/0", "r4/0"}));
  EXPECT_EQ(of('d'),
            (std::vector<std::string>{"d0/0", "d0/1", "d0/2", "d1/0", "d2/0", "d3/0", "d4/0"}));
  // Group s did not wait for r's retries (the backoff is 20 then 40 ms).
  EXPECT_LT(pos("s4/0"), pos("r1/0"));

  std::optional<std::vector<DeadLetter>> dead;
  a->dead_letters({q}, 0, 10, [&](std::vector<DeadLetter> v, std::optional<std::string> e) {
    EXPECT_FALSE(e);
    dead = std::move(v);
  });
  run_until(io, [&] { return dead.has_value(); });
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].msg.id, "d-0");
  EXPECT_EQ((*dead)[0].msg.attempts, 3);
  EXPECT_EQ((*dead)[0].error, "boom");
  EXPECT_EQ((*dead)[0].msg.group, "d");
  EXPECT_EQ(depth(io, *b, q), 0);

  // Redrive: back at the tail of group d, with attempts 0; it fails again three times.
  publish_all(io, *a, q, {message("d", 5)});
  std::optional<int64_t> n;
  b->redrive({q}, std::string("d-0"), [&](int64_t x, std::optional<std::string> e) {
    EXPECT_FALSE(e);
    n = x;
  });
  run_until(io, [&] { return n.has_value() && settled == 17; });
  EXPECT_EQ(*n, 1);
  const auto d = of('d');
  ASSERT_EQ(d.size(), 11u);
  EXPECT_EQ(d[7], "d5/0");
  EXPECT_EQ(d[8], "d0/0");
}

TEST(RedisBrokerFifoTest, WithOneSlotGroupsTakeTurnsAndALoneGroupGoesOn) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  auto a = broker(io, server.url());
  const BrokerTarget q = fifo_queue("turns");
  std::vector<QueueMessage> msgs;
  for (int i = 0; i < 4; ++i) msgs.push_back(message("x", i));
  for (int i = 0; i < 4; ++i) msgs.push_back(message("y", i));
  publish_all(io, *a, q, msgs);
  std::vector<std::string> got;
  a->consume(q, 1, [&](Delivery d) {
    got.push_back(d.msg.id);
    a->settle(d, Settle::kAck, {}, nullptr);
  });
  run_until(io, [&] { return got.size() == 8; });
  EXPECT_EQ(got,
            (std::vector<std::string>{"x-0", "y-0", "x-1", "y-1", "x-2", "y-2", "x-3", "y-3"}));
  // One group alone: the settle hands over its next head (leased again to the same consumer).
  got.clear();
  publish_all(io, *a, q, {message("z", 0), message("z", 1), message("z", 2)});
  run_until(io, [&] { return got.size() == 3; });
  EXPECT_EQ(got, (std::vector<std::string>{"z-0", "z-1", "z-2"}));
  EXPECT_EQ(depth(io, *a, q), 0);
}

TEST(RedisBrokerFifoTest, ABrokerThatStopsMidHandlerLosesTheGroupAfterTheVisibilityTimeout) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  const BrokerTarget q = fifo_queue("slow");
  auto a = broker(io, server.url(), 300);
  int a_got = 0;
  a->consume(q, 2, [&](Delivery) { ++a_got; });  // never settles
  publish_all(io, *a, q, {message("g", 0), message("g", 1), message("h", 0)});
  run_until(io, [&] { return a_got == 2; });  // the heads of g and h
  // A keeps its leases while it runs, well past the visibility timeout.
  auto b = broker(io, server.url(), 300);
  std::vector<std::string> b_got;
  b->consume(q, 2, [&](Delivery d) {
    b_got.push_back(d.msg.id);
    b->settle(d, Settle::kAck, {}, nullptr);
  });
  const auto t0 = std::chrono::steady_clock::now();
  run_until(io, [&] { return std::chrono::steady_clock::now() - t0 > 700ms; });
  EXPECT_TRUE(b_got.empty());
  EXPECT_EQ(depth(io, *b, q), 3);
  a->stop();  // as if killed: no settle, no renewal
  run_until(io, [&] { return b_got.size() == 3; });
  std::vector<std::string> g;
  for (auto& id : b_got)
    if (id[0] == 'g') g.push_back(id);
  EXPECT_EQ(g, (std::vector<std::string>{"g-0", "g-1"}));
  EXPECT_EQ(depth(io, *b, q), 0);
}

TEST(RedisBrokerFifoTest, ASettleAfterTheClaimWasLostChangesNothing) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  auto a = broker(io, server.url());
  const BrokerTarget q = fifo_queue("fenced");
  std::vector<Delivery> got;
  a->consume(q, 1, [&](Delivery d) { got.push_back(std::move(d)); });
  publish_all(io, *a, q, {message("g", 0), message("g", 1)});
  run_until(io, [&] { return got.size() == 1; });
  // Another consumer took the group over (as after an expired lease): its token is the owner.
  storage::redis::ClientOptions o;
  o.url = server.url();
  storage::redis::RedisClient raw(io, o);
  raw.start();
  std::optional<storage::redis::Reply> r;
  raw.command({"HSET", "iii:queue:{__fn_queue::fenced}:owner", "g", "someone-else"},
              [&](storage::redis::Reply x) { r = std::move(x); });
  run_until(io, [&] { return r.has_value(); });
  bool settled = false;
  a->settle(got[0], Settle::kAck, {}, [&](std::optional<std::string> e) {
    EXPECT_FALSE(e);
    settled = true;
  });
  run_until(io, [&] { return settled; });
  EXPECT_EQ(depth(io, *a, q), 2);  // the head was not removed
  r.reset();
  raw.command({"LINDEX", "iii:queue:{__fn_queue::fenced}:g:g", "0"},
              [&](storage::redis::Reply x) { r = std::move(x); });
  run_until(io, [&] { return r.has_value(); });
  EXPECT_NE(r->str.find("\"g-0\""), std::string::npos) << r->str;
  EXPECT_EQ(got.size(), 1u);
}

TEST(RedisBrokerFifoTest, ATopicFifoSubscriberIsOneGroupAndARequeueGoesBackFirst) {
  storage::redis::testing::RedisServer server;
  boost::asio::io_context io;
  auto a = broker(io, server.url());
  BrokerTarget sub;
  sub.name = "events";
  sub.function_id = "f";
  sub.fifo = true;
  std::vector<std::string> got;
  bool requeued = false;
  a->consume(sub, 1, [&](Delivery d) {
    if (!requeued) {
      requeued = true;
      return a->settle(d, Settle::kRequeue, {}, nullptr);
    }
    got.push_back(d.msg.data);
    a->settle(d, Settle::kAck, {}, nullptr);
  });
  BrokerTarget topic;
  topic.name = "events";
  // The subscription is registered once the consumer is prepared.
  run_until(io, [&] {
    bool ok = false, done = false;
    QueueMessage m;
    m.id = "probe";
    m.data = "\"probe\"";
    a->publish(topic, std::move(m), [&](std::optional<std::string>) { done = true; });
    run_until(io, [&] { return done; });
    ok = requeued;
    return ok;
  });
  std::vector<QueueMessage> msgs;
  for (int i = 0; i < 10; ++i) {
    QueueMessage m;
    m.id = std::to_string(i);
    m.data = std::to_string(i);
    msgs.push_back(std::move(m));
  }
  publish_all(io, *a, topic, msgs);
  run_until(io, [&] {
    return std::count_if(got.begin(), got.end(), [](auto& s) { return s != "\"probe\""; }) == 10;
  });
  std::vector<std::string> nums;
  for (auto& s : got)
    if (s != "\"probe\"") nums.push_back(s);
  EXPECT_EQ(nums, (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}));
  // The requeued probe came back before anything published after it.
  EXPECT_EQ(got.front(), "\"probe\"");
}

}  // namespace
}  // namespace iii::workers::queue
