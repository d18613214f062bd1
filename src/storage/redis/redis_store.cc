#include "storage/redis/redis_store.h"

#include <spdlog/spdlog.h>

#include <boost/json/parse.hpp>
#include <deque>
#include <set>
#include <unordered_map>

#include "protocol/json_writer.h"
#include "storage/redis/redis_client.h"

namespace iii::storage::redis {

namespace json = boost::json;

namespace {

// Get-and-set / get-and-delete in one step, returning the old JSON text (nil when absent).
const Script kSetScript(
    "local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "return old\n");
const Script kDelScript(
    "local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if old then redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
    "return old\n");
// Compare-and-set for update: ARGV[2] is '0' (expect absent) or '1' (expect ARGV[3]); writes
// ARGV[4] when the field still holds what the engine read, else returns what it holds now
// ({0} = absent, {0, text} = present) for the engine to apply the ops again.
const Script kCasScript(
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local same\n"
    "if ARGV[2] == '0' then same = (cur == false) else same = (cur == ARGV[3]) end\n"
    "if same then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) return {1} end\n"
    "if cur then return {0, cur} end\n"
    "return {0}\n");

constexpr int kMaxCasAttempts = 100;

// The client's own errors already name Redis; a server error gets the prefix.
std::string why(const Reply& r) { return r.str.rfind("Redis", 0) == 0 ? r.str : "Redis: " + r.str; }

std::string to_text(const json::value& v) {
  std::string out;
  protocol::append_json(out, v);
  return out;
}

// A stored text as JSON; an error message when it is not JSON (written by something else).
std::optional<json::value> from_text(const std::string& text, std::string& error) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) {
    error = "stored value is not valid JSON: " + ec.message();
    return std::nullopt;
  }
  return v;
}

class RedisStore : public KvStore {
 public:
  RedisStore(boost::asio::io_context& io, const std::string& url, const std::string& name)
      : client_(io, [&] {
          ClientOptions o;
          o.url = url;
          o.name = name;
          return o;
        }()) {
    client_.start();
  }

  ~RedisStore() override { client_.stop(); }

  void get(const std::string& index, const std::string& key, GetCallback cb) override {
    client_.command({"HGET", index, key}, [cb = std::move(cb)](Reply r) {
      if (r.is_error()) return cb({std::nullopt, why(r)});
      if (r.is_nil()) return cb({std::nullopt, std::nullopt});
      std::string err;
      auto v = from_text(r.str, err);
      if (!v) return cb({std::nullopt, err});
      cb({std::move(v), std::nullopt});
    });
  }

  void set(const std::string& index, const std::string& key, json::value value,
           SetCallback cb) override {
    std::string text = to_text(value);
    client_.eval(kSetScript, {index}, {key, std::move(text)},
                 [cb = std::move(cb), value = std::move(value)](Reply r) mutable {
                   if (r.is_error()) return cb({{}, why(r)});
                   SetResult out;
                   out.new_value = std::move(value);
                   if (r.is_string()) {
                     std::string err;
                     out.old_value = from_text(r.str, err);
                     // An unreadable old value was still replaced: report it as null.
                     if (!out.old_value) out.old_value = json::value(nullptr);
                   }
                   cb({std::move(out), std::nullopt});
                 });
  }

  void del(const std::string& index, const std::string& key, DeleteCallback cb) override {
    client_.eval(kDelScript, {index}, {key}, [cb = std::move(cb)](Reply r) {
      if (r.is_error()) return cb({std::nullopt, why(r)});
      if (!r.is_string()) return cb({std::nullopt, std::nullopt});
      std::string err;
      auto v = from_text(r.str, err);
      cb({v ? std::move(v) : std::optional<json::value>(nullptr), std::nullopt});
    });
  }

  // Updates of one key from this engine run one after the other (each starts from the text the
  // previous one wrote, without reading it back); against other writers, the compare-and-set
  // decides.
  void update(const std::string& index, const std::string& key, std::vector<UpdateOp> ops,
              UpdateCallback cb) override {
    auto op = std::make_shared<UpdateState>();
    op->index = index;
    op->key = key;
    op->ops = std::move(ops);
    op->cb = std::move(cb);
    op->slot = index;
    op->slot += '\0';
    op->slot += key;
    auto& queue = updates_[op->slot];
    queue.push_back(op);
    if (queue.size() == 1) begin(op, std::nullopt);
  }

  void list(const std::string& index, ListCallback cb) override {
    client_.command({"HGETALL", index}, [cb = std::move(cb), index](Reply r) {
      if (r.is_error()) return cb({{}, why(r)});
      std::vector<json::value> out;
      out.reserve(r.elements.size() / 2);
      for (size_t i = 1; i < r.elements.size(); i += 2) {
        std::string err;
        auto v = from_text(r.elements[i].str, err);
        if (!v) {
          spdlog::warn("redis: {} field '{}' skipped: {}", index, r.elements[i - 1].str, err);
          continue;
        }
        out.push_back(std::move(*v));
      }
      cb({std::move(out), std::nullopt});
    });
  }

