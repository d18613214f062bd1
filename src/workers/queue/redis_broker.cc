// iii-queue's durable `redis` adapter: Redis Streams with one consumer group per queue, and for
// FIFO queues one list per message group with leases. Keys, for an internal queue K
// (`__fn_queue::<name>`, or `<topic>::<function_id>`):
//   iii:queue:{K}:stream   stream of messages (field `m`: the message JSON), consumer group `iii`
//   iii:queue:{K}:delayed  sorted set of retries waiting for their backoff (score = due, unix ms)
//   iii:queue:{K}:dlq      list of dead letters (LPUSH: newest first), the message JSON plus
//                          `error` and `failed_at`
//   iii:queue:topic:{T}:subs  set of the functions subscribed to topic T (from any engine)
//   iii:queue:topic:{T}:fifo  the subset of them subscribed with `queue_config.type: fifo`
// FIFO queues (named queues of type fifo, FIFO topic subscribers) use instead of the stream:
//   iii:queue:{K}:g:<g>    list of the messages of group g, in order (head = index 0); a topic
//                          subscriber's queue is one group, g = ""
//   iii:queue:{K}:ready    list of the groups that have messages, no owner and no retry pending
//   iii:queue:{K}:owned    sorted set: group -> lease expiry (Redis TIME, ms) while an engine runs
//                          its head
//   iii:queue:{K}:owner    hash: group -> the claim token of that engine (fences late settles)
//   iii:queue:{K}:backoff  sorted set: group -> due (ms) while its failed head waits for a retry
//   iii:queue:{K}:size     messages in all the group lists (topic_stats depth)
// A group with messages is in exactly one of ready / owned / backoff; an empty group in none.
// The Pub/Sub channel `iii:queue:wake` (payload K) wakes consumers at once after a publish, a
// due retry, a released group or a redrive; they also poll every `poll_interval_ms`.
//
// A delivery is an entry read with XREADGROUP and pending until it is settled: ack (XACK+XDEL),
// retry (XACK+XDEL+ZADD to the delayed set) or dead letter (XACK+XDEL+LPUSH), each one Lua
// script, so atomic. Due retries are moved back to the stream by a script any engine may run.
// An entry whose engine died stays pending; every `visibility_timeout_ms / 2` each engine
// claims entries idle longer than `visibility_timeout_ms` (XAUTOCLAIM), while the engine holding
// an entry keeps it fresh (XCLAIM ... JUSTID) as long as its handler runs.
//
// FIFO: a consumer claims up to its free slots' worth of groups from `ready` (one script: LPOP,
// lease, hand out the head without removing it) and runs each head; settling is one script
// that checks the claim token, then ack (LPOP the head), retry (LSET the head with the new
// attempts, group to `backoff`) or dead letter (LPOP + LPUSH to the DLQ); a group that still
// has messages is leased again to the same consumer when no other group waits in `ready` (its
// next head comes back in the reply), else it goes to the tail of `ready`, so groups take turns.
// A publish wakes consumers only when it made a group ready. The engine renews the leases of the
// groups it runs; every engine moves groups whose lease expired (their engine died) and due
// retries back to `ready`. So a group runs one message at a time across all engines, in order,
// also across retries, while different groups run in parallel.
#include "workers/queue/redis_broker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <map>

#include "protocol/uuid.h"
#include "storage/redis/redis_client.h"

namespace iii::workers::queue {
namespace {

namespace json = boost::json;
namespace rds = iii::storage::redis;
using rds::Reply;

const char* const kGroup = "iii";
const char* const kWake = "iii:queue:wake";

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string internal_key(const BrokerTarget& t) {
  return t.named ? "__fn_queue::" + t.name : t.name + "::" + t.function_id;
}
std::string stream_key(const std::string& k) { return "iii:queue:{" + k + "}:stream"; }
std::string delayed_key(const std::string& k) { return "iii:queue:{" + k + "}:delayed"; }
std::string dlq_key(const std::string& k) { return "iii:queue:{" + k + "}:dlq"; }
std::string subs_key(const std::string& topic) { return "iii:queue:topic:{" + topic + "}:subs"; }
std::string fifo_subs_key(const std::string& topic) {
  return "iii:queue:topic:{" + topic + "}:fifo";
}
// The FIFO keys of K are this prefix + `g:<g>`, `ready`, `owned`, `owner`, `backoff`, `size`.
std::string fifo_prefix(const std::string& k) { return "iii:queue:{" + k + "}:"; }

json::object encode(const QueueMessage& m) {
  json::object o;
  o["id"] = m.id;
  if (!m.function_id.empty()) o["fn"] = m.function_id;
  if (m.group) o["grp"] = *m.group;
  o["att"] = m.attempts;
  if (m.traceparent) o["tp"] = *m.traceparent;
  if (m.baggage) o["bg"] = *m.baggage;
  o["data"] = m.data;
  o["ca"] = m.created_at_ms;
  return o;
}

int64_t int_of(const json::value* v) {
  if (!v) return 0;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return int64_t(v->get_uint64());
  if (v->is_double()) return int64_t(v->get_double());
  return 0;
}

// Decodes a message (or dead letter) JSON; false when it is not one.
bool decode(std::string_view text, QueueMessage& m, std::string* error = nullptr,
            int64_t* failed_at = nullptr) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return false;
  auto& o = v.get_object();
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto* x = o.if_contains(k);
    if (x && x->is_string()) return std::string(x->get_string());
    return std::nullopt;
  };
  m.id = m.message_id = str("id").value_or("");
  m.function_id = str("fn").value_or("");
  m.group = str("grp");
  m.attempts = int_of(o.if_contains("att"));
  m.traceparent = str("tp");
  m.baggage = str("bg");
  m.data = str("data").value_or("null");
  m.created_at_ms = int_of(o.if_contains("ca"));
  if (error) *error = str("error").value_or("");
  if (failed_at) *failed_at = int_of(o.if_contains("failed_at"));
  return true;
}

