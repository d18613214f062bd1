// iii-queue over an external broker (queue_worker.h: make_broker_queue_worker). The broker keeps
// the messages, their retries and dead letters; this front validates enqueues, runs one
// consumer per named queue and per (topic, subscribed function), calls the handlers and settles
// each delivery: success → ack; failure → retry (attempts counted in the message) or, once the
// attempts are spent, the DLQ. Several engines on one broker compete for the same queues, so
// each message is handled once (at least once: a delivery whose engine died before settling it
// is delivered again).
//
// FIFO named queues on RabbitMQ retry inline: the broker gives the queue's messages to one
// consumer among all engines at a time (x-single-active-consumer, prefetch 1), and a failed
// attempt keeps its delivery unacknowledged, waits `backoff_ms` on a timer and runs the same
// message again, so nothing behind it runs first; the last allowed attempt dead-letters it.
#include "workers/queue/broker_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <map>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "protocol/uuid.h"
#include "workers/queue/broker.h"
#include "workers/queue/console.h"
#include "workers/queue/queue_config.h"
#include "workers/queue/rabbitmq_broker.h"
#include "workers/queue/redis_broker.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;
using queue::Broker;
using queue::BrokerTarget;
using queue::Delivery;
using queue::NamedQueueConfig;
using queue::QueueMessage;
using queue::Settle;
using queue::SubscriberConfig;

using queue::parse_or_null;
using queue::read_subscriber_config;

// One consumer: a named queue, or a (topic, function) with its subscriber triggers.
struct Sub {
  BrokerTarget target;
  int64_t max_attempts = 3;  // total attempts before the DLQ
  int64_t prefetch = 10;
  bool inline_retry = false;  // FIFO named queue on RabbitMQ: a failed attempt runs again in place
  uint64_t consumer = 0;
  std::vector<std::string> triggers;
  size_t next_trigger = 0;
};

class BrokerQueueWorker;

class BrokerSubscriberTriggers : public engine::TriggerTypeHandler {
 public:
  explicit BrokerSubscriberTriggers(BrokerQueueWorker& w) : w_(w) {}
  std::optional<std::string> bind(const engine::Trigger& t) override;
  void unbind(const engine::Trigger& t) override;

 private:
  BrokerQueueWorker& w_;
};

