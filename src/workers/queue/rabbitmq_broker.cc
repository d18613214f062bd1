// Topology (modules.md §4.6), all durable, messages persistent (delivery_mode 2):
//   named queue n: direct exchange `iii.__fn_queue::n` → queue `iii.__fn_queue::n.queue`
//     (routing key n; dead-letter exchange `iii.__fn_queue::n::dlq`); retry: direct exchange
//     `iii.__fn_queue::n::retry` → queue `iii.__fn_queue::n::retry.queue` with
//     x-message-ttl = backoff_ms, dead-lettering back to `iii.__fn_queue::n`; DLQ: fanout
//     exchange `iii.__fn_queue::n::dlq` → queue `iii.__fn_queue::n::dlq.queue`. FIFO named
//     queues: the main queue also has x-single-active-consumer: true (their retries are inline,
//     in broker_worker.cc, so their retry queue stays empty).
//   topic t, subscribed function f: fanout exchange `iii.t.exchange` → queue `iii.t.f.queue`;
//     retry queue `iii.t.f.retry` (TTL, dead-lettering to `iii.t.f.queue` through the default
//     exchange, so a retry reaches only f); DLQ queue `iii.t.f.dlq`.
// Headers: function_id, traceparent, baggage, x-attempt (attempts so far); dead letters also
// x-error and x-failed-at (unix ms).
//
// A failed delivery is settled by publishing its next form (retry or dead letter) on the
// confirm channel and, once the broker confirmed it, acknowledging the original: a crash in
// between delivers it again, never loses it.
#include "workers/queue/rabbitmq_broker.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

namespace iii::workers::queue {
namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

amqp_bytes_t B(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }
std::string S(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }

struct Url {
  std::string host, user, password, vhost;
  int port = 5672;
  bool ssl = false;
  std::string shown;  // without credentials
};

Url parse_url(const std::string& text) {
  std::string buf = text;
  amqp_connection_info ci;
  amqp_default_connection_info(&ci);
  if (amqp_parse_url(buf.data(), &ci) != AMQP_STATUS_OK)
    throw std::invalid_argument("invalid AMQP URL '" + redacted_amqp_url(text) + "'");
  Url u;
  u.host = ci.host;
  u.user = ci.user;
  u.password = ci.password;
  u.vhost = ci.vhost;
  u.port = ci.port;
  u.ssl = ci.ssl != 0;
  u.shown = std::string(u.ssl ? "amqps://" : "amqp://") + u.host + ":" + std::to_string(u.port) +
            (u.vhost == "/" ? "" : "/" + u.vhost);
  return u;
}

std::string reply_error(const amqp_rpc_reply_t& r, const std::string& what) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {};
    case AMQP_RESPONSE_NONE:
      return what + ": no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return what + ": " + amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return what + ": the broker closed the connection (" + std::to_string(m->reply_code) + " " +
               S(m->reply_text) + ")";
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return what + ": the broker closed the channel (" + std::to_string(m->reply_code) + " " +
               S(m->reply_text) + ")";
      }
      return what + ": broker error";
  }
  return what + ": unknown reply";
}

// The names of one target's exchanges and queues.
struct Names {
  std::string exchange, exchange_type, routing_key, queue;
  std::string retry_exchange, retry_key, retry_queue;
  std::string dlq_exchange, dlq_key, dlq_queue;
  int64_t backoff_ms = 1000;
  bool single_active = false;  // x-single-active-consumer on the main queue
};

Names names_of(const BrokerTarget& t) {
  Names n;
  n.backoff_ms = t.backoff_ms;
  n.single_active = t.single_active;
  if (t.named) {
    const std::string base = "iii.__fn_queue::" + t.name;
    n.exchange = base;
    n.exchange_type = "direct";
    n.routing_key = t.name;
    n.queue = base + ".queue";
    n.retry_exchange = base + "::retry";
    n.retry_key = t.name;
    n.retry_queue = base + "::retry.queue";
    n.dlq_exchange = base + "::dlq";
    n.dlq_key = t.name;
    n.dlq_queue = base + "::dlq.queue";
  } else {
    const std::string base = "iii." + t.name + "." + t.function_id;
    n.exchange = "iii." + t.name + ".exchange";
    n.exchange_type = "fanout";
    n.queue = base + ".queue";
    n.retry_queue = base + ".retry";
    n.retry_key = n.retry_queue;  // through the default exchange
    n.dlq_queue = base + ".dlq";
    n.dlq_key = n.dlq_queue;
  }
  return n;
}

// A field table built from owned strings.
class Table {
 public:
  void str(const char* key, const std::string& v) {
    strings_.push_back(v);
    amqp_table_entry_t e{};
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = B(strings_.back());
    entries_.push_back(e);
  }
  void boolean(const char* key, bool v) {
    amqp_table_entry_t e{};
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = v ? 1 : 0;
    entries_.push_back(e);
  }
  void i64(const char* key, int64_t v) {
    amqp_table_entry_t e{};
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    entries_.push_back(e);
  }
  amqp_table_t get() {
    return amqp_table_t{static_cast<int>(entries_.size()),
                        entries_.empty() ? nullptr : entries_.data()};
  }

 private:
  std::deque<std::string> strings_;  // stable addresses
  std::vector<amqp_table_entry_t> entries_;
};

