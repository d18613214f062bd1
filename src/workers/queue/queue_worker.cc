// Delivery model. Every internal queue (`__fn_queue::<name>`, `<topic>::<function_id>`) keeps
// in memory only a window of at most kWindow ready messages, the messages being handled and the
// retries waiting for their backoff; everything else stays in the store and is paged in (seq
// order) when the window runs low. An acknowledged enqueue goes straight into the window when
// nothing older is still in the store, so a queue that keeps up never reads the store.
//
// Standard queues run up to `concurrency` messages at once. FIFO queues keep the window per
// message group: a group runs one message at a time (its head), different groups run in
// parallel up to `concurrency`, and a failed head is retried (after its backoff) before the
// rest of its group, so order within a group holds across retries. A message leaves the store
// only when its handler succeeded (or it was dead-lettered): a crash at any point redelivers it
// (at-least-once). Retry timers are one steady_timer per queue, on the engine's io_context.
#include "workers/queue/queue_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "protocol/uuid.h"
#include "workers/bridge/bridged_queue.h"
#include "workers/queue/broker_worker.h"
#include "workers/queue/console.h"
#include "workers/queue/queue_config.h"
#include "workers/queue/queue_store.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;
using queue::NamedQueueConfig;
using queue::QueueBackend;
using queue::QueueMessage;
using queue::QueueSelector;
using queue::SubscriberConfig;

constexpr size_t kWindow = 1024;
// Retries waiting for their backoff kept in memory per queue; more stay in the store only and
// are read back (by the store's retry index) when due.
constexpr size_t kDelayedCap = 1024;
// Messages of one FIFO group kept in the window; the rest of a longer group is read back from
// the store (by the (queue, group, seq) index) as the group advances, so a blocked group cannot
// fill the window and starve the others.
constexpr size_t kGroupCap = 64;
constexpr std::string_view kNamedPrefix = "__fn_queue::";

using queue::parse_or_null;
using queue::read_subscriber_config;

int64_t backoff_delay(int64_t base, int64_t attempts_made) {
  int64_t d = base;
  for (int64_t i = 1; i < attempts_made; ++i) {
    if (d > INT64_MAX / 4) return INT64_MAX / 4;
    d *= 2;
  }
  return d;
}

struct Group {
  std::deque<QueueMessage> msgs;
  bool busy = false;       // its head is being handled or waits for a retry
  bool queued = false;     // listed in `runnable`
  bool truncated = false;  // messages from resume_seq on are in the store only
  int64_t resume_seq = 0;
  bool loading = false;
};

// A topic subscriber trigger's parsed `queue_config`.
struct Queue {
  std::string key;   // internal name
  std::string name;  // named queue name, or topic
  bool named = false;
  std::string function_id;  // topic queues: the subscribed function
  NamedQueueConfig cfg;
  bool active = false;                            // has a consumer
  std::deque<QueueMessage> ready;                 // standard
  std::unordered_map<std::string, Group> groups;  // fifo
  std::deque<std::string> runnable;               // fifo groups with a runnable head
  size_t window = 0;                              // messages in `ready` / `groups`
  int64_t inflight = 0;
  int64_t loaded_seq = 0;  // every message with a greater seq is (also) in the store only
  bool more = true;        // the store may hold ready messages beyond loaded_seq
  bool loading = false;
  bool dirty = false;                            // a message was committed while loading
  std::multimap<int64_t, QueueMessage> delayed;  // by available_at_ms
  std::unordered_set<int64_t> resident;          // seqs in the window, delayed or in flight
  bool evicted = false;     // retries beyond kDelayedCap wait in the store only
  int64_t evicted_due = 0;  // the earliest of them
  bool scanning = false;
  std::unordered_set<int64_t> gone;  // left memory while a scan was reading the store
  int64_t evicted_during_scan = 0;   // earliest retry evicted while a scan was reading
  std::unique_ptr<boost::asio::steady_timer> timer;
  uint64_t timer_gen = 0;
  std::optional<int64_t> timer_at;
  std::vector<std::string> triggers;  // topic queues: bound subscriber triggers
  size_t next_trigger = 0;
};

class QueueWorker;

class SubscriberTriggers : public engine::TriggerTypeHandler {
 public:
  explicit SubscriberTriggers(QueueWorker& w) : w_(w) {}
  std::optional<std::string> bind(const engine::Trigger& t) override;
  void unbind(const engine::Trigger& t) override;

