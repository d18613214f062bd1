#include "workers/cron/tick_claims.h"

#include <chrono>

namespace iii::workers::cron {

bool TickClaims::join(const std::string& key, int64_t expires_at_ms, Waiter done) {
  auto [it, fresh] = claims_.try_emplace(key);
  Claim& claim = it->second;
  if (!fresh && claim.decided) {
    done(claim.owned);
    return false;
  }
  claim.waiters.push_back(std::move(done));
  if (fresh) expiry_.emplace_back(expires_at_ms, key);
  return fresh;
}

bool TickClaims::decide(const std::string& key, bool owned) {
  auto c = claims_.find(key);
  if (c == claims_.end()) return false;
  c->second.decided = true;
  c->second.owned = owned;
  if (owned) ++owned_;
  auto waiters = std::move(c->second.waiters);
  for (auto& w : waiters) w(owned);
  return true;
}

void TickClaims::expire(int64_t now_ms, const Forgotten& forgotten) {
  while (!expiry_.empty() && expiry_.front().first <= now_ms) {
    auto c = claims_.find(expiry_.front().second);
    if (c != claims_.end() && c->second.decided) {
      if (forgotten) forgotten(c->first, c->second.owned);
      if (c->second.owned) --owned_;
      claims_.erase(c);
    }
    expiry_.pop_front();
  }
}

int64_t TickClaims::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace iii::workers::cron