class BrokerQueueWorker : public engine::BuiltinWorker {
 public:
  BrokerQueueWorker(const config::WorkerEntry& entry, engine::Runtime& rt,
                    queue::QueueWorkerConfig cfg)
      : rt_(rt), name_(entry.instance_name), cfg_(std::move(cfg)), triggers_(*this) {
    auto post = [&io = rt_.io](std::function<void()> fn) { boost::asio::post(io, std::move(fn)); };
    try {
      if (cfg_.adapter == "redis") {
        queue::RedisBrokerOptions o;
        o.url = cfg_.redis_url;
        o.poll_interval_ms = cfg_.poll_interval_ms;
        o.visibility_timeout_ms = cfg_.visibility_timeout_ms;
        broker_ = queue::make_redis_broker(rt_.io, o);
      } else {
        broker_ = queue::make_rabbitmq_broker(cfg_.amqp_url, post);
      }
    } catch (const std::exception& e) {
      throw config::ConfigError(entry.source + ":" + std::to_string(entry.line) + ": worker '" +
                                entry.instance_name + "': adapter.config." +
                                (cfg_.adapter == "redis" ? "redis_url: " : "amqp_url: ") +
                                e.what());
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~BrokerQueueWorker() override {
    if (broker_) broker_->stop();
  }

  void start() override {
    std::vector<BrokerTarget> named;
    for (auto& [name, c] : cfg_.queues) named.push_back(named_target(name));
    broker_->declare_named(named);
    broker_->start();
    for (auto& [name, c] : cfg_.queues) {
      auto s = std::make_unique<Sub>();
      s->target = named_target(name);
      // The original's rabbitmq adapter: max_retries retries after the first attempt; the
      // redis adapter behaves as the builtin one: max_retries attempts in all.
      s->max_attempts =
          cfg_.adapter == "rabbitmq" ? c.max_retries + 1 : std::max<int64_t>(1, c.max_retries);
      // FIFO on redis: up to `concurrency` groups at once per engine, one message per group
      // across all engines (the broker's leases); on rabbitmq: one message at a time from the
      // queue's single active consumer, retried inline so that order survives a failure.
      s->prefetch = c.fifo && cfg_.adapter != "redis" ? 1 : c.concurrency;
      s->inline_retry = c.fifo && cfg_.adapter == "rabbitmq";
      Sub* raw = s.get();
      s->consumer = broker_->consume(s->target, s->prefetch,
                                     [this, raw](Delivery d) { on_delivery(*raw, std::move(d)); });
      named_subs_[name] = std::move(s);
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

  void drain(std::function<void()> done) override {
    stopping_ = true;
    release_waiting();
    if (inflight_ == 0) return done();
    drained_ = std::move(done);
  }

  void stop() override {
    stopping_ = true;
    rt_.engine.set_action_handler(protocol::ActionType::kEnqueue, {});
    release_waiting();
    broker_->stop();
  }

  std::optional<std::string> bind_subscriber(const engine::Trigger& t) {
    SubscriberConfig s;
    s.cfg.max_retries = cfg_.max_attempts;
    s.cfg.backoff_ms = cfg_.backoff_ms;
    s.cfg.concurrency = cfg_.adapter == "rabbitmq" ? cfg_.prefetch_count : cfg_.concurrency;
    s.cfg.fifo = cfg_.fifo_mode;
    if (auto err = read_subscriber_config(t.config, s)) return err;
    if (s.topic.empty()) {
      spdlog::warn("durable:subscriber trigger {}: no topic; it subscribes to nothing", t.id);
      return std::nullopt;
    }
    const std::string key = s.topic + "::" + t.function_id;
    auto& slot = topic_subs_[key];
    if (!slot) {
      slot = std::make_unique<Sub>();
      slot->target.name = s.topic;
      slot->target.function_id = t.function_id;
      slot->target.backoff_ms = s.cfg.backoff_ms;
      slot->target.fifo = s.cfg.fifo;  // one group: the whole queue in order
      slot->max_attempts = std::max<int64_t>(1, s.cfg.max_retries);
      slot->prefetch = s.cfg.fifo ? 1 : s.cfg.concurrency;
      Sub* raw = slot.get();
      slot->consumer = broker_->consume(slot->target, slot->prefetch, [this, raw](Delivery d) {
        on_delivery(*raw, std::move(d));
      });
    }
    slot->triggers.push_back(t.id);
    trigger_topic_[t.id] = key;
    return std::nullopt;
  }

  void unbind_subscriber(const engine::Trigger& t) {
    auto it = trigger_topic_.find(t.id);
    if (it == trigger_topic_.end()) return;
    auto s = topic_subs_.find(it->second);
    trigger_topic_.erase(it);
    if (s == topic_subs_.end()) return;
    auto& trig = s->second->triggers;
    trig.erase(std::remove(trig.begin(), trig.end(), t.id), trig.end());
    if (trig.empty()) {
      broker_->cancel(s->second->consumer);
      // Deliveries in flight keep a pointer to the Sub: it stays until the worker goes.
      retired_.push_back(std::move(s->second));
      topic_subs_.erase(s);
    }
  }

 private:
  BrokerTarget named_target(const std::string& name) const {
    BrokerTarget t;
    t.named = true;
    t.name = name;
    const NamedQueueConfig& c = cfg_.queues.at(name);
    t.backoff_ms = c.backoff_ms;
    t.fifo = c.fifo;
    t.single_active = c.fifo && cfg_.adapter == "rabbitmq";
    return t;
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
    std::optional<std::string> group;
    if (c.fifo) {
      const json::value* g =
          m.data.is_object() ? m.data.get_object().if_contains(c.message_group_field) : nullptr;
      if (!g)
        return reply(enqueue_error("FIFO queue '" + m.action.queue + "' requires field '" +
                                   c.message_group_field + "' in data, but it was not found"));
      if (g->is_null())
        return reply(enqueue_error("FIFO queue '" + m.action.queue + "': field '" +
                                   c.message_group_field + "' must not be null"));
      // As the builtin adapter: a string as it is, anything else as its JSON text.
      group = g->is_string() ? std::string(g->get_string()) : json::serialize(*g);
    }
    if (stopping_) return reply(enqueue_error("the queue worker is shutting down"));
    QueueMessage msg;
    msg.function_id = std::move(m.function_id);
    msg.group = std::move(group);
    msg.id = msg.message_id = protocol::Uuid::random_v4().str();
    msg.traceparent = ctx.traceparent;
    msg.baggage = ctx.baggage;
    msg.created_at_ms = engine::Engine::now_ms();
    msg.data = json::serialize(m.data);
    const std::string receipt = msg.message_id;
    broker_->publish(named_target(it->first), std::move(msg),
                     [done = std::move(done), receipt](std::optional<std::string> error) {
                       if (!done) return;
                       if (error)
                         return done(enqueue_error("Failed to enqueue message: " + *error));
                       done(Outcome::ok(json::object{{"messageReceiptId", receipt}}));
                     });
  }

  void on_delivery(Sub& s, Delivery d) {
    if (stopping_) {
      broker_->settle(d, Settle::kRequeue, {}, nullptr);
      return;
    }
    ++inflight_;
    run(s, std::make_shared<Delivery>(std::move(d)));
  }

  // One attempt at a delivery (counted in inflight_ until finish() settles it).
  void run(Sub& s, std::shared_ptr<Delivery> del) {
    json::value payload = parse_or_null(del->msg.data);
    if (s.target.named) {
      rt_.engine.invoke(
          del->msg.function_id, std::move(payload),
          CallContext{0, {}, del->msg.traceparent, del->msg.baggage},
          [this, &s, del](Outcome o) { finish(s, del, !o.error, "function call failed"); });
      return;
    }
    const engine::Trigger* t = nullptr;
    for (size_t i = 0; i < s.triggers.size() && !t; ++i) {
      const auto& id = s.triggers[s.next_trigger++ % s.triggers.size()];
      auto it = rt_.engine.triggers().find(id);
      if (it != rt_.engine.triggers().end()) t = &it->second;
    }
    if (!t) return finish(s, del, false, "no subscriber");
    rt_.engine.fire(*t, std::move(payload), [this, &s, del](engine::FireStatus st, Outcome o) {
      if (st == engine::FireStatus::kSkipped || (st == engine::FireStatus::kInvoked && !o.error))
        return finish(s, del, true, {});
      std::string error;
      if (st == engine::FireStatus::kConditionFailed)
        error = "Condition function error: " + (o.error ? o.error->message : std::string());
      else
        error = "ErrorBody { code: \"" + o.error->code + "\", message: \"" + o.error->message +
                "\", stacktrace: None }";
      finish(s, del, false, std::move(error));
    });
  }

  void finish(Sub& s, const std::shared_ptr<Delivery>& del, bool ok, const std::string& error) {
    Delivery& d = *del;
    if (!ok && s.inline_retry && d.msg.attempts + 1 < s.max_attempts && !stopping_) {
      // Stays unacknowledged (and in inflight_): the same message again after the backoff.
      d.msg.attempts += 1;
      const uint64_t id = ++next_wait_;
      Waiting& w = waiting_[id];
      w.timer = std::make_unique<boost::asio::steady_timer>(rt_.io);
      w.sub = &s;
      w.del = del;
      w.timer->expires_after(std::chrono::milliseconds(s.target.backoff_ms));
      w.timer->async_wait([this, id](boost::system::error_code ec) {
        if (ec) return;
        auto it = waiting_.find(id);
        if (it == waiting_.end()) return;
        Waiting next = std::move(it->second);
        waiting_.erase(it);
        if (!broker_->current(*next.del)) {
          // The broker has it back (connection lost meanwhile) and delivers it again.
          --inflight_;
          return drained();
        }
        run(*next.sub, next.del);
      });
      return;
    }
    --inflight_;
    if (ok) {
      broker_->settle(d, Settle::kAck, {}, nullptr);
    } else if (s.inline_retry && d.msg.attempts + 1 < s.max_attempts) {
      // Shutting down: back to the head of the queue, for the next active consumer.
      broker_->settle(d, Settle::kRequeue, {}, nullptr);
    } else {
      d.msg.attempts += 1;
      const bool dead = d.msg.attempts >= s.max_attempts;
      if (dead)
        spdlog::warn("iii-queue: message {} of {} moved to the DLQ after {} attempts: {}", d.msg.id,
                     s.target.named ? s.target.name : s.target.name + "::" + s.target.function_id,
                     d.msg.attempts, error);
      broker_->settle(d, dead ? Settle::kDeadLetter : Settle::kRetry, error,
                      [](std::optional<std::string> e) {
                        if (e) spdlog::error("iii-queue: cannot settle a failed message: {}", *e);
                      });
    }
    drained();
  }

  void drained() {
    if (inflight_ == 0 && drained_) {
      auto f = std::move(drained_);
      drained_ = nullptr;
      f();
    }
  }

  // Shutting down: FIFO deliveries waiting for their next attempt go back to the head of their
  // queue now (the next active consumer runs them; their attempt count restarts).
  void release_waiting() {
    auto all = std::move(waiting_);
    waiting_.clear();
    for (auto& [id, w] : all) {
      w.timer->cancel();
      broker_->settle(*w.del, Settle::kRequeue, {}, nullptr);
      --inflight_;
    }
  }

  // The targets a console function's `queue`/`topic` names: a named queue, or every locally
  // subscribed function of a topic.
  std::vector<BrokerTarget> targets(const std::string& name) const {
    if (cfg_.queues.count(name)) return {named_target(name)};
    std::vector<BrokerTarget> out;
    for (auto& [key, s] : topic_subs_)
      if (s->target.name == name) out.push_back(s->target);
    return out;
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
          if (stopping_)
            return done(Outcome::fail("publish_failed", "the queue worker is shutting down"));
          QueueMessage msg;
          msg.id = msg.message_id = protocol::Uuid::random_v4().str();
          msg.traceparent = ctx.traceparent;
          msg.baggage = ctx.baggage;
          msg.created_at_ms = engine::Engine::now_ms();
          msg.data = json::serialize(data ? *data : json::value(nullptr));
          BrokerTarget t;
          t.name = *topic;
          broker_->publish(t, std::move(msg), [done](std::optional<std::string> error) {
            if (error) return done(Outcome::fail("publish_failed", "Failed to publish: " + *error));
            done(Outcome::ok(nullptr));
          });
        });

    add("iii::queue::redrive", "Move every dead letter of a queue back to it",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::redrive", input);
          auto t = queue::read_dlq_target(in, false);
          if (t.error) return done(std::move(*t.error));
          broker_->redrive(targets(t.queue), std::nullopt,
                           [done, name = t.queue](int64_t n, std::optional<std::string> err) {
                             done(queue::redrive_outcome(name, std::nullopt, n, err));
                           });
        });

    add("iii::queue::redrive_message", "Move one dead letter back to its queue",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::redrive_message", input);
          auto t = queue::read_dlq_target(in, true);
          if (t.error) return done(std::move(*t.error));
          broker_->redrive(targets(t.queue), t.message_id,
                           [done, t](int64_t n, std::optional<std::string> err) {
                             done(queue::redrive_outcome(t.queue, t.message_id, n, err));
                           });
        });

    add("iii::queue::discard_message", "Delete one dead letter",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("iii::queue::discard_message", input);
          auto t = queue::read_dlq_target(in, true);
          if (t.error) return done(std::move(*t.error));
          broker_->discard(targets(t.queue), t.message_id,
                           [done, t](int64_t n, std::optional<std::string> err) {
                             done(queue::discard_outcome(t.queue, t.message_id, n, err));
                           });
        });

