// Durable adapter: SQLite in WAL mode. Mutations are executed by one writer thread that
// commits whatever has queued up in a single transaction ("group commit") and acknowledges
// each write only after its transaction committed. Reads run on a small pool of reader threads,
// each with its own read-only connection (a WAL reader sees one consistent snapshot per
// statement and never blocks the writer), and post their results back to the engine thread, so
// listing a large group never stalls other connections. One reader is always kept for point
// reads (get, list_indexes): lists use at most kReaders - 1 of them.
//
// Read-your-writes: a read issued on the engine thread after a write to the same key (get), the
// same index (list) or an index under the same prefix (list_indexes) waits, on the engine
// thread and without blocking anything, until that write is acknowledged, and then runs on a
// reader, which therefore sees it; its completion comes after the write's. A read issued before
// a write is concurrent with it and may see it or not. Nothing is cached in the process beyond
// SQLite's bounded page caches, so memory does not grow with the stored data.
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "protocol/codec.h"
#include "storage/kv_store.h"
#include "storage/sqlite_db.h"

namespace iii::storage {

namespace json = boost::json;
namespace {

constexpr size_t kMaxBatch = 4096;
constexpr int kReaders = 2;
// Page size of new stores, and the WAL size that triggers a checkpoint (32 MiB: 3.7 KiB written
// per 1 KiB item at 300k items against 3.9 KiB with 16 MiB): see open_wal in sqlite_db.cc and
// docs/performance.md, "Write amplification of the file_based store".
constexpr int kPageSize = 512;
constexpr int64_t kCheckpointKib = 32768;

using sqlite::Db;
using sqlite::Stmt;

std::string_view column_text(sqlite3_stmt* s, int col) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
  const int n = sqlite3_column_bytes(s, col);
  return std::string_view(p ? p : "", size_t(n));
}

// A stored value that does not parse (a damaged row) reads as null. The depth limit is the
// protocol's, so every value a worker could store reads back.
json::value column_json(sqlite3_stmt* s, int col, json::storage_ptr sp = {}) {
  boost::system::error_code ec;
  json::value v = json::parse(column_text(s, col), ec, sp, protocol::json_parse_options());
  if (ec) return json::value(nullptr, sp);
  return v;
}

// Checks that a text is one JSON value, with column_json's options, without building it.
class JsonValidator {
 public:
  JsonValidator() : p_(protocol::json_parse_options()) {}
  bool valid(std::string_view text) {
    p_.reset();
    boost::system::error_code ec;
    const std::size_t n = p_.write_some(false, text.data(), text.size(), ec);
    return !ec && n == text.size();  // like json::parse, refuse anything after the value
  }

 private:
  struct Handler {
    using ec_t = boost::system::error_code;
    using sv = json::string_view;
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);
    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_object_begin(ec_t&) { return true; }
    bool on_object_end(std::size_t, ec_t&) { return true; }
    bool on_array_begin(ec_t&) { return true; }
    bool on_array_end(std::size_t, ec_t&) { return true; }
    bool on_key_part(sv, std::size_t, ec_t&) { return true; }
    bool on_key(sv, std::size_t, ec_t&) { return true; }
    bool on_string_part(sv, std::size_t, ec_t&) { return true; }
    bool on_string(sv, std::size_t, ec_t&) { return true; }
    bool on_number_part(sv, ec_t&) { return true; }
    bool on_int64(std::int64_t, sv, ec_t&) { return true; }
    bool on_uint64(std::uint64_t, sv, ec_t&) { return true; }
    bool on_double(double, sv, ec_t&) { return true; }
    bool on_bool(bool, ec_t&) { return true; }
    bool on_null(ec_t&) { return true; }
    bool on_comment_part(sv, ec_t&) { return true; }
    bool on_comment(sv, ec_t&) { return true; }
  };
  json::basic_parser<Handler> p_;
};

// A read waiting to run on a reader thread.
struct ReadOp {
  enum Kind { kGet, kList, kListRaw, kIndexes } kind = kGet;
  std::string index, key;  // key: the item (get) or the prefix (list_indexes)
  KvStore::GetCallback on_get;
  KvStore::ListCallback on_list;
  KvStore::RawListCallback on_list_raw;
  KvStore::IndexesCallback on_indexes;

