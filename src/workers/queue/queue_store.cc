#include "workers/queue/queue_store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "storage/sqlite_db.h"

namespace iii::workers::queue {
namespace {

constexpr size_t kMaxBatch = 4096;
// How long a lazy operation (an acknowledgement's delete) may wait for an eager one to share
// its commit.
constexpr auto kLazyDelay = std::chrono::milliseconds(10);

// ---------------------------------------------------------------- in memory

class MemoryBackend : public QueueBackend {
 public:
  void insert(const QueueMessage& m) override { ready_[m.queue][m.seq] = m; }

  void remove(int64_t seq) override {
    if (auto* m = find_ready(seq)) erase_ready(m->queue, seq);
  }

  void retry(int64_t seq, int64_t attempts, int64_t available_at_ms) override {
    if (auto* m = find_ready(seq)) {
      m->attempts = attempts;
      m->available_at_ms = available_at_ms;
    }
  }

  void dead_letter(int64_t seq, int64_t attempts, const std::string& error,
                   int64_t failed_at_ms) override {
    auto* m = find_ready(seq);
    if (!m) return;
    DeadLetter d{std::move(*m), error, failed_at_ms};
    d.msg.attempts = attempts;
    const std::string queue = d.msg.queue;
    erase_ready(queue, seq);
    dead_[queue][seq] = std::move(d);
  }

  std::vector<QueueMessage> load(const std::string& queue, int64_t after_seq,
                                 size_t limit) override {
    std::vector<QueueMessage> out;
    auto q = ready_.find(queue);
    if (q == ready_.end()) return out;
    for (auto it = q->second.upper_bound(after_seq); it != q->second.end() && out.size() < limit;
         ++it)
      out.push_back(it->second);
    return out;
  }

  std::vector<QueueMessage> load_group(const std::string& queue, const std::string& group,
                                       int64_t from_seq, int64_t max_seq, size_t limit) override {
    std::vector<QueueMessage> out;
    auto q = ready_.find(queue);
    if (q == ready_.end()) return out;
    for (auto it = q->second.lower_bound(from_seq);
         it != q->second.end() && it->first <= max_seq && out.size() < limit; ++it)
      if (it->second.group == group) out.push_back(it->second);
    return out;
  }

  std::vector<QueueMessage> due_retries(const std::string& queue, int64_t max_seq, int64_t now,
                                        size_t limit, int64_t& next_due) override {
    std::vector<QueueMessage> out;
    next_due = 0;
    auto q = ready_.find(queue);
    if (q == ready_.end()) return out;
    for (auto& [seq, m] : q->second) {
      if (seq > max_seq || m.available_at_ms <= 0) continue;
      if (m.available_at_ms <= now)
        out.push_back(m);
      else if (next_due == 0 || m.available_at_ms < next_due)
        next_due = m.available_at_ms;
    }
    std::stable_sort(out.begin(), out.end(), [](const QueueMessage& a, const QueueMessage& b) {
      return a.available_at_ms < b.available_at_ms;
    });
    if (out.size() > limit) out.resize(limit);
    return out;
  }

  QueueCounts counts(const QueueSelector& sel) override {
    QueueCounts c;
    for (auto& [q, msgs] : ready_)
      if (sel.matches(q)) c.ready += int64_t(msgs.size());
    for (auto& [q, msgs] : dead_)
      if (sel.matches(q)) c.dead += int64_t(msgs.size());
    return c;
  }

  std::map<std::string, int64_t> dead_counts() override {
    std::map<std::string, int64_t> out;
    for (auto& [q, msgs] : dead_)
      if (!msgs.empty()) out[q] = int64_t(msgs.size());
    return out;
  }

  std::vector<DeadLetter> dead_letters(const QueueSelector& sel, int64_t offset,
                                       int64_t limit) override {
    std::vector<DeadLetter> out;
    for (auto& [q, msgs] : dead_) {
      if (!sel.matches(q)) continue;
      for (auto& [seq, d] : msgs) {
        if (offset > 0) {
          --offset;
          continue;
        }
        if (int64_t(out.size()) >= limit) return out;
        out.push_back(d);
      }
    }
    return out;
  }

