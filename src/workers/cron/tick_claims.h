// The claims of one engine's tick lock (TickLock over the kv store, RedisTickLock over Redis).
// Triggers of one engine with the same job fire at the same tick: they share one claim, so the
// lock asks its store once and each of them gets the answer (at once if it came already, else
// when it comes). A claim is remembered until its expiry so that a trigger asking late gets the
// same answer; then it is forgotten.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace iii::workers::cron {

class TickClaims {
 public:
  using Waiter = std::function<void(bool owned)>;
  using Forgotten = std::function<void(const std::string& key, bool owned)>;

  // Joins the claim of `key`. Returns true when the claim is new: the caller asks its store and
  // then calls decide(); `done` waits for that. Otherwise `done` is answered at once when the
  // claim is decided, or waits with the others.
  bool join(const std::string& key, int64_t expires_at_ms, Waiter done);

  // The store's answer for `key`: remembers it and calls the claim's waiters. False (nothing
  // called) when the claim is not known any more.
  bool decide(const std::string& key, bool owned);

  // Forgets the decided claims whose expiry has passed, oldest first, calling `forgotten` for
  // each one before it goes. A claim still undecided at its expiry stays until it is decided
  // and is then kept (it leaves the expiry order).
  void expire(int64_t now_ms, const Forgotten& forgotten = nullptr);

  static int64_t now_ms();  // system clock, ms since the epoch

  size_t size() const { return claims_.size(); }
  size_t owned() const { return owned_; }  // claims known and owned by this engine

 private:
  struct Claim {
    bool decided = false;
    bool owned = false;
    std::vector<Waiter> waiters;
  };
  std::unordered_map<std::string, Claim> claims_;
  std::deque<std::pair<int64_t, std::string>> expiry_;  // (expires_at_ms, key), oldest first
  size_t owned_ = 0;
};

}  // namespace iii::workers::cron