  bool scan() const { return kind == kList || kind == kListRaw; }
  void fail(const std::string& error) {
    switch (kind) {
      case kGet:
        return on_get({std::nullopt, error});
      case kList:
        return on_list({{}, error});
      case kListRaw:
        return on_list_raw({nullptr, error});
      case kIndexes:
        return on_indexes({{}, error});
    }
  }
};

// One reader thread's read-only connection and statements.
class ReaderConn {
 public:
  ReaderConn(const std::string& path, int64_t cache_kib) : db_(path, SQLITE_OPEN_READONLY) {
    db_.exec("PRAGMA cache_size=-" + std::to_string(std::max<int64_t>(cache_kib, 64)));
    get_ = db_.prepare("SELECT value FROM items WHERE idx=?1 AND key=?2");
    // The seqs of the group (from the covering (idx, key) index) are sorted in an ephemeral
    // list, and the rows fetched by rowid in that order: no sort of the values themselves.
    list_ = db_.prepare(
        "SELECT value FROM items WHERE seq IN (SELECT seq FROM items WHERE idx=?1) ORDER BY seq");
    indexes_ = db_.prepare(
        "SELECT idx FROM kv_indexes WHERE idx >= ?1 AND substr(idx, 1, length(?1)) = ?1 "
        "ORDER BY idx");
  }

  // Runs the read and returns its completion, to be run on the engine thread. Each statement
  // runs in its own implicit read transaction: one consistent WAL snapshot.
  std::function<void()> run(ReadOp& op) {
    switch (op.kind) {
      case ReadOp::kGet: {
        Stored<std::optional<json::value>> r;
        Stmt u(get_);
        u.text(1, op.index).text(2, op.key);
        const int rc = u.step();
        if (rc == SQLITE_ROW)
          r.value = column_json(get_, 0);
        else if (rc != SQLITE_DONE)
          r.error = db_.error();
        return [cb = std::move(op.on_get), r = std::move(r)]() mutable { cb(std::move(r)); };
      }
      case ReadOp::kList: {
        // The values of one list share one arena: the engine thread, which copies them into
        // its reply and then drops them, frees a few blocks instead of every string and
        // object of a large group (freeing memory allocated on another thread is slow).
        Stored<std::vector<json::value>> r;
        auto arena = json::make_shared_resource<json::monotonic_resource>();
        Stmt u(list_);
        u.text(1, op.index);
        int rc;
        while ((rc = sqlite3_step(list_)) == SQLITE_ROW)
          r.value.push_back(column_json(list_, 0, arena));
        if (rc != SQLITE_DONE) r = {{}, db_.error()};
        return [cb = std::move(op.on_list), r = std::move(r)]() mutable { cb(std::move(r)); };
      }
      case ReadOp::kListRaw: {
        // Values are stored as the compact JSON that serialising them gives (write_value), so
        // the reply is the stored texts joined, built here rather than on the engine thread.
        // Each text is checked (not parsed) so that a damaged row reads as null, as in list().
        Stored<KvStore::RawList> r;
        std::string out;
        out.reserve(raw_reserve_);  // the last list's size: no regrowth copies for a re-list
        out += '[';
        Stmt u(list_);
        u.text(1, op.index);
        int rc;
        bool first = true;
        while ((rc = sqlite3_step(list_)) == SQLITE_ROW) {
          if (!first) out += ',';
          first = false;
          const std::string_view text = column_text(list_, 0);
          if (validator_.valid(text))
            out += text;
          else
            out += "null";
        }
        out += ']';
        raw_reserve_ = std::min<size_t>(out.size() + out.size() / 8 + 64, size_t(64) << 20);
        if (out.capacity() > 2 * out.size() + 4096) out.shrink_to_fit();  // a small list
        if (rc != SQLITE_DONE)
          r.error = db_.error();
        else
          r.value = std::make_shared<const std::string>(std::move(out));
        return [cb = std::move(op.on_list_raw), r = std::move(r)]() mutable { cb(std::move(r)); };
      }
      case ReadOp::kIndexes: {
        Stored<std::vector<std::string>> r;
        Stmt u(indexes_);
        u.text(1, op.key);
        int rc;
        while ((rc = sqlite3_step(indexes_)) == SQLITE_ROW)
          r.value.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(indexes_, 0)));
        if (rc != SQLITE_DONE) r = {{}, db_.error()};
        return [cb = std::move(op.on_indexes), r = std::move(r)]() mutable { cb(std::move(r)); };
      }
    }
    return {};
  }

 private:
  Db db_;
  sqlite3_stmt *get_, *list_, *indexes_;
  JsonValidator validator_;
  size_t raw_reserve_ = 64;
};

