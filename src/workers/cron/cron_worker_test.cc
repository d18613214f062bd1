#include "workers/cron/cron_worker.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>

#include "config/config.h"
#include "engine/engine.h"
#include "storage/kv_store.h"
#include "workers/cron/cron_expression.h"
#include "workers/cron/tick_lock.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono;

config::WorkerEntry entry_from(const std::string& yaml) {
  return config::parse_config(yaml, "cron.yaml").workers.front();
}

std::string config_error(const std::string& yaml) {
  boost::asio::io_context io;
  engine::Engine eng;
  engine::Runtime rt{io, eng};
  try {
    make_cron_worker(entry_from(yaml), rt);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(CronConfig, AdapterChecks) {
  EXPECT_EQ(config_error("workers:\n  - name: iii-cron\n"), "");
  EXPECT_EQ(
      config_error(
          "workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n"
          "        config: { lock_ttl_ms: 5000, lock_index: my_locks, store_method: in_memory }\n"),
      "");
  EXPECT_EQ(config_error(
                "workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: redis\n"),
            "");
  EXPECT_EQ(config_error("workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: "
                         "redis\n        config: { redis_url: 'redis://h:1', lock_ttl_ms: 500 }\n"),
            "");
  EXPECT_EQ(config_error("workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: "
                         "redis\n        config: { redis_url: 'redis://h:1', lock_index: x }\n"),
            "cron.yaml:6: worker 'iii-cron': unknown key 'lock_index' (known keys: lock_ttl_ms, "
            "redis_url)");
  EXPECT_EQ(
      config_error(
          "workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: nats\n"),
      "cron.yaml:5: worker 'iii-cron': Adapter factory 'nats' not found. Available: [kv, redis]");
  EXPECT_NE(
      config_error("workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n"
                   "        config:\n          lock_ttl: 5\n")
          .find("cron.yaml:7: worker 'iii-cron': unknown key 'lock_ttl'"),
      std::string::npos);
  EXPECT_NE(
      config_error("workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n"
                   "        config:\n          lock_ttl_ms: 0\n")
          .find("cron.yaml:7: worker 'iii-cron': key 'lock_ttl_ms' must be between 1 and"),
      std::string::npos);
  // Store keys are still checked by the shared adapter reader.
  EXPECT_NE(
      config_error("workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n"
                   "        config:\n          store_method: s3\n")
          .find("cron.yaml:7: worker 'iii-cron': adapter.config.store_method must be in_memory or "
                "file_based"),
      std::string::npos);
  EXPECT_NE(config_error("workers:\n  - name: iii-cron\n    config:\n      schedule: 1\n")
                .find("unknown key 'schedule'"),
            std::string::npos);
}

// Collects store completions posted from the writer threads; the test thread runs them.
class TestLoop {
 public:
  storage::Poster poster() {
    return [this](std::function<void()> fn) {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
      cv_.notify_all();
    };
  }
  void run_until(const std::function<bool()>& done) {
    auto deadline = steady_clock::now() + seconds(20);
    while (!done()) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        if (!cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); })) {
          ADD_FAILURE() << "timed out waiting for store completions";
          return;
        }
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

TEST(TickLock, OneOwnerPerTickInMemory) {
  auto store = storage::make_memory_store([](std::function<void()> fn) { fn(); });
  cron::TickLock a(*store, "cron_locks", 30000, "engine-a");
  cron::TickLock b(*store, "cron_locks", 30000, "engine-b");
  std::vector<bool> got;
  a.acquire("job", 1000, [&](bool w) { got.push_back(w); });
  b.acquire("job", 1000, [&](bool w) { got.push_back(w); });
  a.acquire("job", 1000, [&](bool w) { got.push_back(w); });  // the owner asking again
  b.acquire("job", 2000, [&](bool w) { got.push_back(w); });
  a.acquire("job", 2000, [&](bool w) { got.push_back(w); });
  b.acquire("other", 1000, [&](bool w) { got.push_back(w); });
  EXPECT_EQ(got, (std::vector<bool>{true, false, true, true, false, true}));
  EXPECT_EQ(a.owned_keys(), 1u);  // job@1000 (one claim, asked twice); b took job@2000
}

TEST(TickLock, OwnerDeletesExpiredKeysAndStartupSweeps) {
  auto store = storage::make_memory_store([](std::function<void()> fn) { fn(); });
  cron::TickLock a(*store, "cron_locks", 1, "engine-a");
  a.acquire("job", 1000, [](bool) {});
  a.acquire("job", 2000, [](bool) {});
  size_t items = 0;
  auto count = [&] { store->list("cron_locks", [&](auto r) { items = r.value.size(); }); };
  count();
  EXPECT_EQ(items, 2u);
  a.expire(0);  // nothing expired yet
  count();
  EXPECT_EQ(items, 2u);
  const int64_t later =
      duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() + 10;
  a.expire(later);
  count();
  EXPECT_EQ(items, 0u);
  EXPECT_EQ(a.owned_keys(), 0u);
  // Keys left by an engine that died are removed by the next one's start-up sweep.
  cron::TickLock dead(*store, "cron_locks", 1, "engine-dead");
  dead.acquire("job", 3000, [](bool) {});
  store->set("cron_locks", "not-a-lock", json::value("x"), [](auto) {});
  cron::TickLock b(*store, "cron_locks", 1, "engine-b");
  b.sweep(later);
  count();
  EXPECT_EQ(items, 1u);  // only the foreign value is left alone
}

// Two stores on one SQLite file are two connections with their own writer threads, as two
// engine processes would be: every tick still has exactly one owner.
TEST(TickLock, TwoStoresOnOneFileOwnEachTickOnce) {
  const fs::path dir = fs::temp_directory_path() / ("iii-ticklock-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  storage::StoreOptions o;
  o.method = storage::StoreOptions::Method::kFileBased;
  o.file_path = (dir / "locks.db").string();
  o.fsync = false;
  TestLoop loop;
  auto s1 = storage::make_store(o, loop.poster());
  auto s2 = storage::make_store(o, loop.poster());
  cron::TickLock a(*s1, "cron_locks", 30000, "engine-a");
  cron::TickLock b(*s2, "cron_locks", 30000, "engine-b");
  constexpr int kTicks = 300;
  // Each engine has two triggers of the job: both get the engine's answer.
  std::vector<int> wins_a(kTicks, 0), wins_b(kTicks, 0);
  int answers = 0;
  for (int i = 0; i < kTicks; ++i) {
    // Interleave the order so that neither store is always first.
    const bool a_first = i % 2;
    for (int k = 0; k < 2; ++k) {
      auto claim = [&, i](cron::TickLock& lock, std::vector<int>& wins) {
        lock.acquire("job", i * 1000, [&wins, &answers, i](bool w) {
          wins[i] += w;
          ++answers;
        });
      };
      if (a_first)
        claim(a, wins_a), claim(b, wins_b);
      else
        claim(b, wins_b), claim(a, wins_a);
    }
  }
  loop.run_until([&] { return answers == 4 * kTicks; });
  for (int i = 0; i < kTicks; ++i)
    EXPECT_TRUE((wins_a[i] == 2 && wins_b[i] == 0) || (wins_a[i] == 0 && wins_b[i] == 2))
        << "tick " << i << ": a won " << wins_a[i] << ", b won " << wins_b[i];
  EXPECT_EQ(a.owned_keys() + b.owned_keys(), size_t(kTicks));
  s1->close();
  s2->close();
  fs::remove_all(dir);
}

// The worker on a real engine and event loop.
class CronWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = make_cron_worker(entry_from("workers:\n  - name: iii-cron\n"), rt_);
    worker_->start();
    engine::FunctionInfo info;
    info.id = "test::tick";
    eng_.register_builtin(
        info, "test", [this](const engine::CallContext&, json::value in, engine::Completion done) {
          payloads_.push_back(in);
          done(engine::Outcome::ok(nullptr));
        });
  }
  void TearDown() override { worker_->stop(); }

  engine::Trigger trigger(const std::string& id, json::value config) {
    engine::Trigger t;
    t.id = id;
    t.trigger_type = "cron";
    t.function_id = "test::tick";
    t.config = std::move(config);
    return t;
  }
  const engine::Trigger& stored(const std::string& id) { return eng_.triggers().at(id); }

  boost::asio::io_context io_;
  engine::Engine eng_;
  engine::Runtime rt_{io_, eng_};
  std::unique_ptr<engine::BuiltinWorker> worker_;
  std::vector<json::value> payloads_;
};

