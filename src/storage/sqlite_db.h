// The small SQLite layer shared by the durable stores (the file_based iii-state / iii-stream
// store in sqlite_store.cc and iii-queue's message store): opening a database in WAL mode with
// the settings that keep write amplification low, a connection that owns its prepared
// statements, and a statement scope that binds, steps and resets.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iii::storage::sqlite {

// `configured` is a directory (created if missing; the database is `default_name` in it) or a
// file ending in .db / .sqlite / .sqlite3 (its parent directory is created). Empty means
// "kv_store_data.db", a directory.
std::string resolve_db_path(const std::string& configured, const std::string& default_name);

// One connection. Throws std::runtime_error with a clear message when it cannot be opened.
class Db {
 public:
  explicit Db(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const std::string& sql);
  // A statement finalised with the connection.
  sqlite3_stmt* prepare(const std::string& sql);
  int64_t query_int(const std::string& sql);  // first column of the first row, 0 when none
  std::string error() const { return sqlite3_errmsg(db_); }
  sqlite3* get() { return db_; }

 private:
  sqlite3* db_ = nullptr;
  std::vector<sqlite3_stmt*> stmts_;
};

// How a writer connection opens its database (see open_wal in sqlite_db.cc for why).
struct WalOptions {
  bool fsync = true;         // synchronous=FULL (survive power loss) or NORMAL (process crash)
  int64_t cache_kib = 8192;  // page cache of this connection
  int page_size = 0;         // for a new database only (0: SQLite's default, 4096)
  int64_t checkpoint_kib = 16384;  // WAL size that triggers a checkpoint; also its size limit
};

// Sets page size (new databases), WAL mode, synchronous, cache and checkpoint interval.
void open_wal(Db& db, const WalOptions& opts);

// A prepared statement for one use: binds, steps, and resets itself when the scope ends.
class Stmt {
 public:
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // The text must outlive the statement's use (bound without a copy).
  Stmt& text(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), int(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& opt(int i, const std::optional<std::string>& v) {
    if (v) return text(i, *v);
    sqlite3_bind_null(s_, i);
    return *this;
  }
  Stmt& i64(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& null(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  // Steps once: true on a row, false when done; throws on an error.
  bool row();
  // Steps once and returns SQLite's code (SQLITE_ROW, SQLITE_DONE or an error) without throwing.
  int step() { return sqlite3_step(s_); }
  void run() { row(); }

  std::string_view view(int c) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return std::string_view(p ? p : "", size_t(sqlite3_column_bytes(s_, c)));
  }
  std::string str(int c) const { return std::string(view(c)); }
  std::optional<std::string> ostr(int c) const {
    if (sqlite3_column_type(s_, c) == SQLITE_NULL) return std::nullopt;
    return str(c);
  }
  int64_t num(int c) const { return sqlite3_column_int64(s_, c); }
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

}  // namespace iii::storage::sqlite