  int64_t redrive(const QueueSelector& sel, const std::optional<std::string>& id,
                  const std::function<int64_t()>& next_seq,
                  std::vector<std::string>& queues) override {
    int64_t n = 0;
    for (auto& [q, msgs] : dead_) {
      if (!sel.matches(q)) continue;
      bool touched = false;
      for (auto it = msgs.begin(); it != msgs.end();) {
        if (id && it->second.msg.id != *id) {
          ++it;
          continue;
        }
        QueueMessage m = std::move(it->second.msg);
        it = msgs.erase(it);
        m.seq = next_seq();
        m.attempts = 0;
        m.available_at_ms = 0;
        ready_[q][m.seq] = std::move(m);
        ++n;
        touched = true;
      }
      if (touched) queues.push_back(q);
    }
    return n;
  }

  int64_t discard(const QueueSelector& sel, const std::string& id) override {
    for (auto& [q, msgs] : dead_) {
      if (!sel.matches(q)) continue;
      for (auto it = msgs.begin(); it != msgs.end(); ++it)
        if (it->second.msg.id == id) {
          msgs.erase(it);
          return 1;
        }
    }
    return 0;
  }

  int64_t max_seq() override { return 0; }

 private:
  QueueMessage* find_ready(int64_t seq) {
    // Operations name a message by seq alone; the queue index is the first place to look.
    auto q = by_seq_queue(seq);
    if (!q) return nullptr;
    auto it = ready_[*q].find(seq);
    return it == ready_[*q].end() ? nullptr : &it->second;
  }
  std::optional<std::string> by_seq_queue(int64_t seq) {
    for (auto& [q, msgs] : ready_)
      if (msgs.count(seq)) return q;
    return std::nullopt;
  }
  void erase_ready(const std::string& queue, int64_t seq) {
    auto q = ready_.find(queue);
    if (q == ready_.end()) return;
    q->second.erase(seq);
    if (q->second.empty()) ready_.erase(q);
  }

