#include "workers/cron/tick_lock.h"

#include <spdlog/spdlog.h>

#include <boost/json/object.hpp>

namespace iii::workers::cron {

namespace json = boost::json;

TickLock::TickLock(storage::KvStore& store, std::string index, int64_t ttl_ms, std::string owner)
    : store_(store), index_(std::move(index)), ttl_ms_(ttl_ms), owner_(std::move(owner)) {}

std::string TickLock::key_of(const std::string& job, int64_t tick_ms) {
  return job + "@" + std::to_string(tick_ms);
}

void TickLock::acquire(const std::string& job, int64_t tick_ms, std::function<void(bool)> done) {
  std::string key = key_of(job, tick_ms);
  const int64_t now_ms = TickClaims::now_ms();
  const int64_t expires_at = now_ms + ttl_ms_;
  // Triggers of this engine with the same job share one claim (and one store write).
  if (!claims_.join(key, expires_at, std::move(done))) return;
  std::vector<storage::UpdateOp> ops(4);
  ops[0].type = storage::UpdateOpType::kAppend;
  ops[0].path = {"owners"};
  // An object, not the bare id: appending a string to a string would concatenate them.
  ops[0].value = json::object{{"owner", owner_}, {"claimed_at_ms", now_ms}};
  ops[1].type = storage::UpdateOpType::kSet;
  ops[1].path = {"job"};
  ops[1].value = json::value(job);
  ops[2].type = storage::UpdateOpType::kSet;
  ops[2].path = {"tick_ms"};
  ops[2].value = json::value(tick_ms);
  ops[3].type = storage::UpdateOpType::kSet;
  ops[3].path = {"expires_at_ms"};
  ops[3].value = json::value(expires_at);
  store_.update(index_, key, std::move(ops), [this, key](storage::Stored<storage::UpdateResult> r) {
    bool won = false;
    if (!r.ok()) {
      spdlog::warn("cron: lock {} in '{}' failed: {}; tick skipped", key, index_, *r.error);
    } else {
      const json::value& v = r.value.new_value;
      const json::value* owners = v.is_object() ? v.get_object().if_contains("owners") : nullptr;
      const json::value* first = owners && owners->is_array() && !owners->get_array().empty()
                                     ? &owners->get_array()[0]
                                     : nullptr;
      const json::value* who =
          first && first->is_object() ? first->get_object().if_contains("owner") : nullptr;
      won = who && *who == json::value(owner_);
    }
    claims_.decide(key, won);
  });
}

void TickLock::expire(int64_t now_ms) {
  claims_.expire(now_ms, [this](const std::string& key, bool owned) {
    if (owned) store_.del(index_, key, [](storage::Stored<std::optional<json::value>>) {});
  });
}

void TickLock::sweep(int64_t now_ms) {
  store_.list(index_, [this, now_ms](storage::Stored<std::vector<json::value>> r) {
    if (!r.ok()) return spdlog::warn("cron: cannot list lock index '{}': {}", index_, *r.error);
    size_t removed = 0;
    for (const auto& v : r.value) {
      if (!v.is_object()) continue;
      const auto& o = v.get_object();
      const auto* job = o.if_contains("job");
      const auto* tick = o.if_contains("tick_ms");
      const auto* exp = o.if_contains("expires_at_ms");
      if (!job || !job->is_string() || !tick || !tick->is_int64() || !exp || !exp->is_int64())
        continue;
      if (exp->get_int64() > now_ms) continue;
      store_.del(index_, key_of(std::string(job->get_string()), tick->get_int64()),
                 [](storage::Stored<std::optional<json::value>>) {});
      ++removed;
    }
    if (removed) spdlog::debug("cron: removed {} expired tick locks from '{}'", removed, index_);
  });
}

}  // namespace iii::workers::cron
