#include "workers/cron/redis_tick_lock.h"

#include <spdlog/spdlog.h>

namespace iii::workers::cron {

RedisTickLock::RedisTickLock(storage::redis::RedisClient& client, int64_t ttl_ms, std::string owner)
    : client_(client), ttl_ms_(ttl_ms), owner_(std::move(owner)) {}

std::string RedisTickLock::key_of(const std::string& job, int64_t tick_ms) {
  return "cron_lock:" + job + "@" + std::to_string(tick_ms);
}

void RedisTickLock::acquire(const std::string& job, int64_t tick_ms,
                            std::function<void(bool)> done) {
  std::string key = key_of(job, tick_ms);
  if (!claims_.join(key, TickClaims::now_ms() + ttl_ms_, std::move(done))) return;
  client_.command({"SET", key, owner_, "NX", "PX", std::to_string(ttl_ms_)},
                  [this, key](storage::redis::Reply r) {
                    bool won = false;
                    if (r.is_error()) {
                      if (auto suppressed = failures_.admit())
                        spdlog::warn("cron: lock {} failed: {}; tick skipped{}", key, r.str,
                                     *suppressed ? " (" + std::to_string(*suppressed) +
                                                       " similar failures not logged)"
                                                 : std::string());
                    } else
                      won = r.type == storage::redis::Reply::Type::kStatus && r.str == "OK";
                    claims_.decide(key, won);
                  });
}

void RedisTickLock::expire(int64_t now_ms) { claims_.expire(now_ms); }

}  // namespace iii::workers::cron