std::optional<int64_t> int_of(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_I8:
      return v.value.i8;
    case AMQP_FIELD_KIND_U8:
      return v.value.u8;
    case AMQP_FIELD_KIND_I16:
      return v.value.i16;
    case AMQP_FIELD_KIND_U16:
      return v.value.u16;
    case AMQP_FIELD_KIND_I32:
      return v.value.i32;
    case AMQP_FIELD_KIND_U32:
      return v.value.u32;
    case AMQP_FIELD_KIND_I64:
      return v.value.i64;
    case AMQP_FIELD_KIND_U64:
      return int64_t(v.value.u64);
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      try {
        return std::stoll(S(v.value.bytes));
      } catch (...) {
        return std::nullopt;
      }
    default:
      return std::nullopt;
  }
}

std::optional<std::string> str_of(const amqp_field_value_t& v) {
  if (v.kind == AMQP_FIELD_KIND_UTF8 || v.kind == AMQP_FIELD_KIND_BYTES) return S(v.value.bytes);
  return std::nullopt;
}

struct Received {
  QueueMessage msg;
  std::string error;
  int64_t failed_at_ms = 0;
};

Received read_message(const amqp_basic_properties_t& p, amqp_bytes_t body) {
  Received r;
  r.msg.data = S(body);
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) r.msg.id = r.msg.message_id = S(p.message_id);
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const auto& e = p.headers.entries[i];
      const std::string key = S(e.key);
      if (key == "x-attempt")
        r.msg.attempts = int_of(e.value).value_or(0);
      else if (key == "x-failed-at")
        r.failed_at_ms = int_of(e.value).value_or(0);
      else if (key == "x-created-at")
        r.msg.created_at_ms = int_of(e.value).value_or(0);
      else if (auto s = str_of(e.value)) {
        if (key == "function_id")
          r.msg.function_id = *s;
        else if (key == "traceparent")
          r.msg.traceparent = *s;
        else if (key == "baggage")
          r.msg.baggage = *s;
        else if (key == "x-error")
          r.error = *s;
      }
    }
  }
  return r;
}

// One AMQP connection (not thread-safe: each thread has its own).
class Conn {
 public:
  ~Conn() { close(false); }
  amqp_connection_state_t get() const { return c_; }
  explicit operator bool() const { return c_ != nullptr; }

  std::optional<std::string> open(const Url& u) {
    close(false);
    c_ = amqp_new_connection();
    amqp_socket_t* sock = u.ssl ? amqp_ssl_socket_new(c_) : amqp_tcp_socket_new(c_);
    if (!sock) {
      close(false);
      return "cannot create a socket";
    }
    if (u.ssl) {
      amqp_ssl_socket_set_verify_peer(sock, 1);
      amqp_ssl_socket_set_verify_hostname(sock, 1);
    }
    timeval tv{3, 0};
    const int st = amqp_socket_open_noblock(sock, u.host.c_str(), u.port, &tv);
    if (st != AMQP_STATUS_OK) {
      close(false);
      return std::string("cannot connect: ") + amqp_error_string2(st);
    }
    const auto r = amqp_login(c_, u.vhost.c_str(), 0, 131072, 10, AMQP_SASL_METHOD_PLAIN,
                              u.user.c_str(), u.password.c_str());
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      auto e = reply_error(r, "login");
      close(false);
      return e;
    }
    return std::nullopt;
  }

  std::optional<std::string> open_channel(int ch) {
    amqp_channel_open(c_, ch);
    auto e = reply_error(amqp_get_rpc_reply(c_), "channel.open");
    if (!e.empty()) return e;
    return std::nullopt;
  }

  void close(bool graceful) {
    if (!c_) return;
    if (graceful) amqp_connection_close(c_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c_);
    c_ = nullptr;
  }

 private:
  amqp_connection_state_t c_ = nullptr;
};

// The broker closed the channel (the connection stays): e.g. 406 PRECONDITION_FAILED.
bool channel_closed(const std::string& e) {
  return e.find("the broker closed the channel") != std::string::npos;
}

// A queue declared with other arguments than ours (406 PRECONDITION_FAILED, "inequivalent arg").
bool inequivalent(const std::string& e) {
  return e.find("(406 PRECONDITION_FAILED") != std::string::npos;
}

