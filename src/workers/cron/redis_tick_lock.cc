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
  auto [it, fresh] = claims_.try_emplace(key);
  Claim& claim = it->second;
  if (!fresh) {
    if (claim.decided) return done(claim.owned);
    claim.waiters.push_back(std::move(done));
    return;
  }
  claim.waiters.push_back(std::move(done));
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  expiry_.emplace_back(now_ms + ttl_ms_, key);
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
                    auto c = claims_.find(key);
                    if (c == claims_.end()) return;
                    c->second.decided = true;
                    c->second.owned = won;
                    auto waiters = std::move(c->second.waiters);
                    for (auto& w : waiters) w(won);
                  });
}

void RedisTickLock::expire(int64_t now_ms) {
  while (!expiry_.empty() && expiry_.front().first <= now_ms) {
    auto c = claims_.find(expiry_.front().second);
    if (c != claims_.end() && c->second.decided) claims_.erase(c);
    expiry_.pop_front();
  }
}

}  // namespace iii::workers::cron