 private:
  QueueWorker& w_;
};

class QueueWorker : public engine::BuiltinWorker {
 public:
  QueueWorker(const config::WorkerEntry& entry, engine::Runtime& rt, queue::QueueWorkerConfig cfg)
      : rt_(rt), name_(entry.instance_name), cfg_(std::move(cfg)), triggers_(*this) {
    try {
      store_ = std::make_unique<queue::QueueStore>(
          cfg_.store,
          [&io = rt_.io](std::function<void()> fn) { boost::asio::post(io, std::move(fn)); });
    } catch (const std::exception& e) {
      throw config::ConfigError(
          entry.source + ":" + std::to_string(entry.line) + ": worker '" + entry.instance_name +
          "': cannot open the queue store (file_path '" + cfg_.store.file_path + "'): " + e.what());
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~QueueWorker() override {
    if (store_) store_->close();
  }

  void start() override {
    for (auto& [name, c] : cfg_.queues) {
      Queue& q = queue_for(std::string(kNamedPrefix) + name);
      q.name = name;
      q.named = true;
      q.cfg = c;
      q.active = true;
      maybe_load(q);
    }
    rt_.engine.set_action_handler(
        protocol::ActionType::kEnqueue,
        [this](const CallContext& ctx, protocol::InvokeFunction&& m, Completion done) {
          enqueue(ctx, std::move(m), std::move(done));
        });
    engine::TriggerType tt;
    tt.id = "durable:subscriber";
    tt.description = "Durable topic subscriber (iii::durable::publish), with retries and a DLQ";
    rt_.engine.register_builtin_trigger_type(std::move(tt), &triggers_);
    register_functions();
  }

  // Stops delivering; calls `done` once the handlers in flight have finished. What is still
  // queued stays in the store for the next start.
  void drain(std::function<void()> done) override {
    stopping_ = true;
    if (inflight_ == 0) return done();
    drained_ = std::move(done);
  }

  void stop() override {
    stopping_ = true;
    closed_ = true;
    rt_.engine.set_action_handler(protocol::ActionType::kEnqueue, {});
    for (auto& [k, q] : queues_)
      if (q->timer) q->timer->cancel();
    store_->close();
  }

  // ---- topic subscribers (SubscriberTriggers)
  std::optional<std::string> bind_subscriber(const engine::Trigger& t) {
    SubscriberConfig s;
    s.cfg.max_retries = cfg_.max_attempts;
    s.cfg.backoff_ms = cfg_.backoff_ms;
    s.cfg.concurrency = cfg_.concurrency;
    s.cfg.fifo = cfg_.fifo_mode;
    if (auto err = read_subscriber_config(t.config, s)) return err;
    if (s.topic.empty()) {
      spdlog::warn("durable:subscriber trigger {}: no topic; it subscribes to nothing", t.id);
      return std::nullopt;
    }
    subscribers_[t.id] = s;
    Queue& q = queue_for(s.topic + "::" + t.function_id);
    q.name = s.topic;
    q.function_id = t.function_id;
    q.triggers.push_back(t.id);
    topics_[s.topic][t.function_id] += 1;
    reconfigure(q);
    maybe_load(q);
    pump(q);
    return std::nullopt;
  }

  void unbind_subscriber(const engine::Trigger& t) {
    auto s = subscribers_.find(t.id);
    if (s == subscribers_.end()) return;
    const std::string topic = s->second.topic;
    subscribers_.erase(s);
    auto it = queues_.find(topic + "::" + t.function_id);
    if (it != queues_.end()) {
      auto& trig = it->second->triggers;
      trig.erase(std::remove(trig.begin(), trig.end(), t.id), trig.end());
      reconfigure(*it->second);
    }
    auto tp = topics_.find(topic);
    if (tp != topics_.end() && --tp->second[t.function_id] <= 0) {
      tp->second.erase(t.function_id);
      if (tp->second.empty()) topics_.erase(tp);
    }
  }

 private:
  // A topic queue's settings come from its first subscriber; several subscribers of the same
  // function share the queue and add up their concurrency.
  void reconfigure(Queue& q) {
    q.active = !q.triggers.empty();
    if (!q.active) return;
    int64_t concurrency = 0;
    for (auto& id : q.triggers) concurrency += subscribers_[id].cfg.concurrency;
    const bool was_fifo = q.cfg.fifo;
    q.cfg = subscribers_[q.triggers.front()].cfg;
    q.cfg.concurrency = std::max<int64_t>(1, concurrency);
    if (q.cfg.fifo != was_fifo && (q.window > 0 || q.inflight > 0 || !q.delayed.empty()))
      q.cfg.fifo = was_fifo;  // the window's layout is kept until the queue is idle
  }

  Queue& queue_for(const std::string& key) {
    auto& slot = queues_[key];
    if (!slot) {
      slot = std::make_unique<Queue>();
      slot->key = key;
      slot->timer = std::make_unique<boost::asio::steady_timer>(rt_.io);
    }
    return *slot;
  }

  static Outcome enqueue_error(std::string msg) {
    return Outcome::fail("enqueue_error", std::move(msg));
  }

  void enqueue(const CallContext& ctx, protocol::InvokeFunction&& m, Completion done) {
    auto reply = [&done](Outcome o) {
      if (done) done(std::move(o));
    };
    auto it = cfg_.queues.find(m.action.queue);
    if (it == cfg_.queues.end())
      return reply(enqueue_error("Queue '" + m.action.queue + "' not found"));
    const NamedQueueConfig& c = it->second;
    auto msg = std::make_shared<QueueMessage>();
    if (c.fifo) {
      const json::value* g =
          m.data.is_object() ? m.data.get_object().if_contains(c.message_group_field) : nullptr;
      if (!g)
        return reply(enqueue_error("FIFO queue '" + m.action.queue + "' requires field '" +
                                   c.message_group_field + "' in data, but it was not found"));
      if (g->is_null())
        return reply(enqueue_error("FIFO queue '" + m.action.queue + "': field '" +
                                   c.message_group_field + "' must not be null"));
      msg->group = g->is_string() ? std::string(g->get_string()) : json::serialize(*g);
    }
    if (closed_) return reply(enqueue_error("the queue worker is shutting down"));
    msg->queue = std::string(kNamedPrefix) + m.action.queue;
    msg->function_id = std::move(m.function_id);
    msg->message_id = protocol::Uuid::random_v4().str();
    msg->traceparent = ctx.traceparent;
    msg->baggage = ctx.baggage;
    insert(
        std::move(msg),
        [done = std::move(done)](const QueueMessage& stored, std::optional<std::string> error) {
          if (!done) return;
          if (error) return done(enqueue_error("Failed to enqueue message: " + *error));
          done(Outcome::ok(json::object{{"messageReceiptId", stored.message_id}}));
        },
        std::move(m.data));
  }

  // Stores a new message and, once committed, hands it to its queue's window.
  void insert(std::shared_ptr<QueueMessage> msg,
              std::function<void(const QueueMessage&, std::optional<std::string>)> done,
              json::value data) {
    msg->seq = store_->next_seq();
    msg->id = protocol::Uuid::random_v4().str();
    msg->created_at_ms = engine::Engine::now_ms();
    msg->data = json::serialize(data);
    store_->submit([msg](QueueBackend& b) { b.insert(*msg); },
                   [this, msg, done = std::move(done)](std::optional<std::string> error) {
                     done(*msg, error);
                     if (!error) committed(std::move(*msg));
                   });
  }

  void committed(QueueMessage msg) {
    auto it = queues_.find(msg.queue);
    if (it == queues_.end()) return;  // nobody consumes it (yet): it stays in the store
    Queue& q = *it->second;
    if (q.active && !q.more && !q.loading && q.window < kWindow) {
      q.loaded_seq = msg.seq;
      add_to_window(q, std::move(msg));
      pump(q);
      return;
    }
    q.more = true;
    if (q.loading) q.dirty = true;
    maybe_load(q);
  }

  void add_to_window(Queue& q, QueueMessage msg) {
    if (msg.available_at_ms > engine::Engine::now_ms()) {
      if (q.cfg.fifo) q.groups[msg.group.value_or("")].busy = true;
      delay(q, std::move(msg));
      return;
    }
    if (!q.cfg.fifo) {
      q.resident.insert(msg.seq);
      ++q.window;
      q.ready.push_back(std::move(msg));
      return;
    }
    const std::string g = msg.group.value_or("");
    Group& grp = q.groups[g];
    if (grp.truncated || grp.msgs.size() >= kGroupCap) {
      if (!grp.truncated) {
        grp.truncated = true;
        grp.resume_seq = msg.seq;
      }
      return;  // stays in the store until the group gets there
    }
    q.resident.insert(msg.seq);
    ++q.window;
    grp.msgs.push_back(std::move(msg));
    if (!grp.busy && !grp.queued) {
      grp.queued = true;
      q.runnable.push_back(g);
    }
  }

  void maybe_load(Queue& q) {
    if (!q.active || !q.more || q.loading || closed_ || q.window >= kWindow / 2) return;
    q.loading = true;
    q.dirty = false;
    const size_t limit = kWindow - q.window;
    auto result = std::make_shared<std::vector<QueueMessage>>();
    store_->submit([result, key = q.key, after = q.loaded_seq,
                    limit](QueueBackend& b) { *result = b.load(key, after, limit); },
                   [this, &q, result, limit](std::optional<std::string> error) {
                     q.loading = false;
                     if (error) {
                       if (!closed_)
                         spdlog::error("iii-queue: cannot read queue {}: {}", q.key, *error);
                       return;
                     }
                     for (auto& m : *result) {
                       if (m.seq <= q.loaded_seq) continue;
                       q.loaded_seq = m.seq;
                       add_to_window(q, std::move(m));
                     }
                     q.more = result->size() == limit || q.dirty;
                     pump(q);
                   });
  }

  void pump(Queue& q) {
    while (q.active && !stopping_ && q.inflight < q.cfg.concurrency) {
      std::optional<QueueMessage> m;
      if (!q.cfg.fifo) {
        if (q.ready.empty()) break;
        m = std::move(q.ready.front());
        q.ready.pop_front();
      } else {
        while (!q.runnable.empty() && !m) {
          auto g = q.groups.find(q.runnable.front());
          q.runnable.pop_front();
          if (g == q.groups.end()) continue;
          g->second.queued = false;
          if (g->second.busy || g->second.msgs.empty()) continue;
          m = std::move(g->second.msgs.front());
          g->second.msgs.pop_front();
          g->second.busy = true;
          if (g->second.msgs.empty() && g->second.truncated) load_group(q, g->first);
        }
        if (!m) break;
      }
      --q.window;
      deliver(q, std::move(*m));
    }
    maybe_load(q);
  }

  void deliver(Queue& q, QueueMessage m) {
    ++q.inflight;
    ++inflight_;
    json::value payload = parse_or_null(m.data);
    auto msg = std::make_shared<QueueMessage>(std::move(m));
    if (q.named) {
      rt_.engine.invoke(msg->function_id, std::move(payload),
                        CallContext{0, {}, msg->traceparent, msg->baggage},
                        [this, &q, msg](Outcome o) {
                          finish(q, std::move(*msg), !o.error, "function call failed");
                        });
      return;
    }
    const engine::Trigger* t = nullptr;
    for (size_t i = 0; i < q.triggers.size() && !t; ++i) {
      const auto& id = q.triggers[q.next_trigger++ % q.triggers.size()];
      auto it = rt_.engine.triggers().find(id);
      if (it != rt_.engine.triggers().end()) t = &it->second;
    }
    if (!t) return finish(q, std::move(*msg), false, "no subscriber");
    rt_.engine.fire(*t, std::move(payload), [this, &q, msg](engine::FireStatus st, Outcome o) {
      if (st == engine::FireStatus::kSkipped || (st == engine::FireStatus::kInvoked && !o.error))
        return finish(q, std::move(*msg), true, {});
      std::string error;
      if (st == engine::FireStatus::kConditionFailed)
        error = "Condition function error: " + (o.error ? o.error->message : std::string());
      else
        error = "ErrorBody { code: \"" + o.error->code + "\", message: \"" + o.error->message +
                "\", stacktrace: None }";
      finish(q, std::move(*msg), false, std::move(error));
    });
  }

  void release_group(Queue& q, const QueueMessage& m) {
    if (!q.cfg.fifo) return;
    auto g = q.groups.find(m.group.value_or(""));
    if (g == q.groups.end()) return;
    g->second.busy = false;
    if (!g->second.msgs.empty()) {
      if (!g->second.queued) {
        g->second.queued = true;
        q.runnable.push_back(g->first);
      }
    } else if (g->second.truncated) {
      load_group(q, g->first);
    } else if (!g->second.queued && !g->second.loading) {
      q.groups.erase(g);
    }
  }

  // Reads the next messages of a truncated FIFO group from the store.
  void load_group(Queue& q, const std::string& g) {
    Group& grp = q.groups[g];
    if (grp.loading || closed_) return;
    grp.loading = true;
    auto result = std::make_shared<std::vector<QueueMessage>>();
    const int64_t max_seq = q.loaded_seq;
    store_->submit(
        [result, key = q.key, g, from = grp.resume_seq, max_seq](QueueBackend& b) {
          *result = b.load_group(key, g, from, max_seq, kGroupCap);
        },
        [this, &q, g, result, max_seq](std::optional<std::string> error) {
          Group& grp = q.groups[g];
          grp.loading = false;
          if (error) {
            if (!closed_) spdlog::error("iii-queue: cannot read group of {}: {}", q.key, *error);
            return;
          }
          for (auto& m : *result) {
            grp.resume_seq = m.seq + 1;
            if (q.resident.count(m.seq)) continue;
            q.resident.insert(m.seq);
            ++q.window;
            grp.msgs.push_back(std::move(m));
          }
          // Everything up to max_seq is read; what was committed since went through the
          // window while the group was truncated, so it is still to be read.
          if (result->size() < kGroupCap && q.loaded_seq == max_seq) grp.truncated = false;
          if (!grp.msgs.empty()) {
            if (!grp.busy && !grp.queued) {
              grp.queued = true;
              q.runnable.push_back(g);
            }
          } else if (grp.truncated) {
            if (result->empty() && q.loaded_seq == max_seq)
              grp.truncated = false;
            else
              return load_group(q, g);
          } else if (!grp.busy && !grp.queued) {
            q.groups.erase(g);
            return;
          }
          pump(q);
        });
  }

  void finish(Queue& q, QueueMessage m, bool ok, std::string error) {
    --q.inflight;
    --inflight_;
    forget(q, m.seq);
    if (closed_) {
      // The store is closed: the message stays as it is and is delivered after a restart.
    } else if (ok) {
      store_->submit([seq = m.seq](QueueBackend& b) { b.remove(seq); }, log_error("ack"),
                     /*lazy=*/true);
      release_group(q, m);
    } else {
      const int64_t attempts = m.attempts + 1;
      if (attempts >= std::max<int64_t>(1, q.cfg.max_retries)) {
        spdlog::warn("iii-queue: message {} of {} moved to the DLQ after {} attempts: {}", m.id,
                     q.key, attempts, error);
        store_->submit([seq = m.seq, attempts, error, at = engine::Engine::now_ms()](
                           QueueBackend& b) { b.dead_letter(seq, attempts, error, at); },
                       log_error("dead-letter"));
        release_group(q, m);
      } else {
        m.attempts = attempts;
        m.available_at_ms = engine::Engine::now_ms() + backoff_delay(q.cfg.backoff_ms, attempts);
        store_->submit([seq = m.seq, attempts,
                        at = m.available_at_ms](QueueBackend& b) { b.retry(seq, attempts, at); },
                       log_error("retry"));
        delay(q, std::move(m));  // a FIFO group stays busy until its head is done
      }
    }
    if (inflight_ == 0 && drained_) {
      auto d = std::move(drained_);
      drained_ = nullptr;
      d();
    }
    pump(q);
  }

  queue::QueueStore::Done log_error(const char* what) {
    return [this, what](std::optional<std::string> error) {
      if (error && !closed_) spdlog::error("iii-queue: {} failed: {}", what, *error);
    };
  }

  // A message leaves memory (handled, dead-lettered, or waiting for a retry). A scan reading the
  // store at the same time may still see it as due: it must not bring it back.
  void forget(Queue& q, int64_t seq) {
    q.resident.erase(seq);
    if (q.scanning) q.gone.insert(seq);
  }

  // A retry waits in memory, or (beyond kDelayedCap) in the store only.
  void delay(Queue& q, QueueMessage msg) {
    const int64_t at = msg.available_at_ms;
    if (q.delayed.size() >= kDelayedCap) {
      q.evicted_due = q.evicted ? std::min(q.evicted_due, at) : at;
      q.evicted = true;
      if (q.scanning)
        q.evicted_during_scan = q.evicted_during_scan ? std::min(q.evicted_during_scan, at) : at;
    } else {
      q.resident.insert(msg.seq);
      q.delayed.emplace(at, std::move(msg));
    }
    arm(q);
  }

  void arm(Queue& q) {
    if (closed_ || (q.delayed.empty() && !q.evicted)) return;
    int64_t at = q.delayed.empty() ? INT64_MAX : q.delayed.begin()->first;
    if (q.evicted) at = std::min(at, q.evicted_due);
    if (q.timer_at && *q.timer_at <= at) return;
    q.timer_at = at;
    const uint64_t gen = ++q.timer_gen;
    q.timer->expires_after(
        std::chrono::milliseconds(std::max<int64_t>(0, at - engine::Engine::now_ms())));
    q.timer->async_wait([this, &q, gen](boost::system::error_code ec) {
      if (ec || gen != q.timer_gen) return;
      q.timer_at.reset();
      on_due(q);
    });
  }

  // A retry whose backoff is over goes back to the front (standard) or to its group's head.
  void requeue_due(Queue& q, QueueMessage m) {
    q.resident.insert(m.seq);
    ++q.window;
    if (!q.cfg.fifo) {
      q.ready.push_front(std::move(m));
      return;
    }
    const std::string g = m.group.value_or("");
    Group& grp = q.groups[g];
    grp.msgs.push_front(std::move(m));
    grp.busy = false;
    if (!grp.queued) {
      grp.queued = true;
      q.runnable.push_front(g);
    }
  }

  void on_due(Queue& q) {
    const int64_t now = engine::Engine::now_ms();
    std::vector<QueueMessage> due;
    while (!q.delayed.empty() && q.delayed.begin()->first <= now) {
      due.push_back(std::move(q.delayed.begin()->second));
      q.delayed.erase(q.delayed.begin());
    }
    for (auto it = due.rbegin(); it != due.rend(); ++it) requeue_due(q, std::move(*it));
    if (q.evicted && q.evicted_due <= now) scan_due(q, now);
    arm(q);
    pump(q);
  }

  // Reads back the retries that were kept in the store only and are due now.
  void scan_due(Queue& q, int64_t now) {
    if (q.scanning || closed_) return;
    q.scanning = true;
    const size_t limit = kDelayedCap + q.resident.size();
    auto result = std::make_shared<std::vector<QueueMessage>>();
    auto next_due = std::make_shared<int64_t>(0);
    store_->submit(
        [result, next_due, key = q.key, max_seq = q.loaded_seq, now, limit](QueueBackend& b) {
          *result = b.due_retries(key, max_seq, now, limit, *next_due);
        },
        [this, &q, result, next_due, limit, now](std::optional<std::string> error) {
          q.scanning = false;
          std::unordered_set<int64_t> gone;
          gone.swap(q.gone);
          if (error) {
            if (!closed_) spdlog::error("iii-queue: cannot read retries of {}: {}", q.key, *error);
            return;
          }
          for (auto it = result->rbegin(); it != result->rend(); ++it)
            if (!q.resident.count(it->seq) && !gone.count(it->seq)) requeue_due(q, std::move(*it));
          int64_t next = *next_due > 0 ? *next_due : INT64_MAX;
          if (q.evicted_during_scan) next = std::min(next, q.evicted_during_scan);
          q.evicted_during_scan = 0;
          if (result->size() == limit) next = now;  // more are due
          q.evicted = next != INT64_MAX;
          if (q.evicted) q.evicted_due = next;
          arm(q);
          pump(q);
        });
  }

  // ---- console / DLQ functions
  QueueSelector selector(const std::string& name) const {
    if (cfg_.queues.count(name)) return QueueSelector{std::string(kNamedPrefix) + name, {}};
    return QueueSelector{name, name + "::"};
  }

  // After a redrive the moved messages are ready again, beyond what the windows loaded.
  void refill(const std::vector<std::string>& keys) {
    for (auto& k : keys) {
      auto it = queues_.find(k);
      if (it == queues_.end()) continue;
      Queue& q = *it->second;
      q.more = true;
      if (q.loading) q.dirty = true;
      maybe_load(q);
    }
  }

  // The user-facing name of an internal queue.
  std::pair<std::string, std::string> display(const std::string& key) const {
    if (key.rfind(kNamedPrefix, 0) == 0) return {key.substr(kNamedPrefix.size()), "function_queue"};
    auto it = queues_.find(key);
    if (it != queues_.end()) return {it->second->name, "builtin"};
    const auto sep = key.find("::");
    return {key.substr(0, sep), "builtin"};
  }

  void add(const char* id, const char* description, engine::BuiltinHandler h) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    rt_.engine.register_builtin(std::move(info), name_, std::move(h));
  }

  void register_functions() {
    add("iii::durable::publish", "Publish a message to a durable topic",
        [this](const CallContext& ctx, json::value input, Completion done) {
          engine::BuiltinInput in("iii::durable::publish", input);
          auto topic = in.optional_string("topic");
          const json::value* data = in.optional_value("data");
          if (!in.ok()) return done(in.failure());
          if (!topic || topic->empty())
            return done(Outcome::fail("topic_not_set", "Topic is not set"));
          if (closed_)
            return done(Outcome::fail("publish_failed", "the queue worker is shutting down"));
          std::vector<std::string> keys;
          if (auto t = topics_.find(*topic); t != topics_.end())
            for (auto& [fid, n] : t->second) keys.push_back(*topic + "::" + fid);
          if (keys.empty()) keys.push_back(*topic);
          auto left = std::make_shared<size_t>(keys.size());
          auto failed = std::make_shared<std::optional<std::string>>();
          for (auto& key : keys) {
            auto msg = std::make_shared<QueueMessage>();
            msg->queue = key;
            auto q = queues_.find(key);
            if (q != queues_.end()) msg->function_id = q->second->function_id;
            msg->traceparent = ctx.traceparent;
            msg->baggage = ctx.baggage;
            insert(
                msg,
                [left, failed, done](const QueueMessage&, std::optional<std::string> error) {
                  if (error) *failed = error;
                  if (--*left > 0) return;
                  if (*failed)
                    return done(Outcome::fail("publish_failed", "Failed to publish: " + **failed));
                  done(Outcome::ok(nullptr));
                },
                data ? *data : json::value(nullptr));
          }
        });

    add("iii::queue::redrive", "Move every dead letter of a queue back to it",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::redrive", input);
          auto t = queue::read_dlq_target(in, false);
          if (t.error) return done(std::move(*t.error));
          redrive(t.queue, std::nullopt,
                  [done, name = t.queue](int64_t n, std::optional<std::string> err) {
                    done(queue::redrive_outcome(name, std::nullopt, n, err));
                  });
        });

    add("iii::queue::redrive_message", "Move one dead letter back to its queue",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::redrive_message", input);
          auto t = queue::read_dlq_target(in, true);
          if (t.error) return done(std::move(*t.error));
          redrive(t.queue, t.message_id, [done, t](int64_t n, std::optional<std::string> err) {
            done(queue::redrive_outcome(t.queue, t.message_id, n, err));
          });
        });

