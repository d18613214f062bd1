// The `redis` lock of iii-cron: each (job, scheduled tick) fires once across every engine on one
// Redis. A tick is claimed with `SET cron_lock:<job>@<tick_ms> <owner> NX PX <ttl>`: the engine
// whose SET succeeds owns it. The key is never released early (a slower engine could then claim
// the same tick again); Redis expires it after `ttl_ms`, which only has to cover the clock skew
// between engines. Triggers of one engine with the same job share one claim.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "common/logging.h"
#include "storage/redis/redis_client.h"
#include "workers/cron/tick_claims.h"

namespace iii::workers::cron {

class RedisTickLock {
 public:
  // `client` (a commands connection) must outlive the lock.
  RedisTickLock(storage::redis::RedisClient& client, int64_t ttl_ms, std::string owner);

  // done(true) when this engine owns `job`'s tick at `tick_ms`; done(false) when another
  // engine does or Redis failed (logged: the tick is skipped rather than maybe run twice).
  void acquire(const std::string& job, int64_t tick_ms, std::function<void(bool)> done);
  // Forgets local claims older than the TTL (called on each scheduler wake).
  void expire(int64_t now_ms);

  static std::string key_of(const std::string& job, int64_t tick_ms);
  const std::string& owner() const { return owner_; }

 private:
  storage::redis::RedisClient& client_;
  int64_t ttl_ms_;
  std::string owner_;
  TickClaims claims_;  // by key, forgotten after the TTL
  // During an outage every tick of every job fails: a few warnings, then one every 10 s.
  logging::WarningLimiter failures_{5, std::chrono::seconds(10)};
};

}  // namespace iii::workers::cron