// Reader queues (guarded by mu) and the engine thread's read-after-write bookkeeping. Shared
// with the completions the writer posts, so that an acknowledgement that runs after the store
// is gone touches nothing freed.
struct ReadState {
  // ---- reader threads and the engine thread, under mu
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ReadOp> points, scans;  // gets and list_indexes / lists
  int scanning = 0;                  // readers inside a list
  bool stopping = false;

  // ---- engine thread only
  struct Pending {
    uint64_t last = 0;                               // newest unacknowledged write to the index
    std::unordered_map<std::string, uint64_t> keys;  // newest unacknowledged write per key
  };
  uint64_t last_write = 0;                 // sequence number of the newest accepted write
  uint64_t acked = 0;                      // every write up to this one is acknowledged
  std::map<std::string, Pending> pending;  // indexes with unacknowledged writes
  std::multimap<uint64_t, ReadOp> parked;  // reads waiting for the acknowledgement of a write

  // Queues a read for the readers, or fails it once the store is closed.
  void dispatch(ReadOp op) {
    {
      std::lock_guard lock(mu);
      if (!stopping) {
        (op.scan() ? scans : points).push_back(std::move(op));
        cv.notify_all();
        return;
      }
    }
    op.fail("store is closed");
  }

  // The write a read must wait for (0: none): the newest unacknowledged write it could see.
  uint64_t must_follow(const ReadOp& op) const {
    if (op.kind == ReadOp::kIndexes) {
      uint64_t newest = 0;
      for (auto it = pending.lower_bound(op.key);
           it != pending.end() && it->first.compare(0, op.key.size(), op.key) == 0; ++it)
        newest = std::max(newest, it->second.last);
      return newest;
    }
    auto it = pending.find(op.index);
    if (it == pending.end()) return 0;
    if (op.scan()) return it->second.last;
    auto k = it->second.keys.find(op.key);
    return k == it->second.keys.end() ? 0 : k->second;
  }

  void read(ReadOp op) {
    const uint64_t after = must_follow(op);
    if (after && !closed())
      parked.emplace(after, std::move(op));
    else
      dispatch(std::move(op));  // fails it when closed
  }

  bool closed() {
    std::lock_guard lock(mu);
    return stopping;
  }

  uint64_t note_write(const std::string& index, const std::string& key) {
    Pending& p = pending[index];
    p.last = p.keys[key] = ++last_write;
    return last_write;
  }

  void note_acked(uint64_t seq, const std::string& index, const std::string& key) {
    acked = seq;
    auto it = pending.find(index);
    if (it == pending.end()) return;
    if (auto k = it->second.keys.find(key); k != it->second.keys.end() && k->second == seq)
      it->second.keys.erase(k);
    if (it->second.last == seq) pending.erase(it);
  }

  // Sends the parked reads whose writes are now acknowledged to the readers.
  void release_parked() {
    while (!parked.empty() && parked.begin()->first <= acked) {
      ReadOp op = std::move(parked.begin()->second);
      parked.erase(parked.begin());
      dispatch(std::move(op));
    }
  }
};

