// iii-queue's durable `redis` adapter: a Broker over Redis Streams and consumer groups, on the
// engine thread (storage/redis/redis_client.h). See redis_broker.cc for the key layout and
// docs/architecture.md ("iii-queue on Redis").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "workers/queue/broker.h"

namespace boost::asio {
class io_context;
}

namespace iii::workers::queue {

struct RedisBrokerOptions {
  std::string url = "redis://localhost:6379";
  int64_t poll_interval_ms = 100;         // consumers also read when woken by Pub/Sub
  int64_t visibility_timeout_ms = 30000;  // a delivery idle this long goes to another engine
};

// Throws std::invalid_argument for a bad URL.
std::unique_ptr<Broker> make_redis_broker(boost::asio::io_context& io,
                                          const RedisBrokerOptions& opts);

}  // namespace iii::workers::queue
