#include "workers/pubsub/pubsub_worker.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <map>

#include "config/config.h"
#include "engine/engine.h"
#include "workers/pubsub/topic_index.h"

namespace iii::workers {
namespace {

namespace json = boost::json;

config::WorkerEntry entry_from(const std::string& yaml) {
  return config::parse_config(yaml, "pubsub.yaml").workers.front();
}

TEST(TopicIndex, RemovesOnlyTheOneSubscription) {
  pubsub::TopicIndex idx;
  EXPECT_TRUE(idx.add("orders", "t1", "f1"));
  EXPECT_TRUE(idx.add("orders", "t2", "f2"));
  EXPECT_TRUE(idx.add("orders", "t3", "f1"));  // the same function twice gets it twice
  EXPECT_TRUE(idx.add("other", "t4", "f4"));
  EXPECT_FALSE(idx.add("other", "t1", "f9"));  // a trigger id subscribes once
  EXPECT_EQ(idx.functions_of("orders"), (std::vector<std::string>{"f1", "f2", "f1"}));
  idx.remove("t1");
  EXPECT_EQ(idx.functions_of("orders"), (std::vector<std::string>{"f2", "f1"}));
  idx.remove("t1");  // unknown now: nothing happens
  idx.remove("t2");
  idx.remove("t3");
  EXPECT_TRUE(idx.functions_of("orders").empty());
  EXPECT_EQ(idx.topic_count(), 1u);
  EXPECT_EQ(idx.functions_of("other"), (std::vector<std::string>{"f4"}));
  EXPECT_EQ(idx.subscription_count(), 1u);
}

std::string config_error(const std::string& yaml) {
  boost::asio::io_context io;
  engine::Engine eng;
  engine::Runtime rt{io, eng};
  try {
    make_pubsub_worker(entry_from(yaml), rt);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(PubSubConfig, Adapters) {
  EXPECT_EQ(config_error("workers:\n  - name: iii-pubsub\n"), "");
  EXPECT_EQ(
      config_error("workers:\n  - name: iii-pubsub\n    config:\n      adapter: { name: local }\n"),
      "");
  EXPECT_EQ(
      config_error("workers:\n  - name: iii-pubsub\n    config:\n      adapter: { name: redis }\n"),
      "");
  EXPECT_EQ(
      config_error("workers:\n  - name: iii-pubsub\n    config:\n      adapter: { name: redis, "
                   "config: { redis_url: 'redis://:pw@h:1/2' } }\n"),
      "");
  EXPECT_EQ(
      config_error("workers:\n  - name: iii-pubsub\n    config:\n      adapter: { name: redis, "
                   "config: { redis_url: 'http://h' } }\n"),
      "pubsub.yaml:4: worker 'iii-pubsub': adapter.config.redis_url: invalid redis_url "
      "'http://h': the scheme must be redis:// or rediss://");
  EXPECT_EQ(
      config_error("workers:\n  - name: iii-pubsub\n    config:\n      adapter: { name: redis, "
                   "config: { url: x } }\n"),
      "pubsub.yaml:4: worker 'iii-pubsub': adapter.config: unknown key 'url' (known keys: "
      "redis_url)");
  EXPECT_EQ(
      config_error(
          "workers:\n  - name: iii-pubsub\n    config:\n      adapter:\n        name: kafka\n"),
      "pubsub.yaml:5: worker 'iii-pubsub': Adapter factory 'kafka' not found. Available: [local, "
      "redis]");
  EXPECT_NE(config_error("workers:\n  - name: iii-pubsub\n    config:\n      topics: 1\n")
                .find("unknown key 'topics'"),
            std::string::npos);
}

class PubSubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = make_pubsub_worker(entry_from("workers:\n  - name: iii-pubsub\n"), rt_);
    worker_->start();
    for (const char* fid : {"a", "b", "c"}) {
      engine::FunctionInfo info;
      info.id = fid;
      eng_.register_builtin(
          info, "test",
          [this, fid = std::string(fid)](const engine::CallContext&, json::value in,
                                         engine::Completion done) {
            got_[fid].push_back(in);
            done(engine::Outcome::ok(nullptr));
          });
    }
  }

  void subscribe(const std::string& id, const std::string& fid, json::value config) {
    engine::Trigger t;
    t.id = id;
    t.trigger_type = "subscribe";
    t.function_id = fid;
    t.config = std::move(config);
    eng_.register_trigger(std::move(t));
  }

  engine::Outcome publish(json::value input) {
    engine::Outcome out;
    eng_.invoke("publish", std::move(input), {}, [&](engine::Outcome o) { out = std::move(o); });
    return out;
  }

  size_t count(const std::string& fid) { return got_[fid].size(); }

  boost::asio::io_context io_;
  engine::Engine eng_;
  engine::Runtime rt_{io_, eng_};
  std::unique_ptr<engine::BuiltinWorker> worker_;
  std::map<std::string, std::vector<json::value>> got_;
};

TEST_F(PubSubTest, DeliversToEverySubscriberOfTheTopic) {
  // No subscriber: still a null result.
  auto o = publish(json::object{{"topic", "orders"}, {"data", 1}});
  ASSERT_FALSE(o.error);
  ASSERT_TRUE(o.result);
  EXPECT_TRUE(o.result->is_null());

  subscribe("s1", "a", json::object{{"topic", "orders"}});
  subscribe("s2", "b", json::object{{"topic", "orders"}});
  subscribe("s3", "c", json::object{{"topic", "orders"}});
  subscribe("s4", "c", json::object{{"topic", "payments"}});
  publish(json::object{{"topic", "orders"}, {"data", json::object{{"id", 7}}}});
  EXPECT_EQ(count("a"), 1u);
  EXPECT_EQ(count("b"), 1u);
  EXPECT_EQ(count("c"), 1u);
  EXPECT_EQ(got_["a"][0], (json::object{{"id", 7}}));  // data verbatim

  // Missing data is null.
  publish(json::object{{"topic", "payments"}});
  ASSERT_EQ(count("c"), 2u);
  EXPECT_TRUE(got_["c"][1].is_null());
}

TEST_F(PubSubTest, UnsubscribingOneKeepsTheOthers) {
  subscribe("s1", "a", json::object{{"topic", "t"}});
  subscribe("s2", "b", json::object{{"topic", "t"}});
  eng_.unregister_trigger("s1");
  publish(json::object{{"topic", "t"}, {"data", "x"}});
  EXPECT_EQ(count("a"), 0u);
  EXPECT_EQ(count("b"), 1u);
}

TEST_F(PubSubTest, ConditionFunctionsAreNotRun) {
  // The original's subscribe triggers have no condition support: a condition is ignored.
  engine::FunctionInfo info;
  info.id = "never";
  int condition_calls = 0;
  eng_.register_builtin(info, "test",
                        [&](const engine::CallContext&, json::value, engine::Completion done) {
                          ++condition_calls;
                          done(engine::Outcome::ok(false));
                        });
  subscribe("s1", "a", json::object{{"topic", "t"}, {"condition_function_id", "never"}});
  publish(json::object{{"topic", "t"}, {"data", 1}});
  EXPECT_EQ(count("a"), 1u);
  EXPECT_EQ(condition_calls, 0);
}

TEST_F(PubSubTest, BadInput) {
  for (auto input : {json::value(json::object{{"data", 1}}),
                     json::value(json::object{{"topic", ""}}), json::value(nullptr)}) {
    auto o = publish(input);
    ASSERT_TRUE(o.error);
    EXPECT_EQ(o.error->code, "topic_not_set");
    EXPECT_EQ(o.error->message, "Topic is not set");
  }
  auto o = publish(json::object{{"topic", 5}});
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.error->code, "deserialization_error");
  o = publish(json::value("orders"));
  ASSERT_TRUE(o.error);
  EXPECT_EQ(o.error->code, "deserialization_error");

  subscribe("empty", "a", json::object{{"topic", ""}});
  subscribe("none", "a", json::object{});
  subscribe("num", "a", json::object{{"topic", 3}});
  for (const char* id : {"empty", "none", "num"}) {
    EXPECT_EQ(eng_.triggers().at(id).state, engine::Trigger::State::kFailed) << id;
    EXPECT_FALSE(eng_.triggers().at(id).error.empty());
  }
  EXPECT_EQ(eng_.triggers().at("empty").error.rfind("Topic is not set", 0), 0u);

  // A subscriber whose function is gone does not stop the others.
  subscribe("ghost", "missing::fn", json::object{{"topic", "t"}});
  subscribe("s2", "b", json::object{{"topic", "t"}});
  o = publish(json::object{{"topic", "t"}, {"data", 1}});
  EXPECT_FALSE(o.error);
  EXPECT_EQ(count("b"), 1u);
}

}  // namespace
}  // namespace iii::workers
