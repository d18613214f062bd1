#include "workers/queue/queue_config.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

namespace iii::workers::queue {
namespace {

QueueWorkerConfig read(const std::string& yaml) {
  config::WorkerEntry e;
  e.name = e.instance_name = "iii-queue";
  e.source = "c.yaml";
  e.line = 3;
  e.config = YAML::Load(yaml);
  config::WorkerConfigReader r(e);
  return read_queue_config(r);
}

std::string error_of(const std::string& yaml) {
  try {
    read(yaml);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(QueueConfig, DefaultsAndNamedQueues) {
  auto c = read("{}");
  EXPECT_TRUE(c.queues.empty());
  EXPECT_FALSE(c.store.file_based);
  c = read(
      "queue_configs:\n"
      "  a: {}\n"
      "  b: { max_retries: 5, concurrency: 2, type: fifo, message_group_field: acct, "
      "backoff_ms: 10, poll_interval_ms: 5 }\n"
      "adapter: { name: builtin, config: { store_method: file_based, file_path: /tmp/x, "
      "max_attempts: 4, backoff_ms: 7, concurrency: 3, mode: fifo, save_interval_ms: 1 } }\n");
  EXPECT_EQ(c.queues.at("a").max_retries, 3);
  EXPECT_EQ(c.queues.at("a").concurrency, 10);
  EXPECT_EQ(c.queues.at("a").backoff_ms, 1000);
  EXPECT_FALSE(c.queues.at("a").fifo);
  const auto& b = c.queues.at("b");
  EXPECT_TRUE(b.fifo);
  EXPECT_EQ(b.message_group_field, "acct");
  EXPECT_EQ(b.max_retries, 5);
  EXPECT_EQ(b.concurrency, 2);
  EXPECT_EQ(b.backoff_ms, 10);
  EXPECT_TRUE(c.store.file_based);
  EXPECT_EQ(c.store.file_path, "/tmp/x");
  EXPECT_EQ(c.max_attempts, 4);
  EXPECT_EQ(c.backoff_ms, 7);
  EXPECT_EQ(c.concurrency, 3);
  EXPECT_TRUE(c.fifo_mode);
}

TEST(QueueConfig, Errors) {
  EXPECT_EQ(error_of("queue_configs:\n  q: { type: lifo }\n"),
            "c.yaml:2: worker 'iii-queue': Queue 'q' has invalid type 'lifo'. Must be 'standard' "
            "or 'fifo'");
  EXPECT_EQ(error_of("queue_configs:\n  q: { type: fifo }\n"),
            "c.yaml:2: worker 'iii-queue': Queue 'q' is of type 'fifo' but "
            "'message_group_field' is not set");
  EXPECT_NE(error_of("queue_configs:\n  q: { concurrency: 0 }\n").find("between 1 and"),
            std::string::npos);
  EXPECT_NE(error_of("queue_configs:\n  q: { backoff_ms: soon }\n").find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of("queue_configs:\n  q: { retries: 1 }\n").find("unknown key 'retries'"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: bridge }\n").find("adapter 'bridge' is not available"),
            std::string::npos);
  EXPECT_EQ(error_of("adapter: { name: rabbitmq }\n"), "");
  EXPECT_NE(error_of("adapter: { name: kafka }\n").find("Adapter factory 'kafka' not found"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: builtin, config: { store_method: disk } }\n")
                .find("store_method must be in_memory or file_based"),
            std::string::npos);
  EXPECT_NE(
      error_of("adapter: { name: builtin, config: { nope: 1 } }\n").find("unknown key 'nope'"),
      std::string::npos);
  EXPECT_NE(error_of("queues: {}\n").find("unknown key 'queues'"), std::string::npos);
}

TEST(QueueConfig, RabbitMq) {
  auto c = read("adapter: { name: rabbitmq }\n");
  EXPECT_EQ(c.adapter, "rabbitmq");
  EXPECT_EQ(c.amqp_url, "amqp://localhost:5672");
  EXPECT_EQ(c.max_attempts, 3);
  EXPECT_EQ(c.prefetch_count, 10);
  EXPECT_FALSE(c.fifo_mode);
  c = read(
      "adapter: { name: rabbitmq, config: { amqp_url: 'amqps://u:p@h:5671/v', max_attempts: 5, "
      "prefetch_count: 2, queue_mode: fifo, backoff_ms: 20 } }\n");
  EXPECT_EQ(c.amqp_url, "amqps://u:p@h:5671/v");
  EXPECT_EQ(c.max_attempts, 5);
  EXPECT_EQ(c.prefetch_count, 2);
  EXPECT_EQ(c.backoff_ms, 20);
  EXPECT_TRUE(c.fifo_mode);
  EXPECT_EQ(error_of("adapter: { name: rabbitmq, config: { amqp_url: 'http://x' } }\n"),
            "c.yaml:1: worker 'iii-queue': adapter.config.amqp_url must be an amqp:// or amqps:// "
            "URL (got 'http://x')");
  EXPECT_NE(error_of("adapter: { name: rabbitmq, config: { store_method: in_memory } }\n")
                .find("unknown key 'store_method' (known keys: amqp_url, backoff_ms, "
                      "max_attempts, prefetch_count, queue_mode)"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: rabbitmq, config: { prefetch_count: 0 } }\n")
                .find("between 1 and 65535"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: rabbitmq, config: { queue_mode: lifo } }\n")
                .find("queue_mode must be standard or fifo"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: kafka }\n").find("Available: [builtin, rabbitmq, redis]"),
            std::string::npos);
}

TEST(QueueConfig, Redis) {
  auto c = read("adapter: { name: redis }\n");
  EXPECT_EQ(c.adapter, "redis");
  EXPECT_EQ(c.redis_url, "redis://localhost:6379");
  EXPECT_EQ(c.visibility_timeout_ms, 30000);
  c = read(
      "adapter: { name: redis, config: { redis_url: 'rediss://:pw@h:6380/2', max_attempts: 4, "
      "backoff_ms: 5, concurrency: 7, poll_interval_ms: 50, visibility_timeout_ms: 2000, "
      "mode: fifo } }\n");
  EXPECT_EQ(c.redis_url, "rediss://:pw@h:6380/2");
  EXPECT_EQ(c.max_attempts, 4);
  EXPECT_EQ(c.backoff_ms, 5);
  EXPECT_EQ(c.concurrency, 7);
  EXPECT_EQ(c.poll_interval_ms, 50);
  EXPECT_EQ(c.visibility_timeout_ms, 2000);
  EXPECT_TRUE(c.fifo_mode);
  EXPECT_NE(error_of("adapter: { name: redis, config: { amqp_url: x } }\n")
                .find("unknown key 'amqp_url'"),
            std::string::npos);
  EXPECT_NE(error_of("adapter: { name: redis, config: { redis_url: 'http://x' } }\n")
                .find("must be a redis:// or rediss:// URL"),
            std::string::npos);
}

// One reader for the builtin worker and the broker front (durable:subscriber triggers).
TEST(QueueConfig, SubscriberConfigOverDefaults) {
  auto read = [](const char* text, SubscriberConfig& s) {
    return read_subscriber_config(boost::json::parse(text), s);
  };
  SubscriberConfig s;
  s.cfg.max_retries = 7;
  s.cfg.backoff_ms = 300;
  EXPECT_FALSE(read(R"({"topic":"t","queue_config":{"concurrency":2,"type":"fifo",
                       "visibilityTimeout":5,"backoffType":"fixed"}})",
                    s));
  EXPECT_EQ(s.topic, "t");
  EXPECT_EQ(s.cfg.concurrency, 2);
  EXPECT_TRUE(s.cfg.fifo);
  EXPECT_EQ(s.cfg.max_retries, 7);  // defaults kept
  EXPECT_EQ(s.cfg.backoff_ms, 300);
  EXPECT_FALSE(read(R"({"queue_config":{"maxRetries":2.0,"backoffDelayMs":null}})", s));
  EXPECT_EQ(s.cfg.max_retries, 2);
  EXPECT_EQ(s.cfg.backoff_ms, 300);
  EXPECT_EQ(*read("[]", s), "Failed to parse trigger config: expected an object");
  EXPECT_EQ(*read(R"({"topic":1})", s), "Failed to parse trigger config: `topic` must be a string");
  EXPECT_EQ(*read(R"({"queue_config":[]})", s),
            "Failed to parse trigger config: `queue_config` must be an object");
  EXPECT_EQ(*read(R"({"queue_config":{"maxRetries":"many"}})", s),
            "Failed to parse trigger config: `queue_config.maxRetries` must be an integer >= 0");
  EXPECT_EQ(*read(R"({"queue_config":{"concurrency":0}})", s),
            "Failed to parse trigger config: `queue_config.concurrency` must be an integer >= 1");
  EXPECT_EQ(*read(R"({"queue_config":{"type":3}})", s),
            "Failed to parse trigger config: `queue_config.type` must be a string");
}

}  // namespace
}  // namespace iii::workers::queue
