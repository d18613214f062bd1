#include "workers/queue/queue_store.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <filesystem>

namespace iii::workers::queue {
namespace {

namespace fs = std::filesystem;

// Runs one operation on the store and waits for its completion on `io`.
class StoreFixture : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("iii_queue_store_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    open();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void open() {
    QueueStoreOptions o;
    o.file_based = GetParam();
    o.file_path = dir_.string();
    o.fsync = false;
    store_ = std::make_unique<QueueStore>(
        o, [this](std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); });
  }
  std::optional<std::string> run(std::function<void(QueueBackend&)> op) {
    std::optional<std::string> error;
    bool done = false;
    store_->submit(std::move(op), [&](std::optional<std::string> e) {
      error = e;
      done = true;
    });
    while (!done) {
      io_.restart();  // run_one stops the context whenever it finds nothing to run
      io_.run_one();
    }
    return error;
  }
  QueueMessage msg(const std::string& queue, const std::string& data) {
    QueueMessage m;
    m.seq = store_->next_seq();
    m.id = "job-" + std::to_string(m.seq);
    m.queue = queue;
    m.function_id = "fn";
    m.message_id = "rid-" + std::to_string(m.seq);
    m.data = data;
    return m;
  }

  fs::path dir_;
  boost::asio::io_context io_;
  std::unique_ptr<QueueStore> store_;
};

TEST_P(StoreFixture, InsertLoadRetryDeadLetterRedriveDiscard) {
  std::vector<QueueMessage> ms;
  for (int i = 0; i < 5; ++i)
    ms.push_back(msg(i < 4 ? "__fn_queue::a" : "t::f", "{\"n\":" + std::to_string(i) + "}"));
  ms[1].group = "g1";
  ms[1].traceparent = "tp";
  for (auto& m : ms) ASSERT_FALSE(run([m](QueueBackend& b) { b.insert(m); }));

  std::vector<QueueMessage> loaded;
  run([&](QueueBackend& b) { loaded = b.load("__fn_queue::a", 0, 3); });
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[0].data, "{\"n\":0}");
  EXPECT_EQ(loaded[1].group, "g1");
  EXPECT_EQ(loaded[1].traceparent, "tp");
  run([&](QueueBackend& b) { loaded = b.load("__fn_queue::a", loaded.back().seq, 10); });
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].seq, ms[3].seq);

  run([&](QueueBackend& b) { b.retry(ms[0].seq, 1, 12345); });
  run([&](QueueBackend& b) { b.remove(ms[2].seq); });
  run([&](QueueBackend& b) { b.dead_letter(ms[3].seq, 3, "function call failed", 7000); });
  run([&](QueueBackend& b) { loaded = b.load("__fn_queue::a", 0, 10); });
  ASSERT_EQ(loaded.size(), 2u);
  EXPECT_EQ(loaded[0].attempts, 1);
  EXPECT_EQ(loaded[0].available_at_ms, 12345);

  QueueCounts c;
  run([&](QueueBackend& b) { c = b.counts({"__fn_queue::a", std::nullopt}); });
  EXPECT_EQ(c.ready, 2);
  EXPECT_EQ(c.dead, 1);
  run([&](QueueBackend& b) { c = b.counts({"t", std::string("t::")}); });
  EXPECT_EQ(c.ready, 1);
  std::map<std::string, int64_t> dc;
  run([&](QueueBackend& b) { dc = b.dead_counts(); });
  EXPECT_EQ(dc, (std::map<std::string, int64_t>{{"__fn_queue::a", 1}}));
  std::vector<DeadLetter> dl;
  run([&](QueueBackend& b) { dl = b.dead_letters({"__fn_queue::a", std::nullopt}, 0, 50); });
  ASSERT_EQ(dl.size(), 1u);
  EXPECT_EQ(dl[0].error, "function call failed");
  EXPECT_EQ(dl[0].failed_at_ms, 7000);
  EXPECT_EQ(dl[0].msg.attempts, 3);

  if (GetParam()) {  // file_based: everything survives a reopen, and seqs keep growing
    store_.reset();
    open();
    run([&](QueueBackend& b) { loaded = b.load("__fn_queue::a", 0, 10); });
    EXPECT_EQ(loaded.size(), 2u);
    EXPECT_GT(store_->next_seq(), ms.back().seq);
  }

  int64_t n = -1;
  std::vector<std::string> queues;
  run([&](QueueBackend& b) {
    n = b.redrive(
        {"__fn_queue::a", std::nullopt}, std::string("nope"), [this] { return store_->next_seq(); },
        queues);
  });
  EXPECT_EQ(n, 0);
  run([&](QueueBackend& b) {
    n = b.redrive(
        {"__fn_queue::a", std::nullopt}, std::nullopt, [this] { return store_->next_seq(); },
        queues);
  });
  EXPECT_EQ(n, 1);
  EXPECT_EQ(queues, std::vector<std::string>{"__fn_queue::a"});
  run([&](QueueBackend& b) { loaded = b.load("__fn_queue::a", ms.back().seq, 10); });
  ASSERT_EQ(loaded.size(), 1u);  // a new seq, after everything else
  EXPECT_EQ(loaded[0].attempts, 0);
  EXPECT_EQ(loaded[0].id, ms[3].id);

  run([&](QueueBackend& b) { b.dead_letter(loaded[0].seq, 1, "x", 1); });
  run([&](QueueBackend& b) { n = b.discard({"__fn_queue::a", std::nullopt}, "nope"); });
  EXPECT_EQ(n, 0);
  run([&](QueueBackend& b) { n = b.discard({"__fn_queue::a", std::nullopt}, ms[3].id); });
  EXPECT_EQ(n, 1);
  run([&](QueueBackend& b) { c = b.counts({"__fn_queue::a", std::nullopt}); });
  EXPECT_EQ(c.dead, 0);
}