  std::map<std::string, std::map<int64_t, QueueMessage>> ready_;
  std::map<std::string, std::map<int64_t, DeadLetter>> dead_;
};

// ---------------------------------------------------------------- SQLite

using storage::sqlite::Db;
using storage::sqlite::Stmt;

constexpr const char* kColumns =
    "seq, id, queue, function_id, message_id, grp, attempts, available_at, created_at, "
    "traceparent, baggage, data";

QueueMessage read_message(const Stmt& st, int base = 0) {
  QueueMessage m;
  m.seq = st.num(base + 0);
  m.id = st.str(base + 1);
  m.queue = st.str(base + 2);
  m.function_id = st.str(base + 3);
  m.message_id = st.str(base + 4);
  m.group = st.ostr(base + 5);
  m.attempts = st.num(base + 6);
  m.available_at_ms = st.num(base + 7);
  m.created_at_ms = st.num(base + 8);
  m.traceparent = st.ostr(base + 9);
  m.baggage = st.ostr(base + 10);
  m.data = st.str(base + 11);
  return m;
}

// The selector as SQL: queue = ?1 OR (?2 IS NOT NULL AND queue >= ?2 AND queue < ?3).
constexpr const char* kSel = "(queue = ?1 OR (?2 IS NOT NULL AND queue >= ?2 AND queue < ?3))";

class SqliteBackend : public QueueBackend {
 public:
  SqliteBackend(const std::string& path, bool fsync) : db_(path) {
    storage::sqlite::WalOptions wal;
    wal.fsync = fsync;
    wal.cache_kib = 8192;
    storage::sqlite::open_wal(db_, wal);
    // seq is the rowid: a message is one row in the table's leaf pages plus one entry in the
    // (queue, state, seq) index that the consumers page through.
    exec(
        "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, queue "
        "TEXT NOT NULL, state INTEGER NOT NULL, function_id TEXT NOT NULL, message_id TEXT NOT "
        "NULL, grp TEXT, attempts INTEGER NOT NULL, available_at INTEGER NOT NULL, created_at "
        "INTEGER NOT NULL, traceparent TEXT, baggage TEXT, error TEXT, failed_at INTEGER, data "
        "TEXT NOT NULL)");
    exec("CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, state, seq)");
    // FIFO messages only (grp is NULL for the others).
    exec(
        "CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, grp, seq) WHERE grp IS "
        "NOT NULL");
    // Only messages waiting for a retry are in this one, so a first insert does not touch it.
    exec(
        "CREATE INDEX IF NOT EXISTS messages_retries ON messages (queue, available_at) WHERE "
        "state = 0 AND available_at > 0");
    insert_ = prepare(
        "INSERT INTO messages (seq, id, queue, state, function_id, message_id, grp, attempts, "
        "available_at, created_at, traceparent, baggage, data) VALUES "
        "(?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    remove_ = prepare("DELETE FROM messages WHERE seq = ?1 AND state = 0");
    retry_ = prepare(
        "UPDATE messages SET attempts = ?2, available_at = ?3 WHERE seq = ?1 AND state = 0");
    dead_ = prepare(
        "UPDATE messages SET state = 1, attempts = ?2, error = ?3, failed_at = ?4 WHERE seq = ?1 "
        "AND state = 0");
    load_ = prepare((std::string("SELECT ") + kColumns +
                     " FROM messages WHERE queue = ?1 AND state = 0 AND seq > ?2 ORDER BY seq "
                     "LIMIT ?3")
                        .c_str());
    due_ = prepare((std::string("SELECT ") + kColumns +
                    " FROM messages WHERE queue = ?1 AND state = 0 AND available_at > 0 AND "
                    "available_at <= ?2 AND seq <= ?3 ORDER BY available_at LIMIT ?4")
                       .c_str());
    group_ = prepare((std::string("SELECT ") + kColumns +
                      " FROM messages WHERE queue = ?1 AND grp = ?2 AND state = 0 AND seq >= ?3 "
                      "AND seq <= ?4 ORDER BY seq LIMIT ?5")
                         .c_str());
    next_due_ = prepare(
        "SELECT COALESCE(MIN(available_at), 0) FROM messages WHERE queue = ?1 AND state = 0 AND "
        "available_at > 0 AND available_at > ?2 AND seq <= ?3");
    counts_ = prepare(
        (std::string("SELECT state, COUNT(*) FROM messages WHERE ") + kSel + " GROUP BY state")
            .c_str());
    dead_counts_ = prepare("SELECT queue, COUNT(*) FROM messages WHERE state = 1 GROUP BY queue");
    dead_list_ = prepare((std::string("SELECT ") + kColumns +
                          ", error, failed_at FROM messages WHERE state = 1 AND " + kSel +
                          " ORDER BY queue, seq LIMIT ?5 OFFSET ?4")
                             .c_str());
    dead_ids_ = prepare((std::string("SELECT seq, queue FROM messages WHERE state = 1 AND ") +
                         kSel + " AND (?4 IS NULL OR id = ?4) ORDER BY queue, seq")
                            .c_str());
    redrive_ = prepare(
        "UPDATE messages SET seq = ?2, state = 0, attempts = 0, available_at = 0, error = NULL, "
        "failed_at = NULL WHERE seq = ?1");
    discard_ = prepare("DELETE FROM messages WHERE seq = ?1");
    max_seq_ = prepare("SELECT COALESCE(MAX(seq), 0) FROM messages");
  }
  void exec(const std::string& sql) { db_.exec(sql); }

  void insert(const QueueMessage& m) override {
    Stmt st(insert_);
    st.i64(1, m.seq).text(2, m.id).text(3, m.queue).text(4, m.function_id).text(5, m.message_id);
    st.opt(6, m.group).i64(7, m.attempts).i64(8, m.available_at_ms).i64(9, m.created_at_ms);
    st.opt(10, m.traceparent).opt(11, m.baggage).text(12, m.data).run();
  }
  void remove(int64_t seq) override { Stmt(remove_).i64(1, seq).run(); }
  void retry(int64_t seq, int64_t attempts, int64_t available_at_ms) override {
    Stmt(retry_).i64(1, seq).i64(2, attempts).i64(3, available_at_ms).run();
  }
  void dead_letter(int64_t seq, int64_t attempts, const std::string& error,
                   int64_t failed_at_ms) override {
    Stmt(dead_).i64(1, seq).i64(2, attempts).text(3, error).i64(4, failed_at_ms).run();
  }
  std::vector<QueueMessage> load(const std::string& queue, int64_t after_seq,
                                 size_t limit) override {
    std::vector<QueueMessage> out;
    Stmt st(load_);
    st.text(1, queue).i64(2, after_seq).i64(3, int64_t(limit));
    while (st.row()) out.push_back(read_message(st));
    return out;
  }
  std::vector<QueueMessage> load_group(const std::string& queue, const std::string& group,
                                       int64_t from_seq, int64_t max_seq, size_t limit) override {
    std::vector<QueueMessage> out;
    Stmt st(group_);
    st.text(1, queue).text(2, group).i64(3, from_seq).i64(4, max_seq).i64(5, int64_t(limit));
    while (st.row()) out.push_back(read_message(st));
    return out;
  }
  std::vector<QueueMessage> due_retries(const std::string& queue, int64_t max_seq, int64_t now,
                                        size_t limit, int64_t& next_due) override {
    std::vector<QueueMessage> out;
    {
      Stmt st(due_);
      st.text(1, queue).i64(2, now).i64(3, max_seq).i64(4, int64_t(limit));
      while (st.row()) out.push_back(read_message(st));
    }
    Stmt st(next_due_);
    st.text(1, queue).i64(2, now).i64(3, max_seq);
    next_due = st.row() ? st.num(0) : 0;
    return out;
  }
  QueueCounts counts(const QueueSelector& sel) override {
    QueueCounts c;
    Stmt st(counts_);
    bind_sel(st, sel);
    while (st.row()) (st.num(0) == 0 ? c.ready : c.dead) = st.num(1);
    return c;
  }
  std::map<std::string, int64_t> dead_counts() override {
    std::map<std::string, int64_t> out;
    Stmt st(dead_counts_);
    while (st.row()) out[st.str(0)] = st.num(1);
    return out;
  }
  std::vector<DeadLetter> dead_letters(const QueueSelector& sel, int64_t offset,
                                       int64_t limit) override {
    std::vector<DeadLetter> out;
    Stmt st(dead_list_);
    bind_sel(st, sel);
    st.i64(4, offset).i64(5, limit);
    while (st.row()) out.push_back(DeadLetter{read_message(st), st.str(12), st.num(13)});
    return out;
  }
  int64_t redrive(const QueueSelector& sel, const std::optional<std::string>& id,
                  const std::function<int64_t()>& next_seq,
                  std::vector<std::string>& queues) override {
    std::vector<std::pair<int64_t, std::string>> rows;
    {
      Stmt st(dead_ids_);
      bind_sel(st, sel);
      st.opt(4, id);
      while (st.row()) rows.emplace_back(st.num(0), st.str(1));
    }
    for (auto& [seq, q] : rows) {
      Stmt(redrive_).i64(1, seq).i64(2, next_seq()).run();
      if (queues.empty() || queues.back() != q) queues.push_back(q);
    }
    return int64_t(rows.size());
  }
  int64_t discard(const QueueSelector& sel, const std::string& id) override {
    std::optional<int64_t> seq;
    {
      Stmt st(dead_ids_);
      bind_sel(st, sel);
      st.text(4, id);
      if (st.row()) seq = st.num(0);
    }
    if (!seq) return 0;
    Stmt(discard_).i64(1, *seq).run();
    return 1;
  }
  int64_t max_seq() override {
    Stmt st(max_seq_);
    return st.row() ? st.num(0) : 0;
  }

 private:
  sqlite3_stmt* prepare(const std::string& sql) { return db_.prepare(sql); }
  void bind_sel(Stmt& st, const QueueSelector& sel) {
    st.text(1, sel.exact);
    if (sel.prefix) {
      prefix_end_ = *sel.prefix;
      prefix_end_.back() = char(prefix_end_.back() + 1);  // "t::" -> "t:;"
      st.text(2, *sel.prefix).text(3, prefix_end_);
    } else {
      st.null(2).null(3);
    }
  }

  Db db_;
  sqlite3_stmt *insert_, *remove_, *retry_, *dead_, *load_, *group_, *due_, *next_due_, *counts_,
      *dead_counts_, *dead_list_, *dead_ids_, *redrive_, *discard_, *max_seq_;
  std::string prefix_end_;
};

}  // namespace

// The writer thread of the file_based store.
struct QueueStore::Writer {
  struct Op {
    std::function<void(QueueBackend&)> run;
    Done done;
    std::optional<std::string> error;
    bool lazy = false;
  };

