// Write amplification of SQLite table layouts under the file_based store's write pattern, with
// no engine: what each layout, page size and checkpoint interval costs per stored item.
//
//   sqlite_layout_bench [--layout kv|items|data|index] [--page-size 4096] [--checkpoint-pages 1000]
//                       [--batch 64] [--items 300000] [--value-bytes 1024] [--scopes 100]
//                       [--synchronous FULL] [--dir /tmp/iii-sqlite-layout]
//
// Inserts --items values of --value-bytes bytes as the store's writer thread does: one
// transaction per --batch items (the group commit of --batch calls in flight), each item a
// read of the current value, an insert, and the per-index count; item i goes to index
// `state:rss-<i % scopes>`, key `k<i>`. Layouts:
//   kv     the layout before issue 18: rowid table, PRIMARY KEY (idx, key) and an (idx, seq) index
//   items  the current one: rowid = seq, one unique (idx, key) index
//   data   `items` without the index (what the rows alone cost)
//   index  only the (idx, key) -> seq entries, WITHOUT ROWID (what the index alone costs)
// Reports bytes written per item (/proc/self/io write_bytes: WAL appends and checkpoints),
// WAL frames per commit (sqlite3_wal_hook, which then also runs the checkpoints at
// --checkpoint-pages like wal_autocheckpoint), the files' size against the data, items/s.
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "bench_util.h"

namespace {

constexpr const char* kUsage =
    "usage: sqlite_layout_bench [--layout kv|items|data|index] [--page-size B]\n"
    "         [--checkpoint-pages N] [--batch N] [--items N] [--value-bytes B] [--scopes S]\n"
    "         [--synchronous FULL|NORMAL] [--dir DIR]\n";

void exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK)
    throw std::runtime_error(sql + ": " + (err ? err : "?"));
}

sqlite3_stmt* prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string(sql) + ": " + sqlite3_errmsg(db));
  return s;
}

struct WalStats {
  int64_t checkpoint_pages = 1000;
  int64_t frames = 0, commits = 0, last = 0;
};