// Lua: appends message m to group g of queue k (prefix p) and makes the group ready when it was
// empty and is neither owned nor waiting for a retry; true then (only then is a wake-up useful:
// otherwise the group's owner, or the retry, gets to the message in its turn).
const char* const kFifoPush = R"(
local function fifo_push(p, g, m)
  local n = redis.call('RPUSH', p .. 'g:' .. g, m)
  redis.call('INCR', p .. 'size')
  if n == 1 and not redis.call('ZSCORE', p .. 'owned', g)
      and not redis.call('ZSCORE', p .. 'backoff', g) then
    redis.call('RPUSH', p .. 'ready', g)
    return true
  end
  return false
end
)";

// Lua: Redis's clock in ms (the same clock for every engine's leases and retries).
const char* const kNow = R"(
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
)";

const rds::Script& publish_named_script() {
  static const rds::Script s(R"(
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return id)");
  return s;
}

// KEYS: the group's list. ARGV: message, K, wake channel, prefix, group.
const rds::Script& publish_fifo_script() {
  static const rds::Script s(std::string(kFifoPush) + R"(
if fifo_push(ARGV[4], ARGV[5], ARGV[1]) then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return 1)");
  return s;
}

// KEYS: subs, fifo subs. ARGV: topic, message, wake channel.
const rds::Script& publish_topic_script() {
  static const rds::Script s(std::string(kFifoPush) + R"(
local fns = redis.call('SMEMBERS', KEYS[1])
local fifo = {}
for _, fn in ipairs(redis.call('SMEMBERS', KEYS[2])) do fifo[fn] = true end
for _, fn in ipairs(fns) do
  local k = ARGV[1] .. '::' .. fn
  if not fifo[fn] then
    redis.call('XADD', 'iii:queue:{' .. k .. '}:stream', '*', 'm', ARGV[2])
    redis.call('PUBLISH', ARGV[3], k)
  elseif fifo_push('iii:queue:{' .. k .. '}:', '', ARGV[2]) then
    redis.call('PUBLISH', ARGV[3], k)
  end
end
return #fns)");
  return s;
}

// Claims up to ARGV[2] ready groups for ARGV[3] ms. KEYS: ready. ARGV: prefix, count, lease,
// token. Returns {group, head, claim token, ...}.
const rds::Script& fifo_claim_script() {
  static const rds::Script s(std::string(kNow) + R"(
local p = ARGV[1]
local out = {}
local now = now_ms()
for i = 1, tonumber(ARGV[2]) do
  local g = redis.call('LPOP', KEYS[1])
  if not g then break end
  local head = redis.call('LINDEX', p .. 'g:' .. g, 0)
  if head and not redis.call('ZSCORE', p .. 'owned', g)
      and not redis.call('ZSCORE', p .. 'backoff', g) then
    local tok = ARGV[4] .. ':' .. i
    redis.call('ZADD', p .. 'owned', now + tonumber(ARGV[3]), g)
    redis.call('HSET', p .. 'owner', g, tok)
    out[#out + 1] = g
    out[#out + 1] = head
    out[#out + 1] = tok
  end
end
return out)");
  return s;
}

// Settles the head of a claimed group. KEYS: the group's list. ARGV: prefix, group, token,
// how (ack|retry|dead|requeue), payload (retry: the head with its new attempts; dead: the dead
// letter), retry delay ms, K, wake channel, lease ms, next token ('' = do not continue).
// Returns {0} when the claim was lost (its lease expired and the group went to another
// consumer): nothing changes then. Else {1}, or {1, next head, next token} when the group still
// has messages, no other group waits in `ready` and a next token was given: the group is then
// leased again to the same consumer (one round trip per message, no wake-up); otherwise it goes
// to the tail of `ready` (so groups take turns, as with the builtin adapter).
const rds::Script& fifo_settle_script() {
  static const rds::Script s(std::string(kNow) + R"(
local p, g, how = ARGV[1], ARGV[2], ARGV[4]
if redis.call('HGET', p .. 'owner', g) ~= ARGV[3] then return {0} end
if how == 'retry' then
  redis.call('HDEL', p .. 'owner', g)
  redis.call('ZREM', p .. 'owned', g)
  redis.call('LSET', KEYS[1], 0, ARGV[5])
  redis.call('ZADD', p .. 'backoff', now_ms() + tonumber(ARGV[6]), g)
  return {1}
end
if how == 'ack' or how == 'dead' then
  redis.call('LPOP', KEYS[1])
  redis.call('DECR', p .. 'size')
  if how == 'dead' then redis.call('LPUSH', p .. 'dlq', ARGV[5]) end
end
local head = redis.call('LINDEX', KEYS[1], 0)
if head and how ~= 'requeue' and ARGV[10] ~= '' and redis.call('LLEN', p .. 'ready') == 0 then
  redis.call('ZADD', p .. 'owned', now_ms() + tonumber(ARGV[9]), g)
  redis.call('HSET', p .. 'owner', g, ARGV[10])
  return {1, head, ARGV[10]}
end
redis.call('HDEL', p .. 'owner', g)
redis.call('ZREM', p .. 'owned', g)
if head then
  if how == 'requeue' then
    redis.call('LPUSH', p .. 'ready', g)
  else
    redis.call('RPUSH', p .. 'ready', g)
  end
  redis.call('PUBLISH', ARGV[8], ARGV[7])
end
return {1})");
  return s;
}

// Renews the leases still held. KEYS: owned. ARGV: prefix, lease ms, then group, token pairs.
const rds::Script& fifo_renew_script() {
  static const rds::Script s(std::string(kNow) + R"(
local p = ARGV[1]
local at = now_ms() + tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV - 1, 2 do
  if redis.call('HGET', p .. 'owner', ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', at, ARGV[i])
    n = n + 1
  end
end
return n)");
  return s;
}

// Gives groups whose lease expired and groups whose retry is due back to `ready`.
// KEYS: ready. ARGV: prefix, K, wake channel. Returns {expired, due}.
const rds::Script& fifo_reap_script() {
  static const rds::Script s(std::string(kNow) + R"(
local p = ARGV[1]
local now = now_ms()
local moved = {0, 0}
for i, set in ipairs({'owned', 'backoff'}) do
  local gs = redis.call('ZRANGEBYSCORE', p .. set, '-inf', now, 'LIMIT', 0, 256)
  for _, g in ipairs(gs) do
    redis.call('ZREM', p .. set, g)
    if set == 'owned' then redis.call('HDEL', p .. 'owner', g) end
    if redis.call('LLEN', p .. 'g:' .. g) > 0 then
      if set == 'owned' then
        redis.call('LPUSH', KEYS[1], g)
      else
        redis.call('RPUSH', KEYS[1], g)
      end
      moved[i] = moved[i] + 1
    end
  end
end
if moved[1] + moved[2] > 0 then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return moved)");
  return s;
}

// KEYS: stream, delayed|dlq. ARGV: group, entry id, how (ack|retry|dead), due, payload.
const rds::Script& settle_script() {
  static const rds::Script s(R"(
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if n == 1 then
  if ARGV[3] == 'retry' then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
  elseif ARGV[3] == 'dead' then
    redis.call('LPUSH', KEYS[2], ARGV[5])
  end
end
return n)");
  return s;
}

// KEYS: stream, delayed. ARGV: now, K, wake channel.
const rds::Script& move_due_script() {
  static const rds::Script s(R"(
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 256)
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'm', m)
  redis.call('ZREM', KEYS[2], m)
end
if #due > 0 then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return #due)");
  return s;
}

// KEYS: stream, dlq. ARGV: id ('' = every one), K, wake channel, 'redrive' | 'discard',
// '1' for a FIFO queue (a redriven message goes to the tail of its group), FIFO prefix.
const rds::Script& dlq_move_script() {
  static const rds::Script s(std::string(kFifoPush) + R"(
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local n = 0
for i = #items, 1, -1 do
  local e = cjson.decode(items[i])
  if ARGV[1] == '' or e['id'] == ARGV[1] then
    redis.call('LREM', KEYS[2], 1, items[i])
    if ARGV[4] == 'redrive' then
      e['att'] = 0
      e['error'] = nil
      e['failed_at'] = nil
      if ARGV[5] == '1' then
        local g = e['grp']
        if type(g) ~= 'string' then g = '' end
        fifo_push(ARGV[6], g, cjson.encode(e))
      else
        redis.call('XADD', KEYS[1], '*', 'm', cjson.encode(e))
      end
    end
    n = n + 1
    if ARGV[1] ~= '' then break end
  end
end
if n > 0 and ARGV[4] == 'redrive' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
return n)");
  return s;
}

class RedisBroker : public Broker {
 public:
  RedisBroker(boost::asio::io_context& io, const RedisBrokerOptions& o)
      : io_(io), opts_(o), tick_(io) {
    rds::ClientOptions c;
    c.url = o.url;
    c.name = "iii-queue";
    cmd_ = std::make_unique<rds::RedisClient>(io, c);
    // Reads (XREADGROUP, XAUTOCLAIM) on their own connection, so they do not wait in the
    // pipeline behind the producers' publish scripts.
    rd_ = std::make_unique<rds::RedisClient>(io, c);
    c.mode = rds::ClientOptions::Mode::kSubscriber;
    sub_ = std::make_unique<rds::RedisClient>(io, c);
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    me_ = std::string(host) + "-" + std::to_string(getpid()) + "-" +
          protocol::Uuid::random_v4().str().substr(0, 8);
    alive_ = std::make_shared<bool>(true);
  }

  ~RedisBroker() override { stop(); }

  std::string kind() const override { return "redis"; }

  void start() override {
    if (started_) return;
    started_ = true;
    cmd_->on_ready([this] {
      for (auto& [id, c] : consumers_) c->group_ready = false;
      for (auto& [id, c] : consumers_) prepare(*c);
    });
    cmd_->start();
    rd_->start();
    sub_->start();
    sub_->subscribe(kWake, [this](std::string_view, std::string_view k) {
      for (auto& [id, c] : consumers_)
        if (c->key == k) pump(*c);
    });
    arm();
  }

  void stop() override {
    if (stopped_) return;
    stopped_ = true;
    *alive_ = false;
    tick_.cancel();
    cmd_->stop();
    rd_->stop();
    sub_->stop();
  }

  void declare_named(const std::vector<BrokerTarget>&) override {}

  void publish(const BrokerTarget& to, QueueMessage msg, Done done) override {
    const std::string m = json::serialize(encode(msg));
    auto cb = [done = std::move(done)](Reply r) {
      if (!done) return;
      if (r.is_error()) return done(r.str);
      done(std::nullopt);
    };
    if (to.named && to.fifo) {
      const std::string k = internal_key(to), p = fifo_prefix(k), g = msg.group.value_or("");
      cmd_->eval(publish_fifo_script(), {p + "g:" + g}, {m, k, kWake, p, g}, std::move(cb));
    } else if (to.named) {
      const std::string k = internal_key(to);
      cmd_->eval(publish_named_script(), {stream_key(k)}, {m, k, kWake}, std::move(cb));
    } else {
      cmd_->eval(publish_topic_script(), {subs_key(to.name), fifo_subs_key(to.name)},
                 {to.name, m, kWake}, std::move(cb));
    }
  }

  uint64_t consume(const BrokerTarget& from, int64_t prefetch,
                   std::function<void(Delivery)> on_delivery) override {
    auto c = std::make_unique<Consumer>();
    c->id = ++next_id_;
    c->target = from;
    c->key = internal_key(from);
    c->stream = stream_key(c->key);
    c->delayed = delayed_key(c->key);
    c->dlq = dlq_key(c->key);
    c->fifo = from.fifo;
    c->prefix = fifo_prefix(c->key);
    c->prefetch = std::max<int64_t>(1, prefetch);
    c->on = std::move(on_delivery);
    Consumer& ref = *c;
    consumers_[c->id] = std::move(c);
    if (cmd_->ready()) prepare(ref);
    return ref.id;
  }

  void cancel(uint64_t consumer) override {
    auto it = consumers_.find(consumer);
    if (it == consumers_.end()) return;
    // Its pending entries go back to the others after the visibility timeout.
    retired_.push_back(std::move(it->second));
    retired_.back()->cancelled = true;
    consumers_.erase(it);
  }

  void settle(const Delivery& d, Settle how, const std::string& error, Done done) override {
    Consumer* c = find(d.consumer);
    auto finish = [done](std::optional<std::string> e) {
      if (done) done(e);
    };
    if (!c) return finish(std::nullopt);
    auto h = c->held.find(d.handle);
    if (h == c->held.end()) return finish(std::nullopt);
    const Held held = h->second;
    c->held.erase(h);
    --c->inflight;
    if (c->fifo) return settle_fifo(*c, d, held, how, error, std::move(finish));
    const std::string entry = held.entry;
    if (how == Settle::kRequeue) {
      // Stays pending: claimed again after the visibility timeout (or by us at start-up).
      pump(*c);
      return finish(std::nullopt);
    }
    std::string second = c->delayed, mode = "ack", due = "0", payload;
    if (how == Settle::kRetry) {
      mode = "retry";
      int64_t delay = c->target.backoff_ms;
      for (int64_t i = 1; i < d.msg.attempts && delay < (int64_t(1) << 40); ++i) delay *= 2;
      due = std::to_string(now_ms() + delay);
      payload = json::serialize(encode(d.msg));
    } else if (how == Settle::kDeadLetter) {
      mode = "dead";
      second = c->dlq;
      json::object o = encode(d.msg);
      o["error"] = error;
      o["failed_at"] = now_ms();
      payload = json::serialize(o);
    }
    auto alive = alive_;
    const uint64_t id = c->id;
    cmd_->eval(settle_script(), {c->stream, second}, {kGroup, entry, mode, due, payload},
               [this, alive, id, finish](Reply r) {
                 if (!*alive) return;
                 if (Consumer* c = find(id)) pump(*c);
                 if (r.is_error()) return finish(r.str);
                 finish(std::nullopt);
               });
    pump(*c);
  }

  void counts(std::vector<BrokerTarget> targets,
              std::function<void(QueueCounts, std::optional<std::string>)> done) override {
    struct Acc {
      QueueCounts k;
      size_t left = 0;
      std::optional<std::string> err;
    };
    auto acc = std::make_shared<Acc>();
    acc->left = targets.size() * 4;
    if (acc->left == 0) return done({}, std::nullopt);
    auto one = [acc, done](Reply r, int64_t QueueCounts::*field) {
      if (r.is_error())
        acc->err = r.str;
      else
        acc->k.*field += r.integer;
      if (--acc->left == 0) done(acc->k, acc->err);
    };
    for (auto& t : targets) {
      const std::string k = internal_key(t);
      cmd_->command({"XLEN", stream_key(k)}, [one](Reply r) { one(r, &QueueCounts::ready); });
      cmd_->command({"ZCARD", delayed_key(k)}, [one](Reply r) { one(r, &QueueCounts::ready); });
      cmd_->command({"LLEN", dlq_key(k)}, [one](Reply r) { one(r, &QueueCounts::dead); });
      cmd_->command({"GET", fifo_prefix(k) + "size"}, [one](Reply r) {
        if (r.is_string()) r.integer = std::max<int64_t>(0, std::atoll(r.str.c_str()));
        one(r, &QueueCounts::ready);
      });
    }
  }

  void dead_counts(
      std::vector<BrokerTarget> targets,
      std::function<void(std::vector<int64_t>, std::optional<std::string>)> done) override {
    struct Acc {
      std::vector<int64_t> n;
      size_t left = 0;
      std::optional<std::string> err;
    };
    auto acc = std::make_shared<Acc>();
    acc->n.resize(targets.size());
    acc->left = targets.size();
    if (acc->left == 0) return done({}, std::nullopt);
    for (size_t i = 0; i < targets.size(); ++i)
      cmd_->command({"LLEN", dlq_key(internal_key(targets[i]))}, [acc, i, done](Reply r) {
        if (r.is_error())
          acc->err = r.str;
        else
          acc->n[i] = r.integer;
        if (--acc->left == 0) done(acc->n, acc->err);
      });
  }

  void dead_letters(
      std::vector<BrokerTarget> targets, int64_t offset, int64_t limit,
      std::function<void(std::vector<DeadLetter>, std::optional<std::string>)> done) override {
    struct Acc {
      std::vector<std::vector<DeadLetter>> per;
      size_t left = 0;
      std::optional<std::string> err;
    };
    auto acc = std::make_shared<Acc>();
    acc->per.resize(targets.size());
    acc->left = targets.size();
    if (acc->left == 0) return done({}, std::nullopt);
    const int64_t last = offset + limit - 1;
    for (size_t i = 0; i < targets.size(); ++i)
      cmd_->command({"LRANGE", dlq_key(internal_key(targets[i])), "0", std::to_string(last)},
                    [acc, i, offset, limit, done](Reply r) {
                      if (r.is_error()) acc->err = r.str;
                      for (auto& e : r.elements) {
                        DeadLetter d;
                        if (decode(e.str, d.msg, &d.error, &d.failed_at_ms))
                          acc->per[i].push_back(std::move(d));
                      }
                      if (--acc->left > 0) return;
                      std::vector<DeadLetter> all, out;
                      for (auto& v : acc->per)
                        for (auto& d : v) all.push_back(std::move(d));
                      for (int64_t j = offset;
                           j < int64_t(all.size()) && int64_t(out.size()) < limit; ++j)
                        out.push_back(std::move(all[j]));
                      done(std::move(out), acc->err);
                    });
  }

  void redrive(std::vector<BrokerTarget> targets, std::optional<std::string> id,
               std::function<void(int64_t, std::optional<std::string>)> done) override {
    dlq_move(std::move(targets), id.value_or(""), "redrive", std::move(done));
  }

  void discard(std::vector<BrokerTarget> targets, std::string id,
               std::function<void(int64_t, std::optional<std::string>)> done) override {
    dlq_move(std::move(targets), id, "discard", std::move(done));
  }

 private:
  // A delivery not settled yet: its stream entry id, or (FIFO) its group and claim token.
  struct Held {
    std::string entry;
    std::string token;
  };

  struct Consumer {
    uint64_t id = 0;
    BrokerTarget target;
    std::string key, stream, delayed, dlq;
    bool fifo = false;
    std::string prefix;  // FIFO keys
    int64_t prefetch = 1;
    std::function<void(Delivery)> on;
    bool group_ready = false, preparing = false, reading = false, cancelled = false;
    bool claiming = false;
    bool woken = false;  // FIFO: a wake-up came while a claim was running
    std::string claim_cursor = "0-0";
    int64_t inflight = 0;
    uint64_t next_handle = 0;
    std::map<uint64_t, Held> held;  // by handle
  };

  Consumer* find(uint64_t id) {
    auto it = consumers_.find(id);
    return it == consumers_.end() ? nullptr : it->second.get();
  }

  // Creates the consumer group (and, for a topic, registers the subscriber); then reads.
  void prepare(Consumer& c) {
    if (c.preparing || stopped_) return;
    c.preparing = true;
    if (!c.target.named) {
      cmd_->command({c.fifo ? "SADD" : "SREM", fifo_subs_key(c.target.name), c.target.function_id},
                    [](Reply) {});
      cmd_->command({"SADD", subs_key(c.target.name), c.target.function_id}, [](Reply) {});
    }
    if (c.fifo) {
      c.preparing = false;
      c.group_ready = true;
      pump(c);
      return;
    }
    auto alive = alive_;
    const uint64_t id = c.id;
    cmd_->command({"XGROUP", "CREATE", c.stream, kGroup, "0", "MKSTREAM"}, [this, alive,
                                                                            id](Reply r) {
      if (!*alive) return;
      Consumer* c = find(id);
      if (!c) return;
      c->preparing = false;
      if (r.is_error() && r.str.find("BUSYGROUP") == std::string::npos) {
        spdlog::error("iii-queue: cannot create the consumer group of {}: {}", c->stream, r.str);
        return;
      }
      c->group_ready = true;
      reclaim(*c);
      pump(*c);
    });
  }

  void deliver_entries(Consumer& c, const Reply& entries) {
    for (auto& e : entries.elements) {
      if (e.elements.size() < 2) continue;
      const std::string& entry_id = e.elements[0].str;
      const Reply& fields = e.elements[1];
      std::string m;
      for (size_t i = 0; i + 1 < fields.elements.size(); i += 2)
        if (fields.elements[i].str == "m") m = fields.elements[i + 1].str;
      Delivery d;
      if (fields.elements.empty() || !decode(m, d.msg)) {
        // Deleted meanwhile (nil fields) or not ours: drop it from the group.
        cmd_->command({"XACK", c.stream, kGroup, entry_id}, [](Reply) {});
        continue;
      }
      bool dup = false;
      for (auto& [h, x] : c.held)
        if (x.entry == entry_id) dup = true;
      if (dup) continue;
      d.consumer = c.id;
      d.handle = ++c.next_handle;
      c.held[d.handle] = Held{entry_id, {}};
      ++c.inflight;
      boost::asio::post(io_, [alive = alive_, this, id = c.id, d = std::move(d)]() mutable {
        if (!*alive) return;
        if (Consumer* c = find(id)) c->on(std::move(d));
      });
    }
  }

  void pump(Consumer& c) {
    if (c.fifo && c.reading) c.woken = true;
    if (stopped_ || c.cancelled || !c.group_ready || c.reading) return;
    if (c.fifo) return claim_groups(c);
    // Under load, read in batches: wait until a quarter of the slots are free.
    const int64_t free_slots = c.prefetch - c.inflight;
    if (free_slots <= 0 || (c.inflight > 0 && free_slots < std::max<int64_t>(1, c.prefetch / 4)))
      return;
    c.reading = true;
    auto alive = alive_;
    const uint64_t id = c.id;
    rd_->command({"XREADGROUP", "GROUP", kGroup, me_, "COUNT",
                  std::to_string(c.prefetch - c.inflight), "STREAMS", c.stream, ">"},
                 [this, alive, id](Reply r) {
                   if (!*alive) return;
                   Consumer* c = find(id);
                   if (!c) return;
                   c->reading = false;
                   if (r.is_error()) {
                     if (r.str.find("NOGROUP") != std::string::npos) {
                       c->group_ready = false;
                       prepare(*c);
                     }
                     return;
                   }
                   bool got = false;
                   for (auto& s : r.elements)
                     if (s.elements.size() >= 2 && !s.elements[1].elements.empty()) {
                       got = true;
                       deliver_entries(*c, s.elements[1]);
                     }
                   if (got) pump(*c);
                 });
  }

  // Claims entries whose engine stopped settling them (idle longer than the visibility
  // timeout), walking the pending list with XAUTOCLAIM's cursor.
  void reclaim(Consumer& c) {
    if (stopped_ || !c.group_ready || c.claiming || c.inflight >= c.prefetch) return;
    c.claiming = true;
    auto alive = alive_;
    const uint64_t id = c.id;
    rd_->command({"XAUTOCLAIM", c.stream, kGroup, me_, std::to_string(opts_.visibility_timeout_ms),
                  c.claim_cursor, "COUNT", std::to_string(c.prefetch - c.inflight)},
                 [this, alive, id](Reply r) {
                   if (!*alive) return;
                   Consumer* c = find(id);
                   if (!c) return;
                   c->claiming = false;
                   if (r.is_error() || r.elements.size() < 2) return;
                   c->claim_cursor = r.elements[0].str.empty() ? "0-0" : r.elements[0].str;
                   if (!r.elements[1].elements.empty())
                     spdlog::warn("iii-queue: {} message(s) of {} reclaimed after {} ms idle",
                                  r.elements[1].elements.size(), c->key,
                                  opts_.visibility_timeout_ms);
                   deliver_entries(*c, r.elements[1]);
                 });
  }

  // Keeps the entries we are handling from looking abandoned.
  void refresh(Consumer& c) {
    if (c.held.empty()) return;
    if (c.fifo) {
      std::vector<std::string> args{c.prefix, std::to_string(opts_.visibility_timeout_ms)};
      for (auto& [h, x] : c.held) {
        args.push_back(x.entry);
        args.push_back(x.token);
      }
      cmd_->eval(fifo_renew_script(), {c.prefix + "owned"}, std::move(args), [](Reply) {});
      return;
    }
    std::vector<std::string> args{"XCLAIM", c.stream, kGroup, me_, "0"};
    for (auto& [h, x] : c.held) args.push_back(x.entry);
    args.push_back("JUSTID");
    cmd_->command(std::move(args), [](Reply) {});
  }

  void arm() {
    if (stopped_) return;
    // Often enough to renew FIFO leases well within a short visibility timeout.
    const int64_t every = std::min(opts_.poll_interval_ms, opts_.visibility_timeout_ms / 4);
    tick_.expires_after(std::chrono::milliseconds(std::max<int64_t>(10, every)));
    tick_.async_wait([this, alive = alive_](boost::system::error_code ec) {
      if (ec || !*alive) return;
      on_tick();
      arm();
    });
  }

  void on_tick() {
    if (!cmd_->ready()) return;
    const int64_t now = now_ms();
    const bool claim = now - last_claim_ >= std::max<int64_t>(100, opts_.visibility_timeout_ms / 3);
    if (claim) last_claim_ = now;
    const bool renew = now - last_renew_ >= std::max<int64_t>(10, opts_.visibility_timeout_ms / 3);
    if (renew) last_renew_ = now;
    for (auto& [id, c] : consumers_) {
      if (!c->group_ready) {
        prepare(*c);
        continue;
      }
      if (c->fifo) {
        reap(*c);
        if (renew) refresh(*c);
        pump(*c);
        continue;
      }
      cmd_->eval(move_due_script(), {c->stream, c->delayed}, {std::to_string(now), c->key, kWake},
                 [](Reply) {});
      if (claim) {
        refresh(*c);
        reclaim(*c);
      }
      pump(*c);
    }
  }

  // FIFO: claims up to the free slots' worth of ready groups and delivers their heads.
  void claim_groups(Consumer& c) {
    const int64_t free_slots = c.prefetch - c.inflight;
    if (free_slots <= 0) return;
    c.reading = true;
    c.woken = false;
    c.inflight += free_slots;  // reserved until the reply says how many groups came
    auto alive = alive_;
    const uint64_t id = c.id;
    rd_->eval(fifo_claim_script(), {c.prefix + "ready"},
              {c.prefix, std::to_string(free_slots), std::to_string(opts_.visibility_timeout_ms),
               me_ + ":" + std::to_string(++claims_)},
              [this, alive, id, free_slots](Reply r) {
                if (!*alive) return;
                Consumer* c = find(id);
                if (!c) return;
                c->reading = false;
                c->inflight -= free_slots - int64_t(r.is_error() ? 0 : r.elements.size() / 3);
                if (r.is_error()) return;
                size_t got = 0;
                for (size_t i = 0; i + 2 < r.elements.size(); i += 3, ++got)
                  deliver_head(*c, r.elements[i].str, r.elements[i + 1].str, r.elements[i + 2].str);
                // Fewer than asked: `ready` is empty now; the next wake-up or poll reads again.
                if (int64_t(got) == free_slots || c->woken) pump(*c);
              });
  }

  // FIFO: hands out the head of a group this consumer has just leased (slot already counted).
  void deliver_head(Consumer& c, const std::string& g, const std::string& head,
                    const std::string& token) {
    Delivery d;
    if (!decode(head, d.msg)) {
      // Not a message of ours: drop it, or the group would be stuck behind it.
      spdlog::error("iii-queue: dropping an undecodable message of {} (group {})", c.key, g);
      --c.inflight;
      rd_->eval(fifo_settle_script(), {c.prefix + "g:" + g},
                {c.prefix, g, token, "ack", "", "0", c.key, kWake, "0", ""}, [](Reply) {});
      return;
    }
    d.msg.group = g;
    d.consumer = c.id;
    d.handle = ++c.next_handle;
    c.held[d.handle] = Held{g, token};
    boost::asio::post(io_, [alive = alive_, this, id = c.id, d = std::move(d)]() mutable {
      if (!*alive) return;
      if (Consumer* c = find(id)) c->on(std::move(d));
    });
  }

  void settle_fifo(Consumer& c, const Delivery& d, const Held& held, Settle how,
                   const std::string& error,
                   std::function<void(std::optional<std::string>)> finish) {
    std::string mode = "ack", payload, delay = "0";
    if (how == Settle::kRequeue) {
      mode = "requeue";
    } else if (how == Settle::kRetry) {
      mode = "retry";
      int64_t ms = c.target.backoff_ms;
      for (int64_t i = 1; i < d.msg.attempts && ms < (int64_t(1) << 40); ++i) ms *= 2;
      delay = std::to_string(ms);
      QueueMessage m = d.msg;
      if (!c.target.named) m.group.reset();  // a topic queue is one group: none in the message
      payload = json::serialize(encode(m));
    } else if (how == Settle::kDeadLetter) {
      mode = "dead";
      QueueMessage m = d.msg;
      if (!c.target.named) m.group.reset();
      json::object o = encode(m);
      o["error"] = error;
      o["failed_at"] = now_ms();
      payload = json::serialize(o);
    }
    const std::string g = held.entry;
    // Ack / dead letter: the group may go on with this consumer (keeping the slot meanwhile).
    const bool go_on =
        (how == Settle::kAck || how == Settle::kDeadLetter) && !stopped_ && !c.cancelled;
    const std::string next = go_on ? me_ + ":" + std::to_string(++claims_) + ":n" : "";
    if (go_on) ++c.inflight;
    auto alive = alive_;
    const uint64_t id = c.id;
    // On the consumers' connection: the next claim (pump) follows the settle in order, so it
    // sees the group released, and neither waits behind the producers' scripts.
    rd_->eval(fifo_settle_script(), {c.prefix + "g:" + g},
              {c.prefix, g, held.token, mode, payload, delay, c.key, kWake,
               std::to_string(opts_.visibility_timeout_ms), next},
              [this, alive, id, g, go_on, finish](Reply r) {
                if (!*alive) return;
                Consumer* c = find(id);
                const bool continued = !r.is_error() && r.elements.size() == 3;
                if (c && continued)
                  deliver_head(*c, g, r.elements[1].str, r.elements[2].str);
                else if (c && go_on)
                  --c->inflight;
                if (r.is_error()) {
                  if (c) pump(*c);
                  return finish(r.str);
                }
                if (c && !r.elements.empty() && r.elements[0].integer == 0)
                  spdlog::warn(
                      "iii-queue: group {} of {} was taken over by another consumer (lease "
                      "expired) before this one settled its head",
                      g, c->key);
                // Continued: `ready` was empty; a group that gets ready later wakes us.
                if (c && !continued) pump(*c);
                finish(std::nullopt);
              });
    if (!go_on) pump(c);
  }

  // FIFO: due retries and groups whose lease expired back to `ready` (any engine does it).
  void reap(Consumer& c) {
    auto alive = alive_;
    const uint64_t id = c.id;
    cmd_->eval(fifo_reap_script(), {c.prefix + "ready"}, {c.prefix, c.key, kWake},
               [this, alive, id](Reply r) {
                 if (!*alive || r.is_error() || r.elements.size() < 2) return;
                 Consumer* c = find(id);
                 if (!c) return;
                 if (r.elements[0].integer > 0)
                   spdlog::warn(
                       "iii-queue: {} group(s) of {} taken back after {} ms without a "
                       "lease renewal",
                       r.elements[0].integer, c->key, opts_.visibility_timeout_ms);
                 if (r.elements[0].integer + r.elements[1].integer > 0) pump(*c);
               });
  }

  void dlq_move(std::vector<BrokerTarget> targets, std::string id, std::string mode,
                std::function<void(int64_t, std::optional<std::string>)> done) {
    if (targets.empty()) return done(0, std::nullopt);
    struct Acc {
      int64_t n = 0;
      size_t left = 0;
      std::optional<std::string> err;
    };
    auto acc = std::make_shared<Acc>();
    acc->left = targets.size();
    for (auto& t : targets) {
      const std::string k = internal_key(t);
      cmd_->eval(dlq_move_script(), {stream_key(k), dlq_key(k)},
                 {id, k, kWake, mode, t.fifo ? "1" : "0", fifo_prefix(k)}, [acc, done](Reply r) {
                   if (r.is_error())
                     acc->err = r.str;
                   else
                     acc->n += r.integer;
                   if (--acc->left == 0) done(acc->n, acc->err);
                 });
    }
  }

  boost::asio::io_context& io_;
  RedisBrokerOptions opts_;
  boost::asio::steady_timer tick_;
  std::unique_ptr<rds::RedisClient> cmd_, rd_, sub_;
  std::string me_;
  std::shared_ptr<bool> alive_;
  bool started_ = false, stopped_ = false;
  uint64_t next_id_ = 0;
  uint64_t claims_ = 0;
  int64_t last_claim_ = 0, last_renew_ = 0;
  std::map<uint64_t, std::unique_ptr<Consumer>> consumers_;
  std::vector<std::unique_ptr<Consumer>> retired_;
};

}  // namespace

std::unique_ptr<Broker> make_redis_broker(boost::asio::io_context& io,
                                          const RedisBrokerOptions& opts) {
  return std::make_unique<RedisBroker>(io, opts);
}

}  // namespace iii::workers::queue