TEST_F(CronWorkerTest, RegistrationErrorsBecomeTheTriggersErrorState) {
  eng_.register_trigger(trigger("no-expr", json::object{}));
  eng_.register_trigger(trigger("empty", json::object{{"expression", ""}}));
  eng_.register_trigger(trigger("five", json::object{{"expression", "*/5 * * * *"}}));
  eng_.register_trigger(trigger("bad", json::object{{"expression", "61 * * * * *"}}));
  eng_.register_trigger(trigger("num", json::object{{"expression", 5}}));
  eng_.register_trigger(trigger("ok", json::object{{"expression", "0 0 0 1 1 *"}}));
  EXPECT_EQ(stored("no-expr").state, engine::Trigger::State::kFailed);
  EXPECT_EQ(stored("no-expr").error, "Cron expression is required");
  EXPECT_EQ(stored("empty").error, "Cron expression is required");
  EXPECT_EQ(stored("five").state, engine::Trigger::State::kFailed);
  EXPECT_EQ(stored("five").error.rfind("Invalid cron expression '*/5 * * * *': 5-field crontab", 0),
            0u)
      << stored("five").error;
  EXPECT_EQ(stored("bad").error,
            "Invalid cron expression '61 * * * * *': seconds: 61 is out of range (0-59)");
  EXPECT_EQ(stored("num").error, "Invalid cron expression '5': expression must be a string");
  EXPECT_EQ(stored("ok").state, engine::Trigger::State::kBound);
}

