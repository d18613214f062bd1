// Key-value storage shared by iii-state and iii-stream. Items live in named indexes
// ("state:<scope>", "stream:<name>:<group>") and list in insertion order (an update keeps an
// item's position). The interface is asynchronous so that durable adapters (SQLite today,
// Redis later) can acknowledge a write only once it is safe; every callback runs on the
// engine thread.
#pragma once

#include <boost/json/value.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "storage/update_ops.h"

namespace iii::storage {

// Posts a completion onto the engine thread (asio::post in production, inline in tests).
using Poster = std::function<void(std::function<void()>)>;

struct SetResult {
  std::optional<boost::json::value> old_value;
  boost::json::value new_value;
};

// Every completion carries either a value or a storage error (disk full, corrupt file...).
template <typename T>
struct Stored {
  T value{};
  std::optional<std::string> error;
  bool ok() const { return !error; }
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  using GetCallback = std::function<void(Stored<std::optional<boost::json::value>>)>;
  using SetCallback = std::function<void(Stored<SetResult>)>;
  using DeleteCallback = std::function<void(Stored<std::optional<boost::json::value>> old_value)>;
  using UpdateCallback = std::function<void(Stored<UpdateResult>)>;
  using ListCallback = std::function<void(Stored<std::vector<boost::json::value>>)>;
  using IndexesCallback = std::function<void(Stored<std::vector<std::string>>)>;
  // One list already serialised as a JSON array text, "[v1,v2,...]", immutable and shareable.
  using RawList = std::shared_ptr<const std::string>;
  using RawListCallback = std::function<void(Stored<RawList>)>;

  virtual void get(const std::string& index, const std::string& key, GetCallback cb) = 0;
  virtual void set(const std::string& index, const std::string& key, boost::json::value value,
                   SetCallback cb) = 0;
  virtual void del(const std::string& index, const std::string& key, DeleteCallback cb) = 0;
  // Atomic read-modify-write with the update ops; the result is always written back.
  virtual void update(const std::string& index, const std::string& key, std::vector<UpdateOp> ops,
                      UpdateCallback cb) = 0;
  // Values of one index in insertion order. They may share one allocator (the SQLite adapter
  // parses a list into one arena): copy, rather than move, a value that must outlive the list.
  virtual void list(const std::string& index, ListCallback cb) = 0;
  // The same list as JSON text, never null ("[]" for an empty or missing index), with the same
  // consistency as list(): byte for byte the compact serialisation of list()'s values as one
  // array (a row the engine did not write, e.g. edited by hand, may keep its own spacing).
  // Lets a caller that only forwards the list skip building a boost::json::array on the engine
  // thread. The default serialises list()'s result; the SQLite adapter joins its stored texts
  // on a reader thread.
  virtual void list_raw(const std::string& index, RawListCallback cb);
  // Names of the non-empty indexes that start with `prefix`, sorted.
  virtual void list_indexes(const std::string& prefix, IndexesCallback cb) = 0;

  // Blocks until every acknowledged write is on disk and stops background work.
  virtual void close() {}
};

struct StoreOptions {
  enum class Method { kInMemory, kFileBased, kRedis };
  Method method = Method::kInMemory;
  std::string file_path;  // a directory, or a file ending in .db / .sqlite / .sqlite3
  bool fsync = true;      // file_based: fsync each group commit (else survive process crashes only)
  int64_t cache_mb = 16;  // file_based: SQLite page cache
  std::string redis_url = "redis://localhost:6379";  // the `redis` adapter
};

// Compact JSON array of `values`: what list_raw produces for that list.
std::string serialise_list(const std::vector<boost::json::value>& values);

std::unique_ptr<KvStore> make_memory_store(Poster post);
// Throws std::runtime_error with a clear message when the database cannot be opened.
std::unique_ptr<KvStore> make_sqlite_store(const StoreOptions& opts, Poster post);
std::unique_ptr<KvStore> make_store(const StoreOptions& opts, Poster post);

}  // namespace iii::storage