    add("engine::queue::list_topics", "List queues and topics",
        [this](const CallContext&, json::value, Completion done) {
          json::array out;
          for (auto& [name, c] : cfg_.queues)
            out.push_back(json::object{{"name", name},
                                       {"broker_type", "function_queue"},
                                       {"subscriber_count", c.concurrency}});
          std::map<std::string, int64_t> topics;
          for (auto& [key, s] : topic_subs_) topics[s->target.name] += int64_t(s->triggers.size());
          for (auto& [topic, n] : topics)
            out.push_back(json::object{
                {"name", topic}, {"broker_type", broker_->kind()}, {"subscriber_count", n}});
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
          else
            for (auto& [key, s] : topic_subs_)
              if (s->target.name == topic) consumers += int64_t(s->triggers.size());
          broker_->counts(targets(topic),
                          [done, consumers](queue::QueueCounts k, std::optional<std::string> err) {
                            if (err) return done(Outcome::fail("topic_stats_failed", *err));
                            done(Outcome::ok(json::object{{"depth", k.ready},
                                                          {"consumer_count", consumers},
                                                          {"dlq_depth", k.dead},
                                                          {"config", nullptr}}));
                          });
        });

    add("engine::queue::dlq_topics", "Dead-letter counts per queue and topic",
        [this](const CallContext&, json::value, Completion done) {
          std::vector<BrokerTarget> all;
          std::vector<std::pair<std::string, std::string>> shown;
          for (auto& [name, c] : cfg_.queues) {
            all.push_back(named_target(name));
            shown.emplace_back(name, "function_queue");
          }
          for (auto& [key, s] : topic_subs_) {
            all.push_back(s->target);
            shown.emplace_back(s->target.name, broker_->kind());
          }
          broker_->dead_counts(
              all, [done, shown](std::vector<int64_t> n, std::optional<std::string> err) {
                if (err) return done(Outcome::fail("dlq_topics_failed", *err));
                std::map<std::pair<std::string, std::string>, int64_t> agg;
                for (size_t i = 0; i < shown.size() && i < n.size(); ++i) agg[shown[i]] += n[i];
                done(Outcome::ok(queue::dlq_topics_json(agg)));
              });
        });

