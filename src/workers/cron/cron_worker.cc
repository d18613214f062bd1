#include "workers/cron/cron_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/system_timer.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <set>
#include <unordered_map>

#include "config/config.h"
#include "engine/engine.h"
#include "protocol/uuid.h"
#include "storage/adapter_config.h"
#include "storage/kv_store.h"
#include "storage/redis/redis_client.h"
#include "workers/cron/cron_expression.h"
#include "workers/cron/redis_tick_lock.h"
#include "workers/cron/tick_lock.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using cron::CronExpression;
using std::chrono::system_clock;

int64_t to_ms(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Keys of adapter.config that belong to the kv store (read by storage::read_adapter_config).
constexpr const char* kStoreKeys[] = {"store_method", "file_path",        "fsync",
                                      "cache_mb",     "save_interval_ms", "channel_size"};

struct CronConfig {
  storage::StoreOptions store;
  int64_t lock_ttl_ms = 30000;
  std::string lock_index = "cron_locks";
  std::optional<std::string> redis_url;  // the redis adapter
};

// `adapter: {name: kv, config: {lock_ttl_ms, lock_index, store_method, file_path, ...}}`.
CronConfig read_cron_config(const config::WorkerEntry& entry) {
  CronConfig out;
  config::WorkerConfigReader r(entry);
  YAML::Node adapter = r.get_node("adapter");
  r.finish();
  const config::AdapterChoice choice = config::read_adapter_choice(r, adapter, {"kv", "redis"});
  const YAML::Node& cfg = choice.config;
  if (choice.name == "redis") {
    out.redis_url = "redis://localhost:6379";
    if (cfg.IsNull()) return out;
    config::WorkerEntry redis_entry = entry;
    redis_entry.config = cfg;
    config::WorkerConfigReader rr(redis_entry);
    out.redis_url = rr.get_string("redis_url", *out.redis_url);
    out.lock_ttl_ms = rr.get_int("lock_ttl_ms", 30000, 1, 24LL * 3600 * 1000);
    rr.finish();
    try {
      storage::redis::RedisUrl::parse(*out.redis_url);
    } catch (const std::invalid_argument& e) {
      rr.fail("redis_url", std::string("adapter.config.redis_url: ") + e.what());
    }
    return out;
  }
  if (cfg.IsNull()) return out;

  // The lock keys are read here; the store keys go on to the shared adapter reader, which
  // validates their values (it sees a copy of the mapping without the lock keys).
  config::WorkerEntry lock_entry = entry;
  lock_entry.config = cfg;
  config::WorkerConfigReader lr(lock_entry);
  out.lock_ttl_ms = lr.get_int("lock_ttl_ms", 30000, 1, 24LL * 3600 * 1000);
  out.lock_index = lr.get_string("lock_index", "cron_locks");
  if (out.lock_index.empty()) lr.fail("lock_index", "key 'lock_index' must be a non-empty string");
  YAML::Node store_cfg(YAML::NodeType::Map);
  for (const char* k : kStoreKeys)
    if (YAML::Node v = lr.get_node(k); !v.IsNull()) store_cfg[k] = v;
  lr.finish();

  config::WorkerEntry store_entry = entry;
  YAML::Node synthetic(YAML::NodeType::Map);
  YAML::Node synthetic_adapter(YAML::NodeType::Map);
  synthetic_adapter["name"] = adapter["name"];
  synthetic_adapter["config"] = store_cfg;
  synthetic["adapter"] = synthetic_adapter;
  store_entry.config = synthetic;
  config::WorkerConfigReader sr(store_entry);
  out.store = storage::read_adapter_config(sr);
  return out;
}

class CronWorker : public engine::BuiltinWorker, public engine::TriggerTypeHandler {
 public:
  CronWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name), timer_(rt.io) {
    const CronConfig cfg = read_cron_config(entry);
    // An in_memory store is seen by this engine only, so every tick is ours: no lock (and no
    // store) is needed. A file_based store may be shared by several engines.
    if (cfg.redis_url) {
      storage::redis::ClientOptions o;
      o.url = *cfg.redis_url;
      o.name = entry.instance_name;
      redis_ = std::make_unique<storage::redis::RedisClient>(rt_.io, o);
      redis_lock_ = std::make_unique<cron::RedisTickLock>(*redis_, cfg.lock_ttl_ms,
                                                          protocol::Uuid::random_v4().str());
    } else if (cfg.store.method == storage::StoreOptions::Method::kFileBased) {
      store_ = storage::open_store_for(entry, cfg.store, rt_.io);
      lock_ = std::make_unique<cron::TickLock>(*store_, cfg.lock_index, cfg.lock_ttl_ms,
                                               protocol::Uuid::random_v4().str());
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~CronWorker() override {
    stopping_ = true;
    timer_.cancel();
    if (store_) store_->close();
  }

  void start() override {
    if (lock_) lock_->sweep(to_ms(system_clock::now()));
    if (redis_) redis_->start();
    engine::TriggerType tt;
    tt.id = "cron";
    tt.description =
        "Fires on a cron schedule: 6 or 7 fields (sec min hour day-of-month month day-of-week "
        "[year]), day-of-week 1-7 with Sunday = 1, UTC";
    rt_.engine.register_builtin_trigger_type(std::move(tt), this);
  }

  // No new ticks; a run in flight completes without scheduling another.
  void stop() override {
    stopping_ = true;
    timer_.cancel();
    if (store_) store_->close();
  }

  std::optional<std::string> bind(const engine::Trigger& t) override {
    const json::value* expr =
        t.config.is_object() ? t.config.get_object().if_contains("expression") : nullptr;
    if (!expr || expr->is_null() || (expr->is_string() && expr->get_string().empty()))
      return std::string("Cron expression is required");
    if (!expr->is_string())
      return "Invalid cron expression '" + json::serialize(*expr) +
             "': expression must be a string";
    const std::string text(expr->get_string());
    auto parsed = CronExpression::parse(text);
    if (!parsed.ok()) return "Invalid cron expression '" + text + "': " + parsed.error;
    if (const auto* c = t.config.get_object().if_contains("condition_function_id");
        c && !c->is_null() && !c->is_string())
      return std::string("Invalid cron trigger config: condition_function_id must be a string");
    if (jobs_.count(t.id)) return "Cron job '" + t.id + "' is already registered";
    Job& j = jobs_[t.id];
    j.expr = *parsed.expression;
    // What the tick lock is keyed by: the same job in every engine, whatever its trigger id.
    j.lock_key = t.function_id + "|" + text;
    if (auto c = t.condition_function_id()) j.lock_key += "|" + *c;
    j.generation = ++generation_;
    schedule(t.id, j);
    if (j.scheduled)
      spdlog::debug("cron job {} ('{}' -> {}) first fires at {}", t.id, text, t.function_id,
                    cron::format_rfc3339(j.next));
    return std::nullopt;
  }

  void unbind(const engine::Trigger& t) override {
    auto it = jobs_.find(t.id);
    if (it == jobs_.end()) return;
    if (it->second.scheduled) queue_.erase({it->second.next, t.id});
    jobs_.erase(it);  // a run in flight finds no job (or a newer generation) and stops there
  }

 private:
  struct Job {
    CronExpression expr;
    std::string lock_key;
    uint64_t generation = 0;
    bool scheduled = false;
    bool running = false;
    CronExpression::Seconds next{};
    std::optional<CronExpression::Seconds> last;  // the last tick taken
    // The payload of the `next` tick without its actual_time, built when the tick is scheduled
    // so that the tick itself (1,000 jobs may share one) only stamps the time and sends.
    json::object payload;
  };

  static json::object tick_payload(const std::string& id, CronExpression::Seconds tick) {
    json::object p(4);  // room for actual_time, added at the tick
    p.emplace("trigger", "cron");
    p.emplace("job_id", id);
    p.emplace("scheduled_time", cron::format_rfc3339(tick));
    return p;
  }

  Job* find(const std::string& id, uint64_t generation) {
    auto it = jobs_.find(id);
    return it != jobs_.end() && it->second.generation == generation ? &it->second : nullptr;
  }

  // Queues the job's next tick after now (and after its last tick: never the same one twice).
  void schedule(const std::string& id, Job& j) {
    auto from = std::chrono::floor<std::chrono::seconds>(system_clock::now());
    if (j.last && *j.last > from) from = *j.last;
    auto next = j.expr.next_after(from);
    if (!next) {
      j.scheduled = false;
      spdlog::info("cron job {}: the expression has no fire time left; it will not fire", id);
      return;
    }
    j.next = *next;
    j.scheduled = true;
    j.payload = tick_payload(id, *next);
    queue_.emplace(*next, id);
    arm();
  }

  // One timer for every job, set for the earliest tick.
  void arm() {
    if (stopping_ || in_timer_ || queue_.empty()) return;
    const CronExpression::Seconds first = queue_.begin()->first;
    if (armed_ && *armed_ <= first) return;
    armed_ = first;
    timer_.expires_at(first);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;  // re-armed or stopped
      armed_.reset();
      on_timer();
    });
  }

  void on_timer() {
    if (stopping_) return;
    const auto now = system_clock::now();
    if (lock_) lock_->expire(to_ms(now));
    if (redis_lock_) redis_lock_->expire(to_ms(now));
    in_timer_ = true;  // runs that finish at once reschedule; arm once after the loop
    engine::Engine::Cork cork(rt_.engine);  // the calls of one tick leave in one write per worker
    while (!queue_.empty() && queue_.begin()->first <= now) {
      auto node = queue_.extract(queue_.begin());
      const auto& [tick, id] = node.value();
      auto it = jobs_.find(id);
      if (it == jobs_.end()) continue;
      it->second.scheduled = false;
      run(id, it->second, tick);
    }
    in_timer_ = false;
    arm();
  }

  void run(const std::string& id, Job& j, CronExpression::Seconds tick) {
    j.running = true;
    const uint64_t gen = j.generation;
    json::object payload = std::move(j.payload);
    if (payload.size() != 3) payload = tick_payload(id, tick);  // prepared by schedule(); defensive
    if (!lock_ && !redis_lock_) return dispatch(id, gen, tick, std::move(payload));
    auto claimed = [this, id, gen, tick, payload = std::move(payload)](bool owned) mutable {
      if (stopping_ || !find(id, gen)) return;
      if (!owned) return finish(id, gen, tick);
      dispatch(id, gen, tick, std::move(payload));
    };
    if (redis_lock_) return redis_lock_->acquire(j.lock_key, to_ms(tick), std::move(claimed));
    lock_->acquire(j.lock_key, to_ms(tick), std::move(claimed));
  }

  // Stamps the payload and fires the trigger (its condition first, if any).
  void dispatch(const std::string& id, uint64_t gen, CronExpression::Seconds tick,
                json::object payload) {
    auto t = rt_.engine.triggers().find(id);
    if (t == rt_.engine.triggers().end() || t->second.state != engine::Trigger::State::kBound)
      return finish(id, gen, tick);
    payload.emplace("actual_time", cron::format_rfc3339(system_clock::now()));
    rt_.engine.fire(t->second, std::move(payload),
                    [this, id, gen, tick](engine::FireStatus st, engine::Outcome o) {
                      if (st == engine::FireStatus::kInvoked && o.error)
                        spdlog::warn("cron job {}: handler failed: {}: {}", id, o.error->code,
                                     o.error->message);
                      finish(id, gen, tick);
                    });
  }

  // The run is over: the next tick is computed now, so ticks that passed meanwhile are skipped.
  void finish(const std::string& id, uint64_t gen, CronExpression::Seconds tick) {
    Job* j = find(id, gen);
    if (!j) return;
    j->running = false;
    j->last = tick;
    if (!stopping_) schedule(id, *j);
  }

  engine::Runtime& rt_;
  std::string name_;
  boost::asio::system_timer timer_;
  std::optional<CronExpression::Seconds> armed_;
  std::unique_ptr<storage::KvStore> store_;
  std::unique_ptr<cron::TickLock> lock_;
  std::unique_ptr<storage::redis::RedisClient> redis_;  // the redis adapter's connection
  std::unique_ptr<cron::RedisTickLock> redis_lock_;
  std::unordered_map<std::string, Job> jobs_;
  std::set<std::pair<CronExpression::Seconds, std::string>>
      queue_;  // (tick, job id), earliest first
  uint64_t generation_ = 0;
  bool stopping_ = false;
  bool in_timer_ = false;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_cron_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt) {
  return std::make_unique<CronWorker>(entry, rt);
}

}  // namespace iii::workers