  // The stored texts joined as they are (each checked to be JSON): no re-serialisation.
  void list_raw(const std::string& index, RawListCallback cb) override {
    client_.command({"HGETALL", index}, [cb = std::move(cb), index](Reply r) {
      if (r.is_error()) return cb({nullptr, why(r)});
      size_t size = 2;
      for (size_t i = 1; i < r.elements.size(); i += 2) size += r.elements[i].str.size() + 1;
      std::string out;
      out.reserve(size);
      out += '[';
      bool first = true;
      for (size_t i = 1; i < r.elements.size(); i += 2) {
        std::string err;
        if (!from_text(r.elements[i].str, err)) {
          spdlog::warn("redis: {} field '{}' skipped: {}", index, r.elements[i - 1].str, err);
          continue;
        }
        if (!first) out += ',';
        first = false;
        out += r.elements[i].str;
      }
      out += ']';
      cb({std::make_shared<const std::string>(std::move(out)), std::nullopt});
    });
  }

  void list_indexes(const std::string& prefix, IndexesCallback cb) override {
    auto scan = std::make_shared<ScanState>();
    scan->match = glob_escape(prefix) + "*";
    scan->cb = std::move(cb);
    scan_step(scan, "0");
  }

 private:
  struct UpdateState {
    std::string index, key, slot;
    std::vector<UpdateOp> ops;
    UpdateCallback cb;
    int attempts = 0;
  };

  // Starts `op`: from the text the previous update of the key wrote (`known`), else from a read.
  void begin(const std::shared_ptr<UpdateState>& op,
             std::optional<std::optional<std::string>> known) {
    if (known) return attempt(op, std::move(*known));
    client_.command({"HGET", op->index, op->key}, [this, op](Reply r) {
      if (r.is_error()) return finish(op, {{}, why(r)}, std::nullopt);
      attempt(op, r.is_nil() ? std::nullopt : std::optional<std::string>(std::move(r.str)));
    });
  }

  // Completes `op` and starts the next update of its key. `written`: the text now stored.
  void finish(const std::shared_ptr<UpdateState>& op, Stored<UpdateResult> result,
              std::optional<std::string> written) {
    auto it = updates_.find(op->slot);
    std::shared_ptr<UpdateState> next;
    if (it != updates_.end()) {
      it->second.pop_front();
      if (it->second.empty())
        updates_.erase(it);
      else
        next = it->second.front();
    }
    op->cb(std::move(result));
    if (!next) return;
    if (written)
      begin(next, std::optional<std::optional<std::string>>(std::move(written)));
    else
      begin(next, std::nullopt);
  }
  struct ScanState {
    std::string match;
    std::set<std::string> found;
    IndexesCallback cb;
  };

  // Applies the ops to what was read and writes the result if nobody changed it meanwhile.
  void attempt(const std::shared_ptr<UpdateState>& op, std::optional<std::string> current) {
    if (++op->attempts > kMaxCasAttempts)
      return finish(op, {{}, "too many concurrent writers on " + op->index + " " + op->key},
                    std::nullopt);
    std::optional<json::value> old;
    if (current) {
      std::string err;
      old = from_text(*current, err);
      if (!old) return finish(op, {{}, "Redis atomic update failed: " + err}, std::nullopt);
    }
    auto result = std::make_shared<UpdateResult>(apply_update_ops(old, op->ops));
    auto text = std::make_shared<std::string>(to_text(result->new_value));
    client_.eval(
        kCasScript, {op->index}, {op->key, current ? "1" : "0", current.value_or(""), *text},
        [this, op, result, text](Reply r) {
          if (r.is_error()) return finish(op, {{}, why(r)}, std::nullopt);
          if (r.type != Reply::Type::kArray || r.elements.empty())
            return finish(op, {{}, "Redis: unexpected reply to the update script"}, std::nullopt);
          if (r.elements[0].integer == 1)
            return finish(op, {std::move(*result), std::nullopt}, std::move(*text));
          attempt(op, r.elements.size() > 1
                          ? std::optional<std::string>(std::move(r.elements[1].str))
                          : std::nullopt);
        });
  }

  void scan_step(const std::shared_ptr<ScanState>& scan, const std::string& cursor) {
    client_.command(
        {"SCAN", cursor, "MATCH", scan->match, "COUNT", "1000", "TYPE", "hash"},
        [this, scan](Reply r) {
          if (r.is_error()) return scan->cb({{}, why(r)});
          if (r.type != Reply::Type::kArray || r.elements.size() != 2)
            return scan->cb({{}, "Redis: unexpected reply to SCAN"});
          for (auto& k : r.elements[1].elements) scan->found.insert(std::move(k.str));
          if (r.elements[0].str == "0")
            return scan->cb(
                {std::vector<std::string>(scan->found.begin(), scan->found.end()), std::nullopt});
          scan_step(scan, r.elements[0].str);
        });
  }

  RedisClient client_;
  // index '\0' key -> the updates of that key, the running one first.
  std::unordered_map<std::string, std::deque<std::shared_ptr<UpdateState>>> updates_;
};

}  // namespace

std::string glob_escape(const std::string& prefix) {
  std::string out;
  out.reserve(prefix.size());
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::unique_ptr<KvStore> make_redis_store(boost::asio::io_context& io, const std::string& url,
                                          const std::string& name) {
  return std::make_unique<RedisStore>(io, url, name);
}

}  // namespace iii::storage::redis