    add("iii::queue::discard_message", "Delete one dead letter",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::discard_message", input);
          auto t = queue::read_dlq_target(in, true);
          if (t.error) return done(std::move(*t.error));
          auto n = std::make_shared<int64_t>(0);
          store_->submit([n, sel = selector(t.queue),
                          id = t.message_id](QueueBackend& b) { *n = b.discard(sel, id); },
                         [done, n, t](std::optional<std::string> err) {
                           done(queue::discard_outcome(t.queue, t.message_id, *n, err));
                         });
        });

    add("engine::queue::list_topics", "List queues and topics",
        [this](const CallContext&, json::value, Completion done) {
          json::array out;
          for (auto& [name, c] : cfg_.queues)
            out.push_back(json::object{{"name", name},
                                       {"broker_type", "function_queue"},
                                       {"subscriber_count", c.concurrency}});
          for (auto& [topic, fns] : topics_) {
            int64_t n = 0;
            for (auto& [fid, count] : fns) n += count;
            out.push_back(
                json::object{{"name", topic}, {"broker_type", "builtin"}, {"subscriber_count", n}});
          }
          done(Outcome::ok(std::move(out)));
        });

    add("engine::queue::topic_stats", "Depth, consumers and DLQ depth of a queue or topic",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("engine::queue::topic_stats", input);
          auto topic = in.optional_string("topic").value_or("");
          if (!in.ok()) return done(in.failure());
          if (topic.empty()) return done(Outcome::fail("topic_required", "topic is required"));
          int64_t consumers = 0;
          if (auto c = cfg_.queues.find(topic); c != cfg_.queues.end())
            consumers = c->second.concurrency;
          else if (auto t = topics_.find(topic); t != topics_.end())
            for (auto& [fid, n] : t->second) consumers += n;
          auto counts = std::make_shared<queue::QueueCounts>();
          store_->submit(
              [counts, sel = selector(topic)](QueueBackend& b) { *counts = b.counts(sel); },
              [done, counts, consumers](std::optional<std::string> err) {
                if (err) return done(Outcome::fail("topic_stats_failed", *err));
                done(Outcome::ok(json::object{{"depth", counts->ready},
                                              {"consumer_count", consumers},
                                              {"dlq_depth", counts->dead},
                                              {"config", nullptr}}));
              });
        });

    add("engine::queue::dlq_topics", "Dead-letter counts per queue and topic",
        [this](const CallContext&, json::value, Completion done) {
          auto counts = std::make_shared<std::map<std::string, int64_t>>();
          store_->submit([counts](QueueBackend& b) { *counts = b.dead_counts(); },
                         [this, done, counts](std::optional<std::string> err) {
                           if (err) return done(Outcome::fail("dlq_topics_failed", *err));
                           std::map<std::pair<std::string, std::string>, int64_t> agg;
                           for (auto& [name, c] : cfg_.queues) agg[{name, "function_queue"}] = 0;
                           for (auto& [key, n] : *counts) agg[display(key)] += n;
                           done(Outcome::ok(queue::dlq_topics_json(agg)));
                         });
        });

    add("engine::queue::dlq_messages", "Dead letters of a queue or topic",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("engine::queue::dlq_messages", input);
          auto page = queue::read_dlq_page(in);
          if (page.error) return done(std::move(*page.error));
          auto list = std::make_shared<std::vector<queue::DeadLetter>>();
          store_->submit(
              [list, sel = selector(page.topic), offset = page.offset,
               limit = page.limit](QueueBackend& b) { *list = b.dead_letters(sel, offset, limit); },
              [done, list](std::optional<std::string> err) {
                if (err) return done(Outcome::fail("dlq_messages_failed", *err));
                done(Outcome::ok(queue::dead_letters_json(*list)));
              });
        });
  }

  void redrive(const std::string& name, std::optional<std::string> id,
               std::function<void(int64_t, std::optional<std::string>)> done) {
    auto n = std::make_shared<int64_t>(0);
    auto keys = std::make_shared<std::vector<std::string>>();
    auto* store = store_.get();
    store_->submit(
        [n, keys, store, sel = selector(name), id](QueueBackend& b) {
          *n = b.redrive(
              sel, id, [store] { return store->next_seq(); }, *keys);
        },
        [this, n, keys, done](std::optional<std::string> err) {
          if (!err) refill(*keys);
          done(*n, err);
        });
  }

  engine::Runtime& rt_;
  std::string name_;
  queue::QueueWorkerConfig cfg_;
  std::unique_ptr<queue::QueueStore> store_;
  SubscriberTriggers triggers_;
  std::map<std::string, std::unique_ptr<Queue>> queues_;
  std::map<std::string, SubscriberConfig> subscribers_;       // trigger id -> config
  std::map<std::string, std::map<std::string, int>> topics_;  // topic -> function -> triggers
  int64_t inflight_ = 0;
  bool stopping_ = false;  // no new deliveries
  bool closed_ = false;    // the store is closed
  std::function<void()> drained_;
};

std::optional<std::string> SubscriberTriggers::bind(const engine::Trigger& t) {
  return w_.bind_subscriber(t);
}
void SubscriberTriggers::unbind(const engine::Trigger& t) { w_.unbind_subscriber(t); }

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_queue_worker(const config::WorkerEntry& entry,
                                                         engine::Runtime& rt) {
  // `adapter: {name: bridge}`: durable topics served by another engine (src/workers/bridge).
  if (entry.config.IsMap()) {
    const YAML::Node adapter = entry.config["adapter"];
    const YAML::Node name = adapter && adapter.IsMap() ? adapter["name"] : YAML::Node();
    if (name && name.IsScalar() && name.Scalar() == "bridge")
      return make_bridged_queue_worker(entry, rt);
  }
  config::WorkerConfigReader r(entry);
  auto cfg = queue::read_queue_config(r);
  if (cfg.adapter != "builtin") return make_broker_queue_worker(entry, rt, std::move(cfg));
  return std::make_unique<QueueWorker>(entry, rt, std::move(cfg));
}

}  // namespace iii::workers
