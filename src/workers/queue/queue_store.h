// Message storage of iii-queue. One table of messages, each in one internal queue
// (`__fn_queue::<name>` for named queues, `<topic>::<function_id>` for topic subscribers), in
// state ready (waiting, or delayed until `available_at_ms`) or dead-lettered. Messages are
// ordered by `seq`, a store-wide counter; a retry keeps its seq, a redrive gets a new one.
//
// Every operation runs on the backend and completes on the engine thread (through the
// Poster). The in-memory backend runs it at once; the SQLite backend (file_based) runs it on a
// writer thread that commits whatever has queued up in one transaction (group commit) and
// completes each operation only after its transaction committed, so an acknowledged enqueue is
// on disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iii::workers::queue {

struct QueueMessage {
  int64_t seq = 0;
  std::string id;     // job id (what the DLQ functions take)
  std::string queue;  // internal queue name
  std::string function_id;
  std::string message_id;            // messageReceiptId (named queues)
  std::optional<std::string> group;  // FIFO message group
  int64_t attempts = 0;
  int64_t available_at_ms = 0;  // 0 = now
  int64_t created_at_ms = 0;
  std::optional<std::string> traceparent, baggage;
  std::string data;  // serialised JSON
};

struct DeadLetter {
  QueueMessage msg;
  std::string error;
  int64_t failed_at_ms = 0;
};

// Which internal queues an operation covers: one queue, and optionally every queue whose name
// starts with `prefix` (a topic's `<topic>::` subscriber queues).
struct QueueSelector {
  std::string exact;
  std::optional<std::string> prefix;
  bool matches(const std::string& queue) const {
    return queue == exact || (prefix && queue.compare(0, prefix->size(), *prefix) == 0);
  }
};

struct QueueCounts {
  int64_t ready = 0;  // waiting, delayed or being handled
  int64_t dead = 0;
};

// What the operations act on. Implemented in memory and on SQLite; called from one thread at a
// time (the engine thread, or the SQLite writer thread inside a transaction).
class QueueBackend {
 public:
  virtual ~QueueBackend() = default;
  virtual void insert(const QueueMessage& m) = 0;
  virtual void remove(int64_t seq) = 0;
  virtual void retry(int64_t seq, int64_t attempts, int64_t available_at_ms) = 0;
  virtual void dead_letter(int64_t seq, int64_t attempts, const std::string& error,
                           int64_t failed_at_ms) = 0;
  // Ready messages of `queue` with seq > after_seq, in seq order.
  virtual std::vector<QueueMessage> load(const std::string& queue, int64_t after_seq,
                                         size_t limit) = 0;
  // Ready messages of one FIFO group with from_seq <= seq <= max_seq, in seq order.
  virtual std::vector<QueueMessage> load_group(const std::string& queue, const std::string& group,
                                               int64_t from_seq, int64_t max_seq, size_t limit) = 0;
  // Ready messages of `queue` with seq <= max_seq whose retry is due (0 < available_at <= now),
  // earliest first; `next_due` gets the earliest later available_at (0 when none).
  virtual std::vector<QueueMessage> due_retries(const std::string& queue, int64_t max_seq,
                                                int64_t now, size_t limit, int64_t& next_due) = 0;
  virtual QueueCounts counts(const QueueSelector& sel) = 0;
  virtual std::map<std::string, int64_t> dead_counts() = 0;  // per queue, non-zero only
  virtual std::vector<DeadLetter> dead_letters(const QueueSelector& sel, int64_t offset,
                                               int64_t limit) = 0;
  // Moves dead letters (all of `sel`, or the one with job id `id`) back to ready with
  // attempts 0 and new seqs from `next_seq`; returns the queues touched and how many moved.
  virtual int64_t redrive(const QueueSelector& sel, const std::optional<std::string>& id,
                          const std::function<int64_t()>& next_seq,
                          std::vector<std::string>& queues) = 0;
  virtual int64_t discard(const QueueSelector& sel, const std::string& id) = 0;
  virtual int64_t max_seq() = 0;
};

struct QueueStoreOptions {
  bool file_based = false;
  std::string file_path;  // a directory, or a file ending in .db / .sqlite / .sqlite3
  bool fsync = true;      // synchronous=FULL (else NORMAL: survives process crashes only)
};

class QueueStore {
 public:
  using Poster = std::function<void(std::function<void()>)>;
  using Done = std::function<void(std::optional<std::string> error)>;

  // Throws std::runtime_error when the database cannot be opened.
  QueueStore(const QueueStoreOptions& opts, Poster post);
  ~QueueStore();
  QueueStore(const QueueStore&) = delete;
  QueueStore& operator=(const QueueStore&) = delete;

  // Runs `op` on the backend; `done` runs on the engine thread once it is durable (or failed).
  // After close() operations fail with "store closed". A `lazy` operation (one that may be
  // lost in a crash without harm, like the delete after a handler succeeded: the message is
  // then delivered again) does not start a commit of its own: it waits up to 10 ms to share
  // the next one.
  void submit(std::function<void(QueueBackend&)> op, Done done, bool lazy = false);
  // Assigns the next seq (engine thread, or the writer thread inside an op).
  int64_t next_seq() { return ++*seq_; }
  // Completes every submitted operation, then stops the writer. Idempotent.
  void close();
  bool file_based() const { return file_based_; }
  const std::string& path() const { return path_; }

 private:
  struct Writer;
  bool file_based_ = false;
  std::string path_;
  Poster post_;
  std::shared_ptr<std::atomic<int64_t>> seq_;
  std::unique_ptr<QueueBackend> memory_;
  std::unique_ptr<Writer> writer_;
  bool closed_ = false;
};

}  // namespace iii::workers::queue