int wal_hook(void* arg, sqlite3* db, const char* name, int n) {
  auto* w = static_cast<WalStats*>(arg);
  if (n < w->last) w->last = 0;  // the WAL restarted after a checkpoint
  w->frames += n - w->last;
  w->last = n;
  ++w->commits;
  if (n >= w->checkpoint_pages)
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  return SQLITE_OK;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv,
                     {"--layout", "--page-size", "--checkpoint-pages", "--batch", "--items",
                      "--value-bytes", "--scopes", "--synchronous", "--dir"},
                     kUsage);
  const std::string layout = flags.str("--layout", "items");
  const int64_t page_size = flags.integer("--page-size", 4096);
  WalStats wal;
  wal.checkpoint_pages = flags.integer("--checkpoint-pages", 1000);
  const int64_t batch = flags.integer("--batch", 64);
  const int64_t items = flags.integer("--items", 300000);
  const int64_t value_bytes = flags.integer("--value-bytes", 1024);
  const int64_t scopes = flags.integer("--scopes", 100);
  const std::string sync = flags.str("--synchronous", "FULL");
  const std::string dir = flags.str("--dir", "/tmp/iii-sqlite-layout");
  if (batch < 1 || items < 1 || scopes < 1 || value_bytes < 8) flags.fail("invalid sizes");

  namespace fs = std::filesystem;
  fs::remove_all(dir);
  fs::create_directories(dir);
  sqlite3* db = nullptr;
  if (sqlite3_open((dir + "/layout.db").c_str(), &db) != SQLITE_OK) return 1;
  try {
    exec(db, "PRAGMA page_size=" + std::to_string(page_size));
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=" + sync);
    exec(db, "PRAGMA cache_size=-8192");
    const char* ins_sql = "INSERT INTO kv (idx, key, seq, value) VALUES (?1, ?2, ?3, ?4)";
    const char* get_sql = "SELECT value FROM kv WHERE idx=?1 AND key=?2";
    if (layout == "kv") {
      exec(db,
           "CREATE TABLE kv (idx TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, value "
           "TEXT NOT NULL, PRIMARY KEY (idx, key))");
      exec(db, "CREATE INDEX kv_order ON kv (idx, seq)");
    } else if (layout == "items" || layout == "data") {
      exec(db,
           "CREATE TABLE kv (seq INTEGER PRIMARY KEY, idx TEXT NOT NULL, key TEXT NOT NULL, "
           "value TEXT NOT NULL)");
      if (layout == "items") exec(db, "CREATE UNIQUE INDEX kv_key ON kv (idx, key)");
      if (layout == "data") get_sql = "SELECT value FROM kv WHERE seq=-1";
    } else if (layout == "index") {
      exec(db,
           "CREATE TABLE kv (idx TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, "
           "PRIMARY KEY (idx, key)) WITHOUT ROWID");
      ins_sql = "INSERT INTO kv (idx, key, seq) VALUES (?1, ?2, ?3)";
      get_sql = "SELECT seq FROM kv WHERE idx=?1 AND key=?2";
    } else {
      flags.fail("unknown --layout " + layout);
    }
    exec(db,
         "CREATE TABLE kv_indexes (idx TEXT PRIMARY KEY, items INTEGER NOT NULL) WITHOUT ROWID");
    sqlite3_stmt* ins = prepare(db, ins_sql);
    sqlite3_stmt* get = prepare(db, get_sql);
    sqlite3_stmt* cnt = prepare(db,
                                "INSERT INTO kv_indexes (idx, items) VALUES (?1, 1) ON "
                                "CONFLICT(idx) DO UPDATE SET items = items + 1");
    sqlite3_wal_hook(db, wal_hook, &wal);
    const std::string value = "{\"v\":\"" + std::string(size_t(value_bytes - 8), 'x') + "\"}";
    const int64_t wb0 = bench::proc_io(getpid(), "write_bytes");
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < items;) {
      exec(db, "BEGIN IMMEDIATE");
      for (int64_t b = 0; b < batch && i < items; ++b, ++i) {
        const std::string idx = "state:rss-" + std::to_string(i % scopes);
        const std::string key = "k" + std::to_string(i);
        sqlite3_bind_text(get, 1, idx.data(), int(idx.size()), SQLITE_STATIC);
        sqlite3_bind_text(get, 2, key.data(), int(key.size()), SQLITE_STATIC);
        sqlite3_step(get);
        sqlite3_reset(get);
        sqlite3_bind_text(ins, 1, idx.data(), int(idx.size()), SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, key.data(), int(key.size()), SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, i + 1);
        if (layout != "index")
          sqlite3_bind_text(ins, 4, value.data(), int(value.size()), SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db));
        sqlite3_reset(ins);
        sqlite3_bind_text(cnt, 1, idx.data(), int(idx.size()), SQLITE_STATIC);
        sqlite3_step(cnt);
        sqlite3_reset(cnt);
      }
      exec(db, "COMMIT");
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t written = bench::proc_io(getpid(), "write_bytes") - wb0;
    int64_t files = 0;
    for (const auto& e : fs::directory_iterator(dir)) files += int64_t(fs::file_size(e.path()));
    const double frames_per_commit = double(wal.frames) / double(std::max<int64_t>(wal.commits, 1));
    const double wal_per_item = double(wal.frames) * double(page_size + 24) / double(items);
    std::printf(
        "%s page=%lld checkpoint=%lld pages batch=%lld items=%lld value=%lldB sync=%s: %.2f KiB "
        "written per item (WAL %.2f KiB), %.1f WAL frames per commit, files %.1f MiB = %.2fx "
        "the data, %.0f items/s\n",
        layout.c_str(), (long long)page_size, (long long)wal.checkpoint_pages, (long long)batch,
        (long long)items, (long long)value_bytes, sync.c_str(), written / 1024.0 / double(items),
        wal_per_item / 1024.0, frames_per_commit, files / 1048576.0,
        double(files) / double(items * value_bytes), double(items) / el);
    std::printf(
        "{\"bench\":\"sqlite_layout\",\"layout\":\"%s\",\"page_size\":%lld,\"checkpoint_pages\":"
        "%lld,\"batch\":%lld,\"items\":%lld,\"value_bytes\":%lld,\"synchronous\":\"%s\","
        "\"write_bytes_per_item\":%.1f,\"wal_bytes_per_item\":%.1f,\"frames_per_commit\":%.1f,"
        "\"file_bytes\":%lld,\"items_per_s\":%.1f}\n",
        layout.c_str(), (long long)page_size, (long long)wal.checkpoint_pages, (long long)batch,
        (long long)items, (long long)value_bytes, sync.c_str(), double(written) / double(items),
        wal_per_item, frames_per_commit, (long long)files, double(items) / el);
    sqlite3_finalize(ins);
    sqlite3_finalize(get);
    sqlite3_finalize(cnt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    sqlite3_close(db);
    return 1;
  }
  sqlite3_close(db);
  fs::remove_all(dir);
  return 0;
}
