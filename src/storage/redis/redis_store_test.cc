#include "storage/redis/redis_store.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>

#include "storage/redis/redis_client.h"
#include "storage/redis/redis_test_server.h"

namespace iii::storage::redis {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = make_redis_store(io_, server_.url(), "test");
    ClientOptions o;
    o.url = server_.url();
    raw_ = std::make_unique<RedisClient>(io_, o);
    raw_->start();
  }

  template <typename T>
  T wait(std::optional<T>& slot) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!slot && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(10ms);
    }
    EXPECT_TRUE(slot.has_value()) << "timed out";
    return slot ? std::move(*slot) : T{};
  }

  Reply raw(std::vector<std::string> args) {
    std::optional<Reply> r;
    raw_->command(std::move(args), [&](Reply x) { r = std::move(x); });
    return wait(r);
  }
  Stored<SetResult> set(const std::string& index, const std::string& key, json::value v) {
    std::optional<Stored<SetResult>> r;
    store_->set(index, key, std::move(v), [&](Stored<SetResult> x) { r = std::move(x); });
    return wait(r);
  }
  Stored<std::optional<json::value>> get(const std::string& index, const std::string& key) {
    std::optional<Stored<std::optional<json::value>>> r;
    store_->get(index, key, [&](auto x) { r = std::move(x); });
    return wait(r);
  }
  Stored<std::optional<json::value>> del(const std::string& index, const std::string& key) {
    std::optional<Stored<std::optional<json::value>>> r;
    store_->del(index, key, [&](auto x) { r = std::move(x); });
    return wait(r);
  }
  Stored<UpdateResult> update(const std::string& index, const std::string& key,
                              const char* ops_json) {
    auto parsed = parse_update_ops(json::parse(ops_json));
    EXPECT_TRUE(parsed.ok()) << parsed.error;
    std::optional<Stored<UpdateResult>> r;
    store_->update(index, key, std::move(parsed.ops), [&](auto x) { r = std::move(x); });
    return wait(r);
  }

  testing::RedisServer server_;
  boost::asio::io_context io_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<RedisClient> raw_;
};

TEST_F(RedisStoreTest, SetGetDeleteUseTheOriginalsHashLayout) {
  auto s = set("state:users", "u1", json::parse(R"({"name":"Ada","tags":[]})"));
  ASSERT_TRUE(s.ok()) << *s.error;
  EXPECT_FALSE(s.value.old_value);
  EXPECT_EQ(raw({"HGET", "state:users", "u1"}).str, R"({"name":"Ada","tags":[]})");
  s = set("state:users", "u1", json::value(2));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s.value.old_value, json::parse(R"({"name":"Ada","tags":[]})"));
  EXPECT_EQ(*get("state:users", "u1").value, json::value(2));
  EXPECT_FALSE(get("state:users", "nope").value);
  EXPECT_EQ(*del("state:users", "u1").value, json::value(2));
  EXPECT_FALSE(del("state:users", "u1").value);
  EXPECT_EQ(raw({"EXISTS", "state:users"}).integer, 0);  // the empty group is gone
  // A value written by someone else in the same layout.
  raw({"HSET", "state:users", "x", "[1, 2]"});
  EXPECT_EQ(*get("state:users", "x").value, json::parse("[1,2]"));
  raw({"HSET", "state:users", "bad", "not json"});
  EXPECT_FALSE(get("state:users", "bad").ok());
}

TEST_F(RedisStoreTest, UpdateAppliesTheOpsAtomically) {
  auto u = update("stream:s:g", "i", R"([{"type":"increment","path":"n","by":2},
                                         {"type":"append","path":"","value":1}])");
  ASSERT_TRUE(u.ok()) << *u.error;
  EXPECT_FALSE(u.value.old_value);
  EXPECT_EQ(u.value.new_value, json::parse(R"({"n":2})"));
  ASSERT_EQ(u.value.errors.size(), 1u);
  EXPECT_EQ(u.value.errors[0].code, "append.type_mismatch");
  // Many concurrent increments, some racing with writes from another connection.
  int done = 0;
  for (int i = 0; i < 200; ++i) {
    auto parsed = parse_update_ops(json::parse(R"([{"type":"increment","path":"n","by":1}])"));
    store_->update("stream:s:g", "i", std::move(parsed.ops), [&](Stored<UpdateResult> r) {
      EXPECT_TRUE(r.ok());
      ++done;
    });
    if (i % 50 == 0)
      raw_->eval(Script("local v = cjson.decode(redis.call('HGET', KEYS[1], 'i')); v.m = 1; "
                        "redis.call('HSET', KEYS[1], 'i', cjson.encode(v))"),
                 {"stream:s:g"}, {}, [](Reply) {});
  }
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (done < 200 && std::chrono::steady_clock::now() < deadline) {
    io_.restart();
    io_.run_for(10ms);
  }
  ASSERT_EQ(done, 200);
  auto v = get("stream:s:g", "i").value;
  ASSERT_TRUE(v && v->is_object());
  EXPECT_EQ(v->as_object().at("n"), json::value(202));
}

TEST_F(RedisStoreTest, ListsAndIndexes) {
  set("stream:chat:room", "a", json::value("x"));
  set("stream:chat:room", "b", json::parse(R"({"k":[]})"));
  set("stream:chat:lobby", "c", json::value(1));
  set("stream:ch*t:other", "d", json::value(1));
  raw({"SET", "stream:chat:not-a-hash", "1"});
  std::optional<Stored<std::vector<json::value>>> l;
  store_->list("stream:chat:room", [&](auto r) { l = std::move(r); });
  auto list = wait(l);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list.value.size(), 2u);
  std::optional<Stored<KvStore::RawList>> rl;
  store_->list_raw("stream:chat:room", [&](auto r) { rl = std::move(r); });
  auto raw_list = wait(rl);
  ASSERT_TRUE(raw_list.ok());
  EXPECT_EQ(json::parse(*raw_list.value).as_array().size(), 2u);
  rl.reset();
  store_->list_raw("stream:none:x", [&](auto r) { rl = std::move(r); });
  EXPECT_EQ(*wait(rl).value, "[]");
  std::optional<Stored<std::vector<std::string>>> ix;
  store_->list_indexes("stream:chat:", [&](auto r) { ix = std::move(r); });
  EXPECT_EQ(wait(ix).value, (std::vector<std::string>{"stream:chat:lobby", "stream:chat:room"}));
  ix.reset();
  store_->list_indexes("stream:ch*t:", [&](auto r) { ix = std::move(r); });
  EXPECT_EQ(wait(ix).value, (std::vector<std::string>{"stream:ch*t:other"}));
}

TEST_F(RedisStoreTest, CallsFailFastWhileRedisIsDown) {
  ASSERT_TRUE(set("state:a", "k", json::value(1)).ok());
  server_.kill();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  Stored<SetResult> s;
  do {
    s = set("state:a", "k", json::value(2));
  } while (s.ok() && std::chrono::steady_clock::now() < deadline);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error->find("Redis"), std::string::npos) << *s.error;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(get("state:a", "k").ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
}

TEST(RedisStoreGlob, EscapesGlobCharacters) {
  EXPECT_EQ(glob_escape("stream:a*b?[c]\\:"), "stream:a\\*b\\?\\[c\\]\\\\:");
}

}  // namespace
}  // namespace iii::storage::redis
