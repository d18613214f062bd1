#include "storage/sqlite_db.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace iii::storage::sqlite {

namespace fs = std::filesystem;

std::string resolve_db_path(const std::string& configured, const std::string& default_name) {
  fs::path p = configured.empty() ? fs::path("kv_store_data.db") : fs::path(configured);
  const auto ext = p.extension().string();
  const bool looks_like_file = ext == ".db" || ext == ".sqlite" || ext == ".sqlite3";
  if (fs::is_directory(p) || (!looks_like_file && !fs::exists(p))) {
    fs::create_directories(p);
    return (p / default_name).string();
  }
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  return p.string();
}

Db::Db(const std::string& path, int flags) {
  if (sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw std::runtime_error("cannot open database '" + path + "': " + msg);
  }
  sqlite3_busy_timeout(db_, 10000);
}

Db::~Db() {
  for (auto* s : stmts_) sqlite3_finalize(s);
  sqlite3_close(db_);
}

void Db::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error(msg + " (in: " + sql + ")");
  }
}

sqlite3_stmt* Db::prepare(const std::string& sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql.c_str(), int(sql.size()), SQLITE_PREPARE_PERSISTENT, &s,
                         nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string("prepare failed: ") + sqlite3_errmsg(db_) +
                             " (in: " + sql + ")");
  stmts_.push_back(s);
  return s;
}

int64_t Db::query_int(const std::string& sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), int(sql.size()), &s, nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string("prepare failed: ") + sqlite3_errmsg(db_) +
                             " (in: " + sql + ")");
  const int rc = sqlite3_step(s);
  const int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    throw std::runtime_error(std::string(sqlite3_errmsg(db_)) + " (in: " + sql + ")");
  return v;
}

bool Stmt::row() {
  const int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(sqlite3_db_handle(s_)));
  return false;
}

// Why these settings (docs/performance.md, "Write amplification of the file_based store"):
// in WAL mode every commit appends each page it changed to the WAL, and a checkpoint copies
// every page changed since the previous one into the database file. With commits of a few
// dozen random-key writes (group commit at the clients' concurrency), nearly every write
// changes its own index leaf page, so the page size is the price of one index update: a
// smaller page writes less. A longer checkpoint interval copies a page changed by many
// commits once. The WAL is truncated back to that size after a checkpoint
// (journal_size_limit), so the file does not keep its peak size.
void open_wal(Db& db, const WalOptions& opts) {
  // page_size takes effect only before the database's first table is created.
  if (opts.page_size > 0) db.exec("PRAGMA page_size=" + std::to_string(opts.page_size));
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(std::string("PRAGMA synchronous=") + (opts.fsync ? "FULL" : "NORMAL"));
  db.exec("PRAGMA cache_size=-" + std::to_string(std::max<int64_t>(opts.cache_kib, 64)));
  const int64_t page = std::max<int64_t>(db.query_int("PRAGMA page_size"), 512);
  const int64_t pages = std::max<int64_t>(opts.checkpoint_kib * 1024 / page, 100);
  db.exec("PRAGMA wal_autocheckpoint=" + std::to_string(pages));
  db.exec("PRAGMA journal_size_limit=" + std::to_string(opts.checkpoint_kib * 1024));
}

}  // namespace iii::storage::sqlite
