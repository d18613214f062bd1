// Config of iii-queue (modules.md §4.1, §4.5): `queue_configs` (named queues) and `adapter`.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "config/config.h"
#include "workers/queue/queue_store.h"

namespace iii::workers::queue {

struct NamedQueueConfig {
  int64_t max_retries = 3;  // total attempts before the DLQ (builtin semantics)
  int64_t concurrency = 10;
  bool fifo = false;
  std::string message_group_field;
  int64_t backoff_ms = 1000;
  int64_t poll_interval_ms = 100;  // accepted; delivery is event-driven
};

struct QueueWorkerConfig {
  std::map<std::string, NamedQueueConfig> queues;
  std::string adapter = "builtin";  // builtin | rabbitmq | redis
  QueueStoreOptions store;
  // rabbitmq adapter
  std::string amqp_url = "amqp://localhost:5672";
  int64_t prefetch_count = 10;
  // redis adapter
  std::string redis_url = "redis://localhost:6379";
  int64_t poll_interval_ms = 100;
  int64_t visibility_timeout_ms = 30000;
  // builtin adapter defaults for topic subscribers
  int64_t max_attempts = 3;
  int64_t backoff_ms = 1000;
  int64_t concurrency = 10;
  bool fifo_mode = false;
};

// Reads and validates the worker's config; throws config::ConfigError naming file and line.
QueueWorkerConfig read_queue_config(config::WorkerConfigReader& r);

// A `durable:subscriber` trigger's config (modules.md §4.3): `topic`, and the camelCase
// `queue_config` (`maxRetries`, `concurrency`, `backoffDelayMs`, `type`; `visibilityTimeout`,
// `delaySeconds`, `backoffType` checked and ignored) read over the defaults already in `cfg`.
struct SubscriberConfig {
  std::string topic;  // empty: the trigger subscribes to nothing
  NamedQueueConfig cfg;
};
// The error that refuses the trigger when the config is malformed.
std::optional<std::string> read_subscriber_config(const boost::json::value& config,
                                                  SubscriberConfig& s);

}  // namespace iii::workers::queue