class SqliteStore : public KvStore {
 public:
  SqliteStore(const StoreOptions& opts, Poster post)
      : post_(std::move(post)), reads_(std::make_shared<ReadState>()) {
    path_ = sqlite::resolve_db_path(opts.file_path, "iii_kv.sqlite3");
    writer_db_ = std::make_unique<Db>(path_);
    sqlite::WalOptions wal;
    wal.fsync = opts.fsync;
    wal.cache_kib = opts.cache_mb * 1024 / 2;
    wal.page_size = kPageSize;
    wal.checkpoint_kib = kCheckpointKib;
    sqlite::open_wal(*writer_db_, wal);
    // Items are rows of a rowid table whose rowid is the item's seq (its position in its
    // index's list; an update keeps it), so new items are appended to the table's last page,
    // and (idx, key) -> seq is the one other B-tree. A set changes the table's last pages and
    // one leaf of that index; lists read the seqs of an index from it (covering) and fetch the
    // rows in seq order. Stores made by earlier builds (a `kv` table, rowid or WITHOUT ROWID,
    // with a second (idx, seq) index) are moved to this layout once, on open.
    writer_db_->exec(
        "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY, idx TEXT NOT NULL, key TEXT "
        "NOT NULL, value TEXT NOT NULL)");
    writer_db_->exec("CREATE UNIQUE INDEX IF NOT EXISTS items_key ON items (idx, key)");
    writer_db_->exec(
        "CREATE TABLE IF NOT EXISTS kv_indexes (idx TEXT PRIMARY KEY, items INTEGER NOT NULL) "
        "WITHOUT ROWID");
    if (writer_db_->query_int(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type='table' AND name='kv'") > 0) {
      spdlog::info("file_based store {}: moving the items to the current table layout", path_);
      writer_db_->exec("BEGIN IMMEDIATE");
      try {
        writer_db_->exec(
            "INSERT INTO items (seq, idx, key, value) SELECT seq, idx, key, value FROM kv ORDER "
            "BY seq");
        writer_db_->exec("DROP TABLE kv");
        writer_db_->exec("COMMIT");
      } catch (...) {
        writer_db_->exec("ROLLBACK");
        throw;
      }
    }
    w_get_ = writer_db_->prepare("SELECT value FROM items WHERE idx=?1 AND key=?2");
    w_insert_ =
        writer_db_->prepare("INSERT INTO items (seq, idx, key, value) VALUES (?3, ?1, ?2, ?4)");
    w_replace_ = writer_db_->prepare("UPDATE items SET value=?3 WHERE idx=?1 AND key=?2");
    w_delete_ = writer_db_->prepare("DELETE FROM items WHERE idx=?1 AND key=?2");
    w_count_ = writer_db_->prepare(
        "INSERT INTO kv_indexes (idx, items) VALUES (?1, ?2) ON CONFLICT(idx) DO UPDATE SET "
        "items = items + ?2");
    w_drop_empty_ = writer_db_->prepare("DELETE FROM kv_indexes WHERE idx=?1 AND items <= 0");
    w_max_seq_ = writer_db_->prepare("SELECT COALESCE(MAX(seq), 0) FROM items");
    // The readers share the other half of the page cache budget.
    std::vector<std::unique_ptr<ReaderConn>> conns;
    for (int i = 0; i < kReaders; ++i)
      conns.push_back(std::make_unique<ReaderConn>(path_, opts.cache_mb * 1024 / 2 / kReaders));
    spdlog::info("file_based store at {} (SQLite WAL, synchronous={}, page size {}, {} readers)",
                 path_, opts.fsync ? "FULL" : "NORMAL", writer_db_->query_int("PRAGMA page_size"),
                 kReaders);
    writer_ = std::thread([this] { run_writer(); });
    for (auto& c : conns)
      readers_.emplace_back(
          [this, conn = std::shared_ptr<ReaderConn>(std::move(c))] { run_reader(*conn); });
  }

  ~SqliteStore() override { close(); }

  // Called on the engine thread (or after it stopped). Writes drain first; then the reads that
  // waited for them are queued; then the readers drain their queues and stop.
  void close() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_one();
    if (writer_.joinable()) writer_.join();
    // Every write is committed now (its acknowledgement is posted), so the parked reads can run.
    auto& parked = reads_->parked;
    for (auto& [seq, op] : parked) reads_->dispatch(std::move(op));
    parked.clear();
    {
      std::lock_guard lock(reads_->mu);
      reads_->stopping = true;
    }
    reads_->cv.notify_all();
    for (auto& t : readers_)
      if (t.joinable()) t.join();
  }