  Writer(std::unique_ptr<SqliteBackend> db, Poster post)
      : db_(std::move(db)), post_(std::move(post)) {
    thread_ = std::thread([this] { run(); });
  }
  ~Writer() { stop(); }

  bool submit(Op op) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      if (ops_.empty()) first_at_ = std::chrono::steady_clock::now();
      if (!op.lazy) ++eager_;
      ops_.push_back(std::move(op));
    }
    cv_.notify_one();
    return true;
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  void run() {
    for (;;) {
      std::deque<Op> batch;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !ops_.empty(); });
        if (ops_.empty()) return;
        // Only lazy operations: let them wait a little for an eager one to commit with.
        if (eager_ == 0)
          cv_.wait_until(lock, first_at_ + kLazyDelay, [&] { return stopping_ || eager_ > 0; });
        while (!ops_.empty() && batch.size() < kMaxBatch) {
          if (!ops_.front().lazy) --eager_;
          batch.push_back(std::move(ops_.front()));
          ops_.pop_front();
        }
        first_at_ = std::chrono::steady_clock::now();
      }
      commit(batch);
      auto completions = std::make_shared<std::deque<Op>>(std::move(batch));
      post_([completions] {
        for (auto& op : *completions)
          if (op.done) op.done(op.error);
      });
    }
  }

  // One transaction for the whole batch; an operation that fails is rolled back alone (a
  // savepoint each), so the others still commit.
  void commit(std::deque<Op>& batch) {
    try {
      db_->exec("BEGIN IMMEDIATE");
    } catch (const std::exception& e) {
      for (auto& op : batch) op.error = e.what();
      return;
    }
    for (auto& op : batch) {
      try {
        if (batch.size() > 1) db_->exec("SAVEPOINT op");
        op.run(*db_);
        if (batch.size() > 1) db_->exec("RELEASE op");
      } catch (const std::exception& e) {
        op.error = e.what();
        try {
          db_->exec("ROLLBACK TO op");
          db_->exec("RELEASE op");
        } catch (const std::exception&) {
        }
      }
    }
    try {
      db_->exec("COMMIT");
    } catch (const std::exception& e) {
      spdlog::error("iii-queue: commit failed: {}", e.what());
      for (auto& op : batch) op.error = e.what();
      try {
        db_->exec("ROLLBACK");
      } catch (const std::exception&) {
      }
    }
  }

  std::unique_ptr<SqliteBackend> db_;
  Poster post_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> ops_;
  size_t eager_ = 0;  // operations in ops_ that are not lazy
  std::chrono::steady_clock::time_point first_at_;
  bool stopping_ = false;
  std::thread thread_;
};