TEST_F(CronWorkerTest, FiresEverySecondWithThePayload) {
  eng_.register_trigger(trigger("every-second", json::object{{"expression", "* * * * * *"}}));
  const auto deadline = steady_clock::now() + seconds(4);
  while (payloads_.size() < 2 && steady_clock::now() < deadline) io_.run_one_for(milliseconds(100));
  ASSERT_GE(payloads_.size(), 2u);
  const auto& p = payloads_[0].as_object();
  EXPECT_EQ(p.size(), 4u);
  EXPECT_EQ(p.at("trigger"), "cron");
  EXPECT_EQ(p.at("job_id"), "every-second");
  const std::string scheduled(p.at("scheduled_time").as_string());
  const std::string actual(p.at("actual_time").as_string());
  EXPECT_EQ(scheduled.size(), 25u) << scheduled;  // 2026-05-05T10:00:00+00:00
  EXPECT_EQ(scheduled.substr(19), "+00:00");
  EXPECT_EQ(actual.substr(0, 19), scheduled.substr(0, 19));  // fired within that second
  EXPECT_EQ(actual[19], '.');
  // Consecutive ticks, one second apart.
  const std::string second(payloads_[1].as_object().at("scheduled_time").as_string());
  EXPECT_NE(second, scheduled);
  // Unbinding stops it.
  eng_.unregister_trigger("every-second");
  const size_t seen = payloads_.size();
  io_.run_for(milliseconds(1200));
  EXPECT_EQ(payloads_.size(), seen);
}

}  // namespace
}  // namespace iii::workers