// Answers the broker's channel.close (rabbitmq-c leaves it to us), so that the channel number
// can be opened again.
void close_ok(amqp_connection_state_t c, int ch) {
  amqp_channel_close_ok_t ok{};
  amqp_send_method(c, uint16_t(ch), AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
}

// What to tell the user when queue `name` of `n` exists on the broker with other arguments.
std::string refused_queue_error(const Names& n, const std::string& name,
                                const std::string& broker_error) {
  std::string why = "other arguments than this config gives it";
  if (name == n.queue)
    why = n.single_active ? "a FIFO queue is declared with x-single-active-consumer: true"
                          : "a standard queue is declared without x-single-active-consumer";
  else if (name == n.retry_queue)
    why = "its x-message-ttl is backoff_ms";
  return "queue '" + name + "' exists on the broker with other arguments (" + why +
         "): delete it (e.g. `rabbitmqctl delete_queue " + name +
         "`, after moving its messages elsewhere) so that it is declared again. " + broker_error;
}

struct Counts {
  int64_t ready = 0, retry = 0, dead = 0;
};

// Declares a target's exchanges and queues on channel `ch` (idempotent); returns the counts.
std::optional<std::string> declare(amqp_connection_state_t c, int ch, const Names& n,
                                   Counts* counts = nullptr) {
  auto rpc = [&](const std::string& what) -> std::optional<std::string> {
    auto e = reply_error(amqp_get_rpc_reply(c), what);
    if (e.empty()) return std::nullopt;
    return e;
  };
  auto exchange = [&](const std::string& name, const char* type) {
    amqp_exchange_declare(c, ch, B(name), amqp_cstring_bytes(type), 0, 1, 0, 0, amqp_empty_table);
    return rpc("exchange.declare " + name);
  };
  auto queue = [&](const std::string& name, Table& args, int64_t* count) {
    auto* ok = amqp_queue_declare(c, ch, B(name), 0, 1, 0, 0, args.get());
    auto e = rpc("queue.declare " + name);
    if (!e && ok && count) *count = ok->message_count;
    if (e && inequivalent(*e)) e = refused_queue_error(n, name, *e);
    return e;
  };
  auto bind = [&](const std::string& q, const std::string& ex, const std::string& key) {
    amqp_queue_bind(c, ch, B(q), B(ex), B(key), amqp_empty_table);
    return rpc("queue.bind " + q);
  };
  Counts local;
  Counts& k = counts ? *counts : local;
  if (auto e = exchange(n.exchange, n.exchange_type.c_str())) return e;
  Table main_args, retry_args, dlq_args;
  if (!n.dlq_exchange.empty()) {
    main_args.str("x-dead-letter-exchange", n.dlq_exchange);
  } else {
    main_args.str("x-dead-letter-exchange", "");
    main_args.str("x-dead-letter-routing-key", n.dlq_queue);
  }
  if (n.single_active) main_args.boolean("x-single-active-consumer", true);
  if (auto e = queue(n.queue, main_args, &k.ready)) return e;
  if (auto e = bind(n.queue, n.exchange, n.routing_key)) return e;
  retry_args.i64("x-message-ttl", n.backoff_ms);
  if (!n.retry_exchange.empty()) {
    retry_args.str("x-dead-letter-exchange", n.exchange);
    if (auto e = exchange(n.retry_exchange, "direct")) return e;
  } else {
    retry_args.str("x-dead-letter-exchange", "");
    retry_args.str("x-dead-letter-routing-key", n.queue);
  }
  if (auto e = queue(n.retry_queue, retry_args, &k.retry)) return e;
  if (!n.retry_exchange.empty())
    if (auto e = bind(n.retry_queue, n.retry_exchange, n.retry_key)) return e;
  if (!n.dlq_exchange.empty())
    if (auto e = exchange(n.dlq_exchange, "fanout")) return e;
  if (auto e = queue(n.dlq_queue, dlq_args, &k.dead)) return e;
  if (!n.dlq_exchange.empty())
    if (auto e = bind(n.dlq_queue, n.dlq_exchange, n.dlq_key)) return e;
  return std::nullopt;
}

constexpr int kControlChannel = 1;
constexpr int kConfirmChannel = 2;

class RabbitBroker : public Broker {
 public:
  RabbitBroker(const std::string& url, Poster post)
      : url_(parse_url(url)), post_(std::move(post)), shared_(std::make_shared<Shared>()) {
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
  }

  ~RabbitBroker() override {
    stop();
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  std::string kind() const override { return "rabbitmq"; }

  void start() override {
    if (started_) return;
    started_ = true;
    control_ = std::thread([this] { control_loop(); });
    consumer_ = std::thread([this] { consumer_loop(); });
  }

  void stop() override {
    shared_->closed = true;
    {
      std::lock_guard lk(mu_);
      if (stop_) return;
      stop_ = true;
    }
    cv_.notify_all();
    cv_consumer_.notify_all();
    wake();
    if (control_.joinable()) control_.join();
    if (consumer_.joinable()) consumer_.join();
  }

  void declare_named(const std::vector<BrokerTarget>& named) override {
    std::lock_guard lk(mu_);
    for (auto& t : named) named_.push_back(names_of(t));
  }

  void publish(const BrokerTarget& to, QueueMessage msg, Done done) override {
    Job j;
    const Names n = names_of(to);
    j.exchange = n.exchange;
    j.exchange_type = n.exchange_type;
    j.routing_key = n.routing_key;
    j.msg = std::move(msg);
    j.done = std::move(done);
    submit(std::move(j));
  }

  uint64_t consume(const BrokerTarget& from, int64_t prefetch,
                   std::function<void(Delivery)> on_delivery) override {
    auto c = std::make_shared<Consumer>();
    c->target = from;
    c->names = names_of(from);
    c->prefetch = std::clamp<int64_t>(prefetch, 1, 65535);
    c->on = std::make_shared<std::function<void(Delivery)>>(std::move(on_delivery));
    uint64_t id = 0;
    {
      std::lock_guard lk(mu_);
      id = c->id = ++next_consumer_;
      consumers_[id] = c;
    }
    wake();
    return id;
  }

  void cancel(uint64_t consumer) override {
    {
      std::lock_guard lk(mu_);
      auto it = consumers_.find(consumer);
      if (it == consumers_.end()) return;
      it->second->cancelled = true;
    }
    wake();
  }

  void settle(const Delivery& d, Settle how, const std::string& error, Done done) override {
    if (how == Settle::kAck || how == Settle::kRequeue) {
      push_ack({d.consumer, d.generation, d.handle, how == Settle::kAck});
      if (done) post([done] { done(std::nullopt); });
      return;
    }
    std::optional<BrokerTarget> target;
    {
      std::lock_guard lk(mu_);
      auto it = consumers_.find(d.consumer);
      if (it != consumers_.end()) target = it->second->target;
    }
    if (!target) {
      // Cancelled: its channel is closed, so the broker has the message back already.
      if (done) post([done] { done(std::nullopt); });
      return;
    }
    const Names n = names_of(*target);
    Job j;
    j.msg = d.msg;
    if (how == Settle::kRetry) {
      j.exchange = n.retry_exchange;
      j.routing_key = n.retry_key;
    } else {
      j.exchange = n.dlq_exchange;
      j.routing_key = n.dlq_key;
      j.dead = true;
      j.error = error;
      j.failed_at_ms = now_ms();
    }
    j.then_ack = Ack{d.consumer, d.generation, d.handle, true};
    j.done = std::move(done);
    submit(std::move(j));
  }

  bool current(const Delivery& d) override {
    std::lock_guard lk(mu_);
    auto it = consumers_.find(d.consumer);
    return it != consumers_.end() && it->second->live == d.generation;
  }

  void counts(std::vector<BrokerTarget> targets,
              std::function<void(QueueCounts, std::optional<std::string>)> done) override {
    auto out = std::make_shared<QueueCounts>();
    op(
        [this, targets, out](amqp_connection_state_t c) -> std::optional<std::string> {
          for (auto& t : targets) {
            Counts k;
            if (auto e = declare(c, kControlChannel, names_of(t), &k)) return e;
            out->ready += k.ready + k.retry;
            out->dead += k.dead;
          }
          return std::nullopt;
        },
        [done, out](std::optional<std::string> e) { done(*out, e); });
  }

  void dead_counts(
      std::vector<BrokerTarget> targets,
      std::function<void(std::vector<int64_t>, std::optional<std::string>)> done) override {
    auto out = std::make_shared<std::vector<int64_t>>();
    op(
        [targets, out](amqp_connection_state_t c) -> std::optional<std::string> {
          for (auto& t : targets) {
            Counts k;
            if (auto e = declare(c, kControlChannel, names_of(t), &k)) return e;
            out->push_back(k.dead);
          }
          return std::nullopt;
        },
        [done, out](std::optional<std::string> e) { done(*out, e); });
  }

  void dead_letters(
      std::vector<BrokerTarget> targets, int64_t offset, int64_t limit,
      std::function<void(std::vector<DeadLetter>, std::optional<std::string>)> done) override {
    auto out = std::make_shared<std::vector<DeadLetter>>();
    op(
        [this, targets, out, offset,
         limit](amqp_connection_state_t c) -> std::optional<std::string> {
          int64_t seen = 0;
          for (auto& t : targets) {
            if (seen >= offset + limit) break;
            const Names n = names_of(t);
            if (auto e = declare(c, kControlChannel, n)) return e;
            auto e = scan_dlq(c, n.dlq_queue, [&](Received& r) {
              if (seen++ >= offset) {
                DeadLetter d;
                d.msg = std::move(r.msg);
                d.error = std::move(r.error);
                d.failed_at_ms = r.failed_at_ms;
                out->push_back(std::move(d));
              }
              return seen < offset + limit ? Scan::kKeep : Scan::kKeepStop;
            });
            if (e) return e;
          }
          return std::nullopt;
        },
        [done, out](std::optional<std::string> e) { done(*out, e); });
  }

  void redrive(std::vector<BrokerTarget> targets, std::optional<std::string> id,
               std::function<void(int64_t, std::optional<std::string>)> done) override {
    auto n_moved = std::make_shared<int64_t>(0);
    op(
        [this, targets, id, n_moved](amqp_connection_state_t c) -> std::optional<std::string> {
          for (auto& t : targets) {
            const Names n = names_of(t);
            if (auto e = declare(c, kControlChannel, n)) return e;
            std::optional<std::string> err;
            auto e = scan_dlq(c, n.dlq_queue, [&](Received& r) {
              if (id && r.msg.id != *id) return Scan::kKeep;
              r.msg.attempts = 0;
              // Back to the target's own queue (for a topic: only this function).
              const std::string ex = t.named ? n.exchange : std::string();
              const std::string key = t.named ? n.routing_key : n.queue;
              if (auto pe = publish_confirmed(c, ex, key, r.msg)) {
                err = pe;
                return Scan::kKeepStop;
              }
              ++*n_moved;
              return id ? Scan::kRemoveStop : Scan::kRemove;
            });
            if (e) return e;
            if (err) return err;
            if (id && *n_moved) break;
          }
          return std::nullopt;
        },
        [done, n_moved](std::optional<std::string> e) { done(*n_moved, e); });
  }

  void discard(std::vector<BrokerTarget> targets, std::string id,
               std::function<void(int64_t, std::optional<std::string>)> done) override {
    auto n_gone = std::make_shared<int64_t>(0);
    op(
        [this, targets, id, n_gone](amqp_connection_state_t c) -> std::optional<std::string> {
          for (auto& t : targets) {
            const Names n = names_of(t);
            if (auto e = declare(c, kControlChannel, n)) return e;
            auto e = scan_dlq(c, n.dlq_queue, [&](Received& r) {
              if (r.msg.id != id) return Scan::kKeep;
              ++*n_gone;
              return Scan::kRemoveStop;
            });
            if (e) return e;
            if (*n_gone) break;
          }
          return std::nullopt;
        },
        [done, n_gone](std::optional<std::string> e) { done(*n_gone, e); });
  }

 private:
  struct Shared {
    bool closed = false;  // engine thread: no callback runs once set
  };

  struct Ack {
    uint64_t consumer = 0, generation = 0, tag = 0;
    bool ack = true;  // else nack with requeue
  };

  struct Job {
    // publish
    std::string exchange, exchange_type, routing_key;
    QueueMessage msg;
    bool dead = false;
    std::string error;
    int64_t failed_at_ms = 0;
    std::optional<Ack> then_ack;
    // or an operation on the control channel
    std::function<std::optional<std::string>(amqp_connection_state_t)> op;
    Done done;
  };

  struct Consumer {
    uint64_t id = 0;
    BrokerTarget target;
    Names names;
    int64_t prefetch = 1;
    std::shared_ptr<std::function<void(Delivery)>> on;
    bool cancelled = false;  // guarded by mu_
    // consumer thread only
    int channel = 0;
    uint64_t generation = 0;
    std::atomic<uint64_t> live{0};  // generation of the live channel, 0 when none (any thread)
    void gone() {
      channel = 0;
      live = 0;
    }
    Clock::time_point retry_at{};
    std::string last_error;  // of the last set-up attempt (logged once)
  };

  enum class Scan { kKeep, kKeepStop, kRemove, kRemoveStop };

  void post(std::function<void()> fn) {
    post_([shared = shared_, fn = std::move(fn)] {
      if (!shared->closed) fn();
    });
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void submit(Job j) {
    {
      std::lock_guard lk(mu_);
      if (!stop_) {
        jobs_.push_back(std::move(j));
        cv_.notify_one();
        return;
      }
    }
    if (j.done) post([done = std::move(j.done)] { done("the queue worker is shutting down"); });
  }

  void op(std::function<std::optional<std::string>(amqp_connection_state_t)> fn, Done done) {
    Job j;
    j.op = std::move(fn);
    j.done = std::move(done);
    submit(std::move(j));
  }

  void push_ack(Ack a) {
    {
      std::lock_guard lk(mu_);
      acks_.push_back(a);
    }
    wake();
  }

  std::string unavailable(const std::string& why) const {
    return "RabbitMQ is unavailable at " + url_.shown + ": " + why;
  }

  // ---- control thread

  void control_loop() {
    Conn conn;
    std::set<std::string> exchanges;  // declared on this connection
    // Named queues whose declaration the broker refused (406), by exchange: Names and error.
    std::map<std::string, std::pair<Names, std::string>> refused;
    std::string last_error = "not connected yet";
    auto backoff = std::chrono::milliseconds(200);
    Clock::time_point next_attempt{};
    size_t declared_named = 0;
    for (;;) {
      std::deque<Job> batch;
      {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, std::chrono::milliseconds(conn ? 1000 : 200),
                     [&] { return stop_ || !jobs_.empty(); });
        const size_t n = std::min<size_t>(jobs_.size(), 512);
        for (size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(jobs_.front()));
          jobs_.pop_front();
        }
        if (stop_ && batch.empty()) break;
      }
      if (!conn && Clock::now() >= next_attempt) {
        auto e = conn.open(url_);
        if (!e) e = conn.open_channel(kControlChannel);
        if (!e) e = conn.open_channel(kConfirmChannel);
        if (!e) {
          amqp_confirm_select(conn.get(), kConfirmChannel);
          auto r = reply_error(amqp_get_rpc_reply(conn.get()), "confirm.select");
          if (!r.empty()) e = r;
        }
        if (e) {
          if (*e != last_error) spdlog::error("iii-queue: {}", unavailable(*e));
          last_error = *e;
          conn.close(false);
          next_attempt = Clock::now() + backoff;
          backoff = std::min(backoff * 2, std::chrono::milliseconds(3000));
        } else {
          spdlog::info("iii-queue: connected to RabbitMQ at {}", url_.shown);
          backoff = std::chrono::milliseconds(200);
          exchanges.clear();
          refused.clear();
          declared_named = 0;
          seq_ = 0;
        }
      }
      auto drop = [&](const std::string& why) {
        spdlog::error("iii-queue: RabbitMQ connection lost ({}): {}", url_.shown, why);
        last_error = why;
        conn.close(false);
        next_attempt = Clock::now() + backoff;
      };
      if (conn) {
        // Named queues' topology, so that publishes have somewhere to go.
        std::vector<Names> named;
        {
          std::lock_guard lk(mu_);
          named.assign(named_.begin() + declared_named, named_.end());
        }
        for (auto& n : named) {
          if (auto e = declare(conn.get(), kControlChannel, n)) {
            spdlog::error("iii-queue: cannot declare {}: {}", n.queue, *e);
            if (inequivalent(*e)) {
              // This queue is unusable until someone deletes it; the others go on. Enqueues to
              // it fail with this error.
              if (auto re = reopen_control(conn.get())) {
                drop(*re);
                break;
              }
              refused[n.exchange] = {n, *e};
              ++declared_named;
              continue;
            }
            // Another broker error closes the control channel: a new connection tries again.
            drop(*e);
            break;
          }
          ++declared_named;
          exchanges.insert(n.exchange);
        }
      }
      if (!conn) {
        for (auto& j : batch) fail(j, unavailable(last_error));
        continue;
      }
      if (batch.empty()) {
        // Keeps heartbeats flowing and notices a closed socket.
        amqp_frame_t f;
        timeval tv{0, 0};
        const int st = amqp_simple_wait_frame_noblock(conn.get(), &f, &tv);
        if (st != AMQP_STATUS_TIMEOUT && st != AMQP_STATUS_OK) drop(amqp_error_string2(st));
        continue;
      }
      std::map<uint64_t, Job> pending;
      std::optional<std::string> error;
      for (auto& j : batch) {
        if (error) {
          fail(j, unavailable(*error));
          continue;
        }
        if (j.op) {
          error = wait_confirms(conn.get(), pending);
          if (error) {
            fail(j, unavailable(*error));
            continue;
          }
          auto e = j.op(conn.get());
          if (e && channel_closed(*e)) {
            // e.g. a console function over a queue declared with other arguments: the
            // connection stays, the control channel is opened again.
            if (auto re = reopen_control(conn.get())) error = *re;
          } else if (e && (e->find("closed") != std::string::npos ||
                           e->find("socket") != std::string::npos)) {
            error = *e;  // the connection is gone
          }
          finish(j, e);
          continue;
        }
        if (auto r = refused.find(j.exchange); r != refused.end()) {
          // Declared again first: someone may have deleted the old queue meanwhile.
          error = wait_confirms(conn.get(), pending);
          if (error) {
            fail(j, unavailable(*error));
            continue;
          }
          if (auto e = declare(conn.get(), kControlChannel, r->second.first)) {
            if (auto re = reopen_control(conn.get())) error = *re;
            fail(j, *e);
            continue;
          }
          spdlog::info("iii-queue: {} is declared now", r->second.first.queue);
          exchanges.insert(j.exchange);
          refused.erase(r);
        }
        if (!j.exchange_type.empty() && !exchanges.count(j.exchange)) {
          amqp_exchange_declare(conn.get(), kControlChannel, B(j.exchange), B(j.exchange_type), 0,
                                1, 0, 0, amqp_empty_table);
          auto e = reply_error(amqp_get_rpc_reply(conn.get()), "exchange.declare " + j.exchange);
          if (!e.empty()) {
            error = e;
            fail(j, unavailable(e));
            continue;
          }
          exchanges.insert(j.exchange);
        }
        if (auto e = basic_publish(conn.get(), j)) {
          error = e;
          fail(j, unavailable(*e));
          continue;
        }
        pending.emplace(++seq_, std::move(j));
      }
      if (!error) error = wait_confirms(conn.get(), pending);
      for (auto& [seq, j] : pending) fail(j, unavailable(error.value_or("no confirm")));
      if (error) drop(*error);
    }
    if (conn) conn.close(true);
  }

  // Opens the control channel again after the broker closed it.
  static std::optional<std::string> reopen_control(amqp_connection_state_t c) {
    close_ok(c, kControlChannel);
    amqp_channel_open(c, kControlChannel);
    auto e = reply_error(amqp_get_rpc_reply(c), "channel.open");
    if (!e.empty()) return e;
    return std::nullopt;
  }

  std::optional<std::string> basic_publish(amqp_connection_state_t c, const Job& j) {
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.delivery_mode = 2;
    p.timestamp = uint64_t((j.msg.created_at_ms ? j.msg.created_at_ms : now_ms()) / 1000);
    if (!j.msg.id.empty()) {
      p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
      p.message_id = B(j.msg.id);
    }
    Table h;
    if (!j.msg.function_id.empty()) h.str("function_id", j.msg.function_id);
    if (j.msg.traceparent) h.str("traceparent", *j.msg.traceparent);
    if (j.msg.baggage) h.str("baggage", *j.msg.baggage);
    h.i64("x-attempt", j.msg.attempts);
    if (j.msg.created_at_ms) h.i64("x-created-at", j.msg.created_at_ms);
    if (j.dead) {
      h.str("x-error", j.error);
      h.i64("x-failed-at", j.failed_at_ms);
    }
    p.headers = h.get();
    const int st = amqp_basic_publish(c, kConfirmChannel, B(j.exchange), B(j.routing_key), 0, 0, &p,
                                      B(j.msg.data));
    if (st != AMQP_STATUS_OK) return std::string("basic.publish: ") + amqp_error_string2(st);
    return std::nullopt;
  }

  // Publishes one message and waits for its confirm (console operations).
  std::optional<std::string> publish_confirmed(amqp_connection_state_t c, const std::string& ex,
                                               const std::string& key, const QueueMessage& m) {
    Job j;
    j.exchange = ex;
    j.routing_key = key;
    j.msg = m;
    if (auto e = basic_publish(c, j)) return e;
    std::map<uint64_t, Job> pending;
    pending.emplace(++seq_, std::move(j));
    return wait_confirms(c, pending);
  }

  // Waits until every pending publish is confirmed; completes each (acked or nacked).
  std::optional<std::string> wait_confirms(amqp_connection_state_t c,
                                           std::map<uint64_t, Job>& pending) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!pending.empty()) {
      amqp_frame_t f;
      timeval tv{1, 0};
      const int st = amqp_simple_wait_frame_noblock(c, &f, &tv);
      if (st == AMQP_STATUS_TIMEOUT) {
        if (Clock::now() > deadline) return "no publisher confirm within 10 s";
        continue;
      }
      if (st != AMQP_STATUS_OK)
        return std::string("waiting for confirms: ") + amqp_error_string2(st);
      if (f.frame_type != AMQP_FRAME_METHOD) continue;
      const auto id = f.payload.method.id;
      if (id == AMQP_CONNECTION_CLOSE_METHOD || id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_rpc_reply_t r{};
        r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
        r.reply = f.payload.method;
        return reply_error(r, "publish");
      }
      if (f.channel != kConfirmChannel) continue;
      uint64_t tag = 0;
      bool multiple = false, ok = true;
      if (id == AMQP_BASIC_ACK_METHOD) {
        auto* a = static_cast<amqp_basic_ack_t*>(f.payload.method.decoded);
        tag = a->delivery_tag;
        multiple = a->multiple;
      } else if (id == AMQP_BASIC_NACK_METHOD) {
        auto* a = static_cast<amqp_basic_nack_t*>(f.payload.method.decoded);
        tag = a->delivery_tag;
        multiple = a->multiple;
        ok = false;
      } else {
        continue;
      }
      auto end = multiple ? pending.upper_bound(tag) : pending.find(tag);
      auto begin = multiple ? pending.begin() : end;
      if (!multiple) {
        if (end == pending.end()) continue;
        end = std::next(end);
      }
      for (auto it = begin; it != end;) {
        if (ok)
          finish(it->second, std::nullopt);
        else
          fail(it->second, "the broker refused the message (basic.nack)");
        it = pending.erase(it);
      }
    }
    return std::nullopt;
  }

  // Reads the DLQ with basic.get; `visit` decides per message. Kept messages are returned to
  // the queue (nack with requeue) at the end, in their order.
  template <typename Visit>
  std::optional<std::string> scan_dlq(amqp_connection_state_t c, const std::string& queue,
                                      Visit visit) {
    uint64_t last_kept = 0;
    std::optional<std::string> error;
    for (;;) {
      const auto r = amqp_basic_get(c, kControlChannel, B(queue), 0);
      if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        error = reply_error(r, "basic.get " + queue);
        break;
      }
      if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) break;
      const uint64_t tag = static_cast<amqp_basic_get_ok_t*>(r.reply.decoded)->delivery_tag;
      amqp_message_t m;
      const auto rr = amqp_read_message(c, kControlChannel, &m, 0);
      if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
        error = reply_error(rr, "reading " + queue);
        break;
      }
      Received rec = read_message(m.properties, m.body);
      amqp_destroy_message(&m);
      const Scan s = visit(rec);
      if (s == Scan::kRemove || s == Scan::kRemoveStop) {
        if (amqp_basic_ack(c, kControlChannel, tag, 0) != AMQP_STATUS_OK) {
          error = "basic.ack failed";
          break;
        }
      } else {
        last_kept = tag;
      }
      if (s == Scan::kKeepStop || s == Scan::kRemoveStop) break;
    }
    if (last_kept && !error)
      if (amqp_basic_nack(c, kControlChannel, last_kept, 1, 1) != AMQP_STATUS_OK)
        error = "basic.nack failed";
    amqp_maybe_release_buffers(c);
    return error;
  }

  void finish(Job& j, std::optional<std::string> error) {
    if (!error && j.then_ack) push_ack(*j.then_ack);
    if (error && j.then_ack) {
      // The copy did not make it: the original goes back to the queue as it was.
      Ack a = *j.then_ack;
      a.ack = false;
      push_ack(a);
    }
    if (j.done) post([done = std::move(j.done), error] { done(error); });
    j.done = nullptr;
  }
  void fail(Job& j, const std::string& error) { finish(j, error); }

  // ---- consumer thread

  void consumer_loop() {
    Conn conn;
    std::string last_error;
    auto backoff = std::chrono::milliseconds(200);
    Clock::time_point next_attempt{};
    std::map<int, std::shared_ptr<Consumer>> by_channel;
    int next_channel = 1;
    for (;;) {
      std::vector<std::shared_ptr<Consumer>> all;
      std::deque<Ack> acks;
      {
        std::lock_guard lk(mu_);
        if (stop_) break;
        for (auto& [id, c] : consumers_) all.push_back(c);
        acks.swap(acks_);
      }
      if (!conn && Clock::now() >= next_attempt) {
        auto e = conn.open(url_);
        if (e) {
          if (*e != last_error) spdlog::warn("iii-queue: consumer: {}", unavailable(*e));
          last_error = *e;
          next_attempt = Clock::now() + backoff;
          backoff = std::min(backoff * 2, std::chrono::milliseconds(3000));
        } else {
          last_error.clear();
          backoff = std::chrono::milliseconds(200);
          ++conn_generation_;
          by_channel.clear();
          next_channel = 1;
          for (auto& c : all) c->gone();
        }
      }
      auto drop = [&](const std::string& why) {
        spdlog::warn("iii-queue: RabbitMQ consumer connection lost ({}): {}", url_.shown, why);
        last_error = why;
        conn.close(false);
        by_channel.clear();
        for (auto& c : all) c->gone();
        next_attempt = Clock::now() + backoff;
      };
      if (conn) {
        // Acknowledgements of deliveries made on live channels.
        for (auto& a : acks) {
          std::shared_ptr<Consumer> c;
          for (auto& x : all)
            if (x->id == a.consumer) c = x;
          if (!c || !c->channel || c->generation != a.generation) continue;
          const int st = a.ack ? amqp_basic_ack(conn.get(), c->channel, a.tag, 0)
                               : amqp_basic_nack(conn.get(), c->channel, a.tag, 0, 1);
          if (st != AMQP_STATUS_OK) {
            drop(std::string("basic.ack: ") + amqp_error_string2(st));
            break;
          }
        }
      }
      if (conn) {
        // Cancelled consumers close their channel; new ones are set up.
        for (auto& c : all) {
          bool cancelled;
          {
            std::lock_guard lk(mu_);
            cancelled = c->cancelled;
            if (cancelled) consumers_.erase(c->id);
          }
          if (cancelled) {
            if (c->channel) {
              amqp_channel_close(conn.get(), c->channel, AMQP_REPLY_SUCCESS);
              by_channel.erase(c->channel);
              c->gone();
            }
            continue;
          }
          if (c->channel || Clock::now() < c->retry_at) continue;
          const int ch = next_channel++;
          if (next_channel > 60000) next_channel = 1;
          auto e = setup(conn.get(), ch, *c);
          if (e) {
            if (*e != c->last_error)
              spdlog::error("iii-queue: cannot consume {}: {}", c->names.queue, *e);
            c->last_error = *e;
            if (channel_closed(*e)) close_ok(conn.get(), ch);
            // Tried again every 2 s, quietly (e.g. until someone deletes a queue declared with
            // other arguments).
            c->retry_at = Clock::now() + std::chrono::seconds(2);
            if (e->find("connection") != std::string::npos ||
                e->find("socket") != std::string::npos) {
              drop(*e);
              break;
            }
            continue;
          }
          if (!c->last_error.empty()) spdlog::info("iii-queue: consuming {} now", c->names.queue);
          c->last_error.clear();
          c->channel = ch;
          c->generation = ++setup_generation_;
          c->live = c->generation;
          by_channel[ch] = c;
        }
      }
      if (!conn) {
        std::unique_lock lk(mu_);
        cv_consumer_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_; });
        continue;
      }
      // Wait for the broker or a wake-up.
      amqp_connection_state_t cs = conn.get();
      if (!amqp_frames_enqueued(cs) && !amqp_data_in_buffer(cs)) {
        pollfd fds[2] = {{amqp_get_sockfd(cs), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        ::poll(fds, 2, 1000);
        if (fds[1].revents & POLLIN) {
          uint64_t v;
          [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
        }
      }
      // Everything the socket has now.
      for (int i = 0; i < 256; ++i) {
        amqp_maybe_release_buffers(cs);
        amqp_envelope_t env;
        timeval tv{0, 0};
        const auto r = amqp_consume_message(cs, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
          auto it = by_channel.find(env.channel);
          if (it != by_channel.end()) {
            Delivery d;
            d.consumer = it->second->id;
            d.generation = it->second->generation;
            d.handle = env.delivery_tag;
            d.msg = read_message(env.message.properties, env.message.body).msg;
            post([on = it->second->on, d = std::move(d)]() mutable { (*on)(std::move(d)); });
          }
          amqp_destroy_envelope(&env);
          continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
          break;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
          amqp_frame_t f;
          timeval tv0{0, 0};
          const int st = amqp_simple_wait_frame_noblock(cs, &f, &tv0);
          if (st == AMQP_STATUS_TIMEOUT) break;
          if (st != AMQP_STATUS_OK) {
            drop(amqp_error_string2(st));
            break;
          }
          if (f.frame_type != AMQP_FRAME_METHOD) continue;
          if (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_rpc_reply_t rr{};
            rr.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
            rr.reply = f.payload.method;
            drop(reply_error(rr, "consume"));
            break;
          }
          if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
              f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
            if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
              amqp_channel_close_ok_t ok{};
              amqp_send_method(cs, f.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            } else {
              amqp_channel_close(cs, f.channel, AMQP_REPLY_SUCCESS);
            }
            auto it = by_channel.find(f.channel);
            if (it != by_channel.end()) {
              spdlog::warn("iii-queue: the broker stopped the consumer of {}; consuming again",
                           it->second->names.queue);
              it->second->gone();
              it->second->retry_at = Clock::now() + std::chrono::seconds(1);
              by_channel.erase(it);
            }
          }
          continue;
        }
        drop(reply_error(r, "consume"));
        break;
      }
    }
    if (conn) conn.close(true);
  }

  std::optional<std::string> setup(amqp_connection_state_t c, int ch, const Consumer& k) {
    amqp_channel_open(c, ch);
    auto e = reply_error(amqp_get_rpc_reply(c), "channel.open");
    if (!e.empty()) return e;
    if (auto de = declare(c, ch, k.names)) return de;
    amqp_basic_qos(c, ch, 0, uint16_t(k.prefetch), 0);
    e = reply_error(amqp_get_rpc_reply(c), "basic.qos");
    if (!e.empty()) return e;
    amqp_basic_consume(c, ch, B(k.names.queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    e = reply_error(amqp_get_rpc_reply(c), "basic.consume " + k.names.queue);
    if (!e.empty()) return e;
    return std::nullopt;
  }

  Url url_;
  Poster post_;
  std::shared_ptr<Shared> shared_;
  int wake_fd_ = -1;
  bool started_ = false;
  std::thread control_, consumer_;
  std::mutex mu_;
  std::condition_variable cv_, cv_consumer_;
  bool stop_ = false;
  std::deque<Job> jobs_;
  std::deque<Ack> acks_;
  std::vector<Names> named_;
  std::map<uint64_t, std::shared_ptr<Consumer>> consumers_;
  uint64_t next_consumer_ = 0;
  uint64_t seq_ = 0;  // control thread: publish sequence on the confirm channel
  uint64_t conn_generation_ = 0;
  uint64_t setup_generation_ = 0;
};

}  // namespace

std::string redacted_amqp_url(const std::string& amqp_url) {
  const auto scheme = amqp_url.find("://");
  const auto at = amqp_url.rfind('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return amqp_url;
  return amqp_url.substr(0, scheme + 3) + amqp_url.substr(at + 1);
}

std::unique_ptr<Broker> make_rabbitmq_broker(const std::string& amqp_url, Poster post) {
  return std::make_unique<RabbitBroker>(amqp_url, std::move(post));
}

}  // namespace iii::workers::queue