    add("engine::queue::dlq_messages", "Dead letters of a queue or topic",
        [this](const CallContext&, json::value input, Completion done) {
          engine::BuiltinInput in("engine::queue::dlq_messages", input);
          auto page = queue::read_dlq_page(in);
          if (page.error) return done(std::move(*page.error));
          broker_->dead_letters(
              targets(page.topic), page.offset, std::min<int64_t>(page.limit, 10000),
              [done](std::vector<queue::DeadLetter> list, std::optional<std::string> err) {
                if (err) return done(Outcome::fail("dlq_messages_failed", *err));
                done(Outcome::ok(queue::dead_letters_json(list)));
              });
        });
  }

  engine::Runtime& rt_;
  std::string name_;
  queue::QueueWorkerConfig cfg_;
  std::unique_ptr<Broker> broker_;
  BrokerSubscriberTriggers triggers_;
  std::map<std::string, std::unique_ptr<Sub>> named_subs_;
  std::map<std::string, std::unique_ptr<Sub>> topic_subs_;  // "<topic>::<function_id>"
  std::map<std::string, std::string> trigger_topic_;        // trigger id -> topic_subs_ key
  std::vector<std::unique_ptr<Sub>> retired_;
  // FIFO deliveries waiting for their next attempt (inline retry), by wait id.
  struct Waiting {
    std::unique_ptr<boost::asio::steady_timer> timer;
    Sub* sub = nullptr;
    std::shared_ptr<Delivery> del;
  };
  std::map<uint64_t, Waiting> waiting_;
  uint64_t next_wait_ = 0;
  int64_t inflight_ = 0;
  bool stopping_ = false;
  std::function<void()> drained_;
};

std::optional<std::string> BrokerSubscriberTriggers::bind(const engine::Trigger& t) {
  return w_.bind_subscriber(t);
}
void BrokerSubscriberTriggers::unbind(const engine::Trigger& t) { w_.unbind_subscriber(t); }

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_broker_queue_worker(const config::WorkerEntry& entry,
                                                                engine::Runtime& rt,
                                                                queue::QueueWorkerConfig cfg) {
  return std::make_unique<BrokerQueueWorker>(entry, rt, std::move(cfg));
}

}  // namespace iii::workers
