// The `kv` lock of iii-cron: makes each (job, scheduled tick) fire once across every engine
// that shares the store (two engines on one `file_based` store).
//
// One key per job and tick, `<job>@<tick_ms>` in the index `lock_index`, claimed with one
// atomic `update` (a single SQLite write transaction, or one call on the engine thread for the
// in-memory store): it appends {owner, claimed_at_ms} to the key's `owners` list. Whoever is
// first in that list owns the tick; nobody else ever sees an empty key for it. Keys are never
// released early (a slower engine could then claim the same tick again); the owner deletes
// them once `expires_at_ms` (claim time + lock_ttl_ms) has passed, and start-up sweeps keys
// that expired while no engine was running.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "storage/kv_store.h"
#include "workers/cron/tick_claims.h"

namespace iii::workers::cron {

class TickLock {
 public:
  // `store` must outlive the lock. `owner` identifies this engine instance.
  TickLock(storage::KvStore& store, std::string index, int64_t ttl_ms, std::string owner);

  // Claims `job`'s tick at `tick_ms` (ms since the epoch). `job` names what runs, the same in
  // every engine (the cron worker uses function id, expression and condition: the SDKs give each
  // registration a random trigger id). `done(true)` when this engine owns the tick (two
  // triggers of one engine with the same job both do); `done(false)` when another engine owns
  // it or the store failed (logged).
  void acquire(const std::string& job, int64_t tick_ms, std::function<void(bool)> done);

  // Deletes the keys this engine owns whose TTL has passed (called on each scheduler wake).
  void expire(int64_t now_ms);
  // Deletes every expired key in the index (start-up).
  void sweep(int64_t now_ms);

  static std::string key_of(const std::string& job, int64_t tick_ms);
  size_t owned_keys() const { return claims_.owned(); }
  const std::string& owner() const { return owner_; }

 private:
  storage::KvStore& store_;
  std::string index_;
  int64_t ttl_ms_;
  std::string owner_;
  TickClaims claims_;  // by key, until expiry
};

}  // namespace iii::workers::cron