QueueStore::QueueStore(const QueueStoreOptions& opts, Poster post)
    : file_based_(opts.file_based),
      post_(std::move(post)),
      seq_(std::make_shared<std::atomic<int64_t>>(0)) {
  if (!file_based_) {
    memory_ = std::make_unique<MemoryBackend>();
    return;
  }
  path_ = storage::sqlite::resolve_db_path(opts.file_path, "iii_queue.sqlite3");
  auto db = std::make_unique<SqliteBackend>(path_, opts.fsync);
  seq_->store(db->max_seq());
  spdlog::info("iii-queue: file_based message store at {} (SQLite WAL, synchronous={})", path_,
               opts.fsync ? "FULL" : "NORMAL");
  writer_ = std::make_unique<Writer>(std::move(db), post_);
}

QueueStore::~QueueStore() { close(); }

void QueueStore::submit(std::function<void(QueueBackend&)> op, Done done, bool lazy) {
  if (closed_) {
    if (done) post_([done] { done(std::string("store closed")); });
    return;
  }
  if (writer_) {
    writer_->submit(Writer::Op{std::move(op), std::move(done), std::nullopt, lazy});
    return;
  }
  std::optional<std::string> error;
  try {
    op(*memory_);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (done) post_([done = std::move(done), error] { done(error); });
}

void QueueStore::close() {
  if (closed_) return;
  closed_ = true;
  if (writer_) writer_->stop();
}

}  // namespace iii::workers::queue