  void get(const std::string& index, const std::string& key, GetCallback cb) override {
    ReadOp op{ReadOp::kGet, index, key};
    op.on_get = std::move(cb);
    reads_->read(std::move(op));
  }

  void list(const std::string& index, ListCallback cb) override {
    ReadOp op{ReadOp::kList, index, {}};
    op.on_list = std::move(cb);
    reads_->read(std::move(op));
  }

  void list_raw(const std::string& index, RawListCallback cb) override {
    ReadOp op{ReadOp::kListRaw, index, {}};
    op.on_list_raw = std::move(cb);
    reads_->read(std::move(op));
  }

  void list_indexes(const std::string& prefix, IndexesCallback cb) override {
    ReadOp op{ReadOp::kIndexes, {}, prefix};
    op.on_indexes = std::move(cb);
    reads_->read(std::move(op));
  }

  void set(const std::string& index, const std::string& key, json::value value,
           SetCallback cb) override {
    WriteOp op{WriteOp::kSet, index, key};
    op.value = std::move(value);
    op.on_set = std::move(cb);
    enqueue(std::move(op));
  }

  void del(const std::string& index, const std::string& key, DeleteCallback cb) override {
    WriteOp op{WriteOp::kDelete, index, key};
    op.on_delete = std::move(cb);
    enqueue(std::move(op));
  }

  void update(const std::string& index, const std::string& key, std::vector<UpdateOp> ops,
              UpdateCallback cb) override {
    WriteOp op{WriteOp::kUpdate, index, key};
    op.ops = std::move(ops);
    op.on_update = std::move(cb);
    enqueue(std::move(op));
  }

 private:
  struct WriteOp {
    enum Kind { kSet, kDelete, kUpdate } kind;
    std::string index, key;
    json::value value;
    std::vector<UpdateOp> ops;
    SetCallback on_set;
    DeleteCallback on_delete;
    UpdateCallback on_update;
    uint64_t seq = 0;  // ReadState's write sequence number
    // Outcome, filled by the writer thread.
    std::optional<json::value> old_value;
    UpdateResult update_result;
    std::optional<std::string> error;
  };

  void enqueue(WriteOp op) {
    {
      std::lock_guard lock(mu_);
      if (!stopping_) {
        op.seq = reads_->note_write(op.index, op.key);
        queue_.push_back(std::move(op));
        cv_.notify_one();
        return;
      }
    }
    op.error = "store is closed";
    complete(op);
  }

  static void complete(WriteOp& op) {
    switch (op.kind) {
      case WriteOp::kSet:
        if (op.on_set)
          op.on_set({SetResult{std::move(op.old_value), std::move(op.value)}, op.error});
        break;
      case WriteOp::kDelete:
        if (op.on_delete) op.on_delete({std::move(op.old_value), op.error});
        break;
      case WriteOp::kUpdate:
        if (op.on_update) op.on_update({std::move(op.update_result), op.error});
        break;
    }
  }

