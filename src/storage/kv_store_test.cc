#include "storage/kv_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

namespace iii::storage {

namespace json = boost::json;
namespace {

namespace fs = std::filesystem;

// Collects completions posted from any thread; the test thread runs them in order.
class TestLoop {
 public:
  Poster poster() {
    return [this](std::function<void()> fn) {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
      cv_.notify_all();
    };
  }
  // Runs completions until `done` holds (bounded wait).
  void run_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
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

json::value J(const char* s) { return json::parse(s); }

// Synchronous helpers over the async interface.
struct Sync {
  KvStore& store;
  TestLoop& loop;

  std::optional<json::value> get(const std::string& idx, const std::string& key) {
    std::optional<Stored<std::optional<json::value>>> r;
    store.get(idx, key, [&](auto v) { r = std::move(v); });
    loop.run_until([&] { return r.has_value(); });
    EXPECT_TRUE(r->ok());
    return r->value;
  }
  SetResult set(const std::string& idx, const std::string& key, json::value v) {
    std::optional<Stored<SetResult>> r;
    store.set(idx, key, std::move(v), [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    EXPECT_TRUE(r->ok()) << *r->error;
    return r->value;
  }
  std::optional<json::value> del(const std::string& idx, const std::string& key) {
    std::optional<Stored<std::optional<json::value>>> r;
    store.del(idx, key, [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    return r->value;
  }
  UpdateResult update(const std::string& idx, const std::string& key, const char* ops) {
    auto parsed = parse_update_ops(json::parse(ops));
    EXPECT_TRUE(parsed.ok()) << parsed.error;
    std::optional<Stored<UpdateResult>> r;
    store.update(idx, key, parsed.ops, [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    return r->value;
  }
  std::string list(const std::string& idx) {
    std::optional<Stored<std::vector<json::value>>> r;
    store.list(idx, [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    json::array a(r->value.begin(), r->value.end());
    return json::serialize(a);
  }
  // list_raw's text; "<error>" when it failed or gave no text.
  std::string list_raw(const std::string& idx) {
    std::optional<Stored<KvStore::RawList>> r;
    store.list_raw(idx, [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    EXPECT_TRUE(r->ok()) << *r->error;
    return r->ok() && r->value ? *r->value : std::string("<error>");
  }
  std::vector<std::string> indexes(const std::string& prefix) {
    std::optional<Stored<std::vector<std::string>>> r;
    store.list_indexes(prefix, [&](auto x) { r = std::move(x); });
    loop.run_until([&] { return r.has_value(); });
    return r->value;
  }
};

class KvStoreTest : public ::testing::TestWithParam<StoreOptions::Method> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("iii-kv-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::remove_all(dir_);
    open();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void open() {
    StoreOptions o;
    o.method = GetParam();
    o.file_path = dir_.string();
    store_ = make_store(o, loop_.poster());
  }
  Sync s() { return Sync{*store_, loop_}; }

  static inline int counter_ = 0;
  fs::path dir_;
  TestLoop loop_;
  std::unique_ptr<KvStore> store_;
};

TEST_P(KvStoreTest, SetGetDeleteWithOldValues) {
  auto r1 = s().set("state:a", "k", J(R"({"v":1})"));
  EXPECT_FALSE(r1.old_value);
  auto r2 = s().set("state:a", "k", J(R"({"v":2})"));
  ASSERT_TRUE(r2.old_value);
  EXPECT_EQ(json::serialize(*r2.old_value), R"({"v":1})");
  EXPECT_EQ(json::serialize(*s().get("state:a", "k")), R"({"v":2})");
  EXPECT_FALSE(s().get("state:a", "missing"));
  EXPECT_EQ(json::serialize(*s().del("state:a", "k")), R"({"v":2})");
  EXPECT_FALSE(s().del("state:a", "k"));
  EXPECT_FALSE(s().get("state:a", "k"));
}

TEST_P(KvStoreTest, ListKeepsInsertionOrderAcrossUpdates) {
  s().set("g", "b", J("1"));
  s().set("g", "a", J("2"));
  s().set("g", "c", J("3"));
  s().set("g", "b", J("4"));  // keeps its position
  EXPECT_EQ(s().list("g"), "[4,2,3]");
  s().del("g", "a");
  EXPECT_EQ(s().list("g"), "[4,3]");
  EXPECT_EQ(s().list("empty"), "[]");
}

TEST_P(KvStoreTest, IndexesByPrefixAndEmptyGroupsDisappear) {
  s().set("stream:s:g2", "x", J("1"));
  s().set("stream:s:g1", "x", J("1"));
  s().set("stream:other:g", "x", J("1"));
  EXPECT_EQ(s().indexes("stream:s:"), (std::vector<std::string>{"stream:s:g1", "stream:s:g2"}));
  s().del("stream:s:g1", "x");
  EXPECT_EQ(s().indexes("stream:s:"), (std::vector<std::string>{"stream:s:g2"}));
}

TEST_P(KvStoreTest, UpdateIsAtomicAndWritesBack) {
  auto r = s().update("c", "n", R"([{"type":"increment","path":"hits","by":2}])");
  EXPECT_FALSE(r.old_value);
  EXPECT_EQ(json::serialize(r.new_value), R"({"hits":2})");
  r = s().update(
      "c", "n",
      R"([{"type":"increment","path":"hits","by":3},{"type":"set","path":"x","value":1}])");
  EXPECT_EQ(json::serialize(*r.old_value), R"({"hits":2})");
  EXPECT_EQ(json::serialize(*s().get("c", "n")), R"({"hits":5,"x":1})");
}

TEST_P(KvStoreTest, ManyConcurrentWritesAllAcknowledgedInOrder) {
  int acked = 0;
  std::vector<int> order;
  for (int i = 0; i < 2000; ++i)
    store_->set("bulk", "k" + std::to_string(i % 100), json::value(i), [&, i](auto r) {
      EXPECT_TRUE(r.ok());
      order.push_back(i);
      ++acked;
    });
  loop_.run_until([&] { return acked == 2000; });
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(json::serialize(*s().get("bulk", "k99")), "1999");
}

// A read issued after a write, before the write is acknowledged, sees it (read-your-writes),
// and its completion comes after the write's, as with the in-memory adapter.
TEST_P(KvStoreTest, ReadsIssuedAfterAnUnacknowledgedWriteSeeIt) {
  std::vector<std::string> events;
  store_->set("stream:s:g", "k", J("1"), [&](auto r) {
    EXPECT_TRUE(r.ok());
    events.push_back("set");
  });
  store_->get("stream:s:g", "k", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("get " + (r.value ? json::serialize(*r.value) : std::string("-")));
  });
  store_->list("stream:s:g", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("list " + std::to_string(r.value.size()));
  });
  store_->list_indexes("stream:s:", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("indexes " + std::to_string(r.value.size()));
  });
  store_->del("stream:s:g", "k", [&](auto r) {
    EXPECT_TRUE(r.ok());
    events.push_back("del");
  });
  store_->get("stream:s:g", "k", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("get " + (r.value ? json::serialize(*r.value) : std::string("-")));
  });
  loop_.run_until([&] { return events.size() == 6; });
  ASSERT_EQ(events.size(), 6u);
  // Completions of reads may overtake each other, never the write they follow.
  auto pos = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) - events.begin();
  };
  EXPECT_LT(pos("set"), pos("get 1"));
  EXPECT_LT(pos("set"), pos("list 1"));
  EXPECT_LT(pos("set"), pos("indexes 1"));
  EXPECT_LT(pos("del"), pos("get -"));
}

// Lists taken while thousands of inserts commit see whole prefixes of them (one snapshot per
// list) and at least every insert issued before the list.
TEST_P(KvStoreTest, ListsSeeConsistentSnapshotsDuringWrites) {
  constexpr int kItems = 3000;
  int acked = 0, listed = 0, lists = 0;
  for (int i = 0; i < kItems; ++i) {
    store_->set("g", "k" + std::to_string(i), json::value(i), [&](auto r) {
      EXPECT_TRUE(r.ok());
      ++acked;
    });
    if (i % 100 == 99) {
      ++lists;
      store_->list("g", [&, issued = i + 1](auto r) {
        ASSERT_TRUE(r.ok());
        EXPECT_GE(r.value.size(), size_t(issued));
        for (size_t j = 0; j < r.value.size(); ++j)
          ASSERT_EQ(r.value[j], json::value(int64_t(j))) << "gap in a list snapshot";
        ++listed;
      });
    }
  }
  loop_.run_until([&] { return acked == kItems && listed == lists; });
  EXPECT_EQ(listed, lists);
}

// list_raw is byte for byte the serialised list, through inserts, updates (which keep an
// item's position), deletes, and for empty and missing indexes.
TEST_P(KvStoreTest, ListRawIsTheSerialisedList) {
  EXPECT_EQ(s().list_raw("missing"), "[]");
  const char* values[] = {
      R"({"s":"q\"uote\\ \n\u0001 café  ","n":[1,-2,0.1,3.0,-0.0,1e300,null,true]})",
      R"(18446744073709551615)",
      R"(-9223372036854775808)",
      R"("")",
      R"([])",
      R"({})",
      R"({"nested":{"a":[{"b":[1.5,2.25e-10]}]}})",
      R"(null)",
      R"(false)"};
  int n = 0;
  for (const char* v : values) s().set("g", "k" + std::to_string(n++), J(v));
  EXPECT_EQ(s().list_raw("g"), s().list("g"));
  EXPECT_EQ(json::parse(s().list_raw("g")).as_array().size(), size_t(n));
  s().set("g", "k3", J(R"({"updated":true})"));
  s().update("g", "k5", R"([{"type":"increment","path":"hits","by":2}])");
  s().del("g", "k0");
  s().del("g", "k8");
  const std::string raw = s().list_raw("g");
  EXPECT_EQ(raw, s().list("g"));
  auto arr = json::parse(raw).as_array();
  ASSERT_EQ(arr.size(), 7u);
  EXPECT_EQ(json::serialize(arr[2]), R"({"updated":true})");  // k3 kept its position
  EXPECT_EQ(json::serialize(arr[4]), R"({"hits":2})");
  for (int i = 1; i <= 8; ++i) s().del("g", "k" + std::to_string(i));
  EXPECT_EQ(s().list_raw("g"), "[]");
  EXPECT_EQ(s().list("g"), "[]");
}

// Values nested as deep as the protocol allows read back whole (not as null) from every read.
TEST_P(KvStoreTest, DeepValuesReadBack) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "[";
  deep += "1";
  for (int i = 0; i < 100; ++i) deep += "]";
  json::parse_options opts;
  opts.max_depth = 200;
  s().set("d", "k", json::parse(deep, {}, opts));
  EXPECT_EQ(json::serialize(*s().get("d", "k")), deep);
  EXPECT_EQ(s().list("d"), "[" + deep + "]");
  EXPECT_EQ(s().list_raw("d"), "[" + deep + "]");
}

// list_raw follows the same read-your-writes rule as list.
TEST_P(KvStoreTest, ListRawIssuedAfterAnUnacknowledgedWriteSeesIt) {
  std::vector<std::string> events;
  store_->set("g", "a", J("1"), [&](auto r) { events.push_back("set a"); });
  store_->set("g", "b", J(R"({"x":2})"), [&](auto r) { events.push_back("set b"); });
  store_->list_raw("g", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("list " + *r.value);
  });
  store_->del("g", "a", [&](auto r) { events.push_back("del a"); });
  store_->list_raw("g", [&](auto r) {
    ASSERT_TRUE(r.ok());
    events.push_back("list " + *r.value);
  });
  loop_.run_until([&] { return events.size() == 5; });
  auto pos = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) - events.begin();
  };
  EXPECT_LT(pos("set b"), pos(R"(list [1,{"x":2}])"));
  EXPECT_LT(pos("del a"), pos(R"(list [{"x":2}])"));
  EXPECT_LT(pos(R"(list [{"x":2}])"), 5);
}

INSTANTIATE_TEST_SUITE_P(Adapters, KvStoreTest,
                         ::testing::Values(StoreOptions::Method::kInMemory,
                                           StoreOptions::Method::kFileBased),
                         [](const auto& info) {
                           return info.param == StoreOptions::Method::kInMemory ? "InMemory"
                                                                                : "FileBased";
                         });

TEST(SqliteStore, AcknowledgedWritesSurviveReopen) {
  const fs::path dir = fs::temp_directory_path() / ("iii-kv-reopen-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = (dir / "state_store.db").string();  // a file path works as well as a directory
  {
    TestLoop loop;
    auto store = make_store(o, loop.poster());
    Sync{*store, loop}.set("state:s", "a", J(R"({"x":[1,2]})"));
    Sync{*store, loop}.set("state:s", "b", J("true"));
  }
  TestLoop loop;
  auto store = make_store(o, loop.poster());
  Sync sync{*store, loop};
  EXPECT_EQ(json::serialize(*sync.get("state:s", "a")), R"({"x":[1,2]})");
  EXPECT_EQ(sync.list("state:s"), R"([{"x":[1,2]},true])");
  sync.set("state:s", "c", J("3"));  // sequence continues after reopen
  EXPECT_EQ(sync.list("state:s"), R"([{"x":[1,2]},true,3])");
  EXPECT_TRUE(fs::exists(dir / "state_store.db"));
  store.reset();
  fs::remove_all(dir);
}

// Two engines may share one file_based store (the cron kv lock relies on it): each writer takes
// the next position from the file inside its write transaction, so neither reuses the other's.
TEST(SqliteStore, TwoStoresOnOneFileNeverCollideOnPositions) {
  const fs::path dir = fs::temp_directory_path() / ("iii-kv-shared-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = (dir / "shared.db").string();
  o.fsync = false;
  TestLoop loop;
  auto a = make_store(o, loop.poster());
  auto b = make_store(o, loop.poster());
  for (int i = 0; i < 50; ++i) {
    Sync{i % 2 ? *a : *b, loop}.set("shared", "k" + std::to_string(i),
                                    J(std::to_string(i).c_str()));
    Sync{i % 2 ? *b : *a, loop}.set("shared", "other" + std::to_string(i), J("0"));
  }
  std::string expected = "[";
  for (int i = 0; i < 50; ++i) expected += (i ? "," : "") + std::to_string(i) + ",0";
  expected += "]";
  EXPECT_EQ(Sync(*a, loop).list("shared"), expected);
  EXPECT_EQ(Sync(*b, loop).list("shared"), expected);
  a.reset();
  b.reset();
  fs::remove_all(dir);
}

std::string table_sql(const std::string& db_path, const char* table) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE type='table' AND name=?1", -1, &st,
                     nullptr);
  sqlite3_bind_text(st, 1, table, -1, SQLITE_TRANSIENT);
  std::string sql;
  if (sqlite3_step(st) == SQLITE_ROW)
    sql = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return sql;
}

int64_t query_int(const std::string& db_path, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  int64_t v = -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

// New stores: a rowid table whose rowid is the item's seq, one (idx, key) index, 512-byte pages
// (docs/performance.md, "Write amplification of the file_based store").
TEST(SqliteStore, NewStoresKeepItemsInSeqOrderWithOneKeyIndex) {
  const fs::path dir = fs::temp_directory_path() / ("iii-kv-layout-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = dir.string();
  {
    TestLoop loop;
    auto store = make_store(o, loop.poster());
    Sync sync{*store, loop};
    sync.set("state:s", "b", J("1"));
    sync.set("state:s", "a", J("2"));
    sync.set("state:s", "b", J("3"));  // an update keeps its position
    EXPECT_EQ(sync.list("state:s"), "[3,2]");
    EXPECT_EQ(sync.list_raw("state:s"), "[3,2]");
  }
  const std::string path = (dir / "iii_kv.sqlite3").string();
  const std::string sql = table_sql(path, "items");
  EXPECT_NE(sql.find("seq INTEGER PRIMARY KEY"), std::string::npos) << sql;
  EXPECT_EQ(table_sql(path, "kv"), "");
  EXPECT_EQ(query_int(path.c_str(),
                      "SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND "
                      "tbl_name='items'"),
            1);
  EXPECT_EQ(query_int(path.c_str(), "PRAGMA page_size"), 512);
  fs::remove_all(dir);
}

// Stores written by earlier builds have a `kv` table (WITHOUT ROWID in the first builds, then a
// rowid table) and a (idx, seq) index; they are moved to the current layout on open, with
// their items, order and counts.
void opens_earlier_layout(const char* kv_table) {
  const fs::path dir = fs::temp_directory_path() / ("iii-kv-old-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "old.db").string();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const std::string setup =
        std::string(kv_table) +
        "CREATE INDEX kv_order ON kv (idx, seq);"
        "CREATE TABLE kv_indexes (idx TEXT PRIMARY KEY, items INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO kv VALUES ('state:s', 'z', 1, '{\"x\":1}');"
        "INSERT INTO kv VALUES ('state:s', 'a', 5, '\"five\"');"
        "INSERT INTO kv VALUES ('state:t', 'a', 3, 'true');"
        "INSERT INTO kv_indexes VALUES ('state:s', 2);"
        "INSERT INTO kv_indexes VALUES ('state:t', 1);";
    ASSERT_EQ(sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = path;
  for (int round = 0; round < 2; ++round) {  // the second open finds the current layout
    TestLoop loop;
    auto store = make_store(o, loop.poster());
    Sync sync{*store, loop};
    EXPECT_EQ(json::serialize(*sync.get("state:s", "z")), R"({"x":1})");
    if (round == 0) sync.set("state:s", "b", J("2"));
    EXPECT_EQ(sync.list("state:s"), R"([{"x":1},"five",2])");
    EXPECT_EQ(sync.list_raw("state:t"), R"([true])");
    EXPECT_EQ(sync.indexes("state:"), (std::vector<std::string>{"state:s", "state:t"}));
  }
  EXPECT_EQ(table_sql(path, "kv"), "");
  EXPECT_NE(table_sql(path, "items").find("seq INTEGER PRIMARY KEY"), std::string::npos);
  fs::remove_all(dir);
}

TEST(SqliteStore, MovesStoresWithTheWithoutRowidLayoutToTheCurrentOne) {
  opens_earlier_layout(
      "CREATE TABLE kv (idx TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, value TEXT "
      "NOT NULL, PRIMARY KEY (idx, key)) WITHOUT ROWID;");
}

TEST(SqliteStore, MovesStoresWithTheRowidKvLayoutToTheCurrentOne) {
  opens_earlier_layout(
      "CREATE TABLE kv (idx TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, value TEXT "
      "NOT NULL, PRIMARY KEY (idx, key));");
}

// A damaged row (text that is not one JSON value) reads as null from get, list and list_raw,
// so list_raw never sends invalid JSON.
TEST(SqliteStore, DamagedRowsReadAsNull) {
  const fs::path dir = fs::temp_directory_path() / ("iii-kv-damaged-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = dir.string();
  {
    TestLoop loop;
    auto store = make_store(o, loop.poster());
    Sync sync{*store, loop};
    sync.set("state:s", "a", J("1"));
    sync.set("state:s", "b", J("2"));
    sync.set("state:s", "c", J("3"));
    sync.set("state:s", "d", J("4"));
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "iii_kv.sqlite3").string().c_str(), &db), SQLITE_OK);
    const char* damage =
        "UPDATE items SET value='{\"x\":' WHERE key='a';"
        "UPDATE items SET value='2 3' WHERE key='b';"
        "UPDATE items SET value='' WHERE key='c';";
    ASSERT_EQ(sqlite3_exec(db, damage, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  TestLoop loop;
  auto store = make_store(o, loop.poster());
  Sync sync{*store, loop};
  EXPECT_EQ(json::serialize(*sync.get("state:s", "a")), "null");
  EXPECT_EQ(sync.list("state:s"), "[null,null,null,4]");
  EXPECT_EQ(sync.list_raw("state:s"), "[null,null,null,4]");
  store.reset();
  fs::remove_all(dir);
}

TEST(SqliteStore, UnwritablePathIsAClearError) {
  StoreOptions o;
  o.method = StoreOptions::Method::kFileBased;
  o.file_path = "/proc/iii-cannot-write-here/x.db";
  TestLoop loop;
  EXPECT_THROW(make_store(o, loop.poster()), std::exception);
}

}  // namespace
}  // namespace iii::storage

namespace iii::storage {
namespace {

// A poster that can hold the reader thread that posts next: the test sees the read finished
// on its thread and keeps that thread busy until it lets it go.
class HoldingLoop {
 public:
  Poster poster() {
    return [this](std::function<void()> fn) {
      std::unique_lock lock(mu_);
      if (hold_next_ && std::this_thread::get_id() != owner_) {
        hold_next_ = false;
        holding_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !holding_; });
      }
      queue_.push_back(std::move(fn));
      cv_.notify_all();
    };
  }
  void hold_next() {
    std::lock_guard lock(mu_);
    hold_next_ = true;
  }
  // Waits (bounded) until a reader thread is held in the poster.
  bool wait_held() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return holding_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    holding_ = false;
    cv_.notify_all();
  }
  void run_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
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
  std::thread::id owner_ = std::this_thread::get_id();
  bool hold_next_ = false, holding_ = false;
};

struct SqliteReads : ::testing::Test {
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("iii-kv-reads-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    StoreOptions o;
    o.method = StoreOptions::Method::kFileBased;
    o.file_path = dir_.string();
    store_ = make_store(o, loop_.poster());
  }
  void TearDown() override {
    loop_.release();
    store_.reset();
    fs::remove_all(dir_);
  }
  void fill(const std::string& index, int n) {
    int acked = 0;
    for (int i = 0; i < n; ++i)
      store_->set(index, "k" + std::to_string(i), json::value(i), [&](auto) { ++acked; });
    loop_.run_until([&] { return acked == n; });
  }
  fs::path dir_;
  HoldingLoop loop_;
  std::unique_ptr<KvStore> store_;
};

// A list in progress on one reader (held before it can post its result) does not delay a get:
// it completes on the other reader. With reads on the engine thread the list would complete
// inside list() and no reader would ever be held.
TEST_F(SqliteReads, GetCompletesWhileAListIsRunning) {
  fill("big", 1000);
  fill("hot", 1);
  bool listed = false, got = false;
  loop_.hold_next();
  store_->list("big", [&](auto r) {
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.value.size(), 1000u);
    listed = true;
  });
  ASSERT_TRUE(loop_.wait_held()) << "the list did not run on a reader thread";
  EXPECT_FALSE(listed);
  // A second list must wait for the first: one reader is kept for point reads.
  bool listed2 = false;
  store_->list("big", [&](auto r) {
    EXPECT_TRUE(r.ok());
    listed2 = true;
  });
  store_->get("hot", "k0", [&](auto r) {
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value, json::value(0));
    got = true;
  });
  loop_.run_until([&] { return got; });
  EXPECT_TRUE(got);
  EXPECT_FALSE(listed);
  EXPECT_FALSE(listed2);
  loop_.release();
  loop_.run_until([&] { return listed && listed2; });
}

// close() with reads queued and in flight: every read issued before close() completes with
// its result, later ones fail with an error, and completions that run after the store is
// destroyed touch nothing of it (the asan build checks).
TEST_F(SqliteReads, CloseDrainsReadsInFlight) {
  fill("big", 2000);
  int ok = 0, failed = 0;
  constexpr int kReads = 50;
  for (int i = 0; i < kReads; ++i) {
    auto count = [&](bool good) { good ? ++ok : ++failed; };
    if (i % 5 == 0)
      store_->list("big", [&, count](auto r) {
        EXPECT_TRUE(r.ok()) << *r.error;
        count(r.ok() && r.value.size() >= 2000);  // may see the later write
      });
    else
      store_->get("big", "k" + std::to_string(i),
                  [&, count, i](auto r) { count(r.ok() && r.value == json::value(i)); });
  }
  // A write followed by a read of it: the read waits for the write, close() lets it run.
  store_->set("big", "late", J("7"), [&](auto r) { EXPECT_TRUE(r.ok()); });
  store_->get("big", "late",
              [&](auto r) { r.ok() && r.value == json::value(7) ? ++ok : ++failed; });
  store_->close();
  std::optional<std::string> after_close;
  store_->get("big", "k1", [&](auto r) { after_close = r.error.value_or("no error"); });
  store_->list("big", [&](auto r) { EXPECT_FALSE(r.ok()); });
  EXPECT_EQ(after_close, "store is closed");
  store_.reset();  // completions are still queued on the loop
  loop_.run_until([&] { return ok + failed == kReads + 1; });
  EXPECT_EQ(ok, kReads + 1);
  EXPECT_EQ(failed, 0);
}

}  // namespace
}  // namespace iii::storage