TEST_P(StoreFixture, DueRetries) {
  std::vector<QueueMessage> ms;
  for (int i = 0; i < 4; ++i) ms.push_back(msg("q", "{}"));
  for (auto& m : ms) run([m](QueueBackend& b) { b.insert(m); });
  run([&](QueueBackend& b) {
    b.retry(ms[0].seq, 1, 300);
    b.retry(ms[1].seq, 1, 100);
    b.retry(ms[2].seq, 1, 900);
  });
  std::vector<QueueMessage> due;
  int64_t next = -1;
  run([&](QueueBackend& b) { due = b.due_retries("q", ms.back().seq, 500, 10, next); });
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].seq, ms[1].seq);  // earliest first
  EXPECT_EQ(due[1].seq, ms[0].seq);
  EXPECT_EQ(next, 900);
  run([&](QueueBackend& b) { due = b.due_retries("q", ms[0].seq, 500, 10, next); });
  ASSERT_EQ(due.size(), 1u);  // only seqs up to max_seq
  EXPECT_EQ(next, 0);
  run([&](QueueBackend& b) { due = b.due_retries("q", ms.back().seq, 500, 1, next); });
  EXPECT_EQ(due.size(), 1u);
}

TEST_P(StoreFixture, LoadGroup) {
  std::vector<QueueMessage> ms;
  for (int i = 0; i < 6; ++i) {
    ms.push_back(msg("f", "{}"));
    ms.back().group = i % 2 ? "odd" : "even";
  }
  for (auto& m : ms) run([m](QueueBackend& b) { b.insert(m); });
  std::vector<QueueMessage> got;
  run([&](QueueBackend& b) { got = b.load_group("f", "odd", ms[2].seq, ms[5].seq, 10); });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].seq, ms[3].seq);
  EXPECT_EQ(got[1].seq, ms[5].seq);
  run([&](QueueBackend& b) { got = b.load_group("f", "even", 0, ms[3].seq, 1); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].seq, ms[0].seq);
}

TEST_P(StoreFixture, ClosedStoreRefusesOperations) {
  store_->close();
  EXPECT_EQ(run([](QueueBackend&) {}), "store closed");
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreFixture, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "FileBased" : "InMemory"; });

}  // namespace
}  // namespace iii::workers::queue