  void run_writer() {
    for (;;) {
      std::deque<WriteOp> batch;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty() && stopping_) return;
        while (!queue_.empty() && batch.size() < kMaxBatch) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      commit(batch);
      // Batches are posted in commit order, so `acked` only grows. Each write is marked
      // acknowledged before its callback runs: a read issued from the callback need not wait.
      auto done = std::make_shared<std::deque<WriteOp>>(std::move(batch));
      post_([reads = reads_, done] {
        for (auto& op : *done) {
          reads->note_acked(op.seq, op.index, op.key);
          complete(op);
        }
        reads->release_parked();
      });
    }
  }

  void run_reader(ReaderConn& conn) {
    ReadState& rs = *reads_;
    for (;;) {
      ReadOp op;
      {
        std::unique_lock lock(rs.mu);
        auto can_scan = [&] { return !rs.scans.empty() && rs.scanning < kReaders - 1; };
        rs.cv.wait(lock, [&] {
          return !rs.points.empty() || can_scan() || (rs.stopping && rs.scans.empty());
        });
        if (!rs.points.empty()) {
          op = std::move(rs.points.front());
          rs.points.pop_front();
        } else if (can_scan()) {
          op = std::move(rs.scans.front());
          rs.scans.pop_front();
          ++rs.scanning;
        } else {
          return;  // stopping, and every queued read is taken
        }
      }
      // A list counts as running until its result is handed to the engine thread.
      post_(conn.run(op));
      if (op.scan()) {
        std::lock_guard lock(rs.mu);
        --rs.scanning;
        rs.cv.notify_all();
      }
    }
  }

  // One transaction for the whole batch; on failure every op in it reports the error.
  void commit(std::deque<WriteOp>& batch) {
    std::string failure;
    try {
      writer_db_->exec("BEGIN IMMEDIATE");
      // Another engine may share the file: the next position is read under the write lock
      // (MAX of the rowid is one seek), never from what this connection saw before.
      {
        Stmt u(w_max_seq_);
        if (sqlite3_step(w_max_seq_) == SQLITE_ROW)
          seq_ = std::max<int64_t>(seq_, sqlite3_column_int64(w_max_seq_, 0));
      }
      for (auto& op : batch) apply(op);
      writer_db_->exec("COMMIT");
    } catch (const std::exception& e) {
      failure = e.what();
      try {
        writer_db_->exec("ROLLBACK");
      } catch (...) {
      }
    }
    if (!failure.empty()) {
      spdlog::error("file_based store {}: write failed: {}", path_, failure);
      for (auto& op : batch) op.error = failure;
    }
  }

  void step_done(sqlite3_stmt* s) {
    if (sqlite3_step(s) != SQLITE_DONE) throw std::runtime_error(writer_db_->error());
  }

  std::optional<json::value> read_current(const WriteOp& op) {
    Stmt u(w_get_);
    u.text(1, op.index);
    u.text(2, op.key);
    const int rc = sqlite3_step(w_get_);
    if (rc == SQLITE_ROW) return column_json(w_get_, 0);
    if (rc != SQLITE_DONE) throw std::runtime_error(writer_db_->error());
    return std::nullopt;
  }

  void write_value(const WriteOp& op, bool exists, const json::value& v) {
    const std::string text = json::serialize(v);
    if (exists) {
      Stmt u(w_replace_);
      u.text(1, op.index);
      u.text(2, op.key);
      u.text(3, text);
      step_done(w_replace_);
      return;
    }
    {
      Stmt u(w_insert_);
      u.text(1, op.index);
      u.text(2, op.key);
      sqlite3_bind_int64(w_insert_, 3, ++seq_);
      u.text(4, text);
      step_done(w_insert_);
    }
    adjust_count(op.index, 1);
  }

  void adjust_count(const std::string& index, int delta) {
    {
      Stmt u(w_count_);
      u.text(1, index);
      sqlite3_bind_int(w_count_, 2, delta);
      step_done(w_count_);
    }
    if (delta < 0) {
      Stmt u(w_drop_empty_);
      u.text(1, index);
      step_done(w_drop_empty_);
    }
  }

  void apply(WriteOp& op) {
    op.old_value = read_current(op);
    switch (op.kind) {
      case WriteOp::kSet:
        write_value(op, op.old_value.has_value(), op.value);
        break;
      case WriteOp::kDelete:
        if (op.old_value) {
          Stmt u(w_delete_);
          u.text(1, op.index);
          u.text(2, op.key);
          step_done(w_delete_);
          adjust_count(op.index, -1);
        }
        break;
      case WriteOp::kUpdate: {
        const bool exists = op.old_value.has_value();
        op.update_result = apply_update_ops(std::move(op.old_value), op.ops);
        write_value(op, exists, op.update_result.new_value);
        break;
      }
    }
  }

  Poster post_;
  std::string path_;
  std::unique_ptr<Db> writer_db_;
  sqlite3_stmt *w_get_, *w_insert_, *w_replace_, *w_delete_, *w_count_, *w_drop_empty_, *w_max_seq_;
  int64_t seq_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WriteOp> queue_;
  bool stopping_ = false;
  std::thread writer_;
  std::shared_ptr<ReadState> reads_;
  std::vector<std::thread> readers_;
};

}  // namespace

std::unique_ptr<KvStore> make_sqlite_store(const StoreOptions& opts, Poster post) {
  return std::make_unique<SqliteStore>(opts, std::move(post));
}

}  // namespace iii::storage
