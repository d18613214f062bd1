// The seam between iii-queue's front (enqueue action, durable:subscriber triggers, console
// functions: broker_worker.cc) and an external message broker that keeps the messages (RabbitMQ
// now; the builtin adapter has its own worker, queue_worker.cc, over QueueStore).
//
// Every callback runs on the engine thread. A broker may do its work on threads of its own and
// post the results back; after stop() no callback runs any more.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "workers/queue/queue_store.h"

namespace iii::workers::queue {

// Where messages go and come from: a named queue, or one subscribed function of a topic.
struct BrokerTarget {
  bool named = false;
  std::string name;         // named queue name, or topic
  std::string function_id;  // topic subscribers
  int64_t backoff_ms = 1000;
  // FIFO: messages carry their group (QueueMessage::group; none for a topic subscriber, which is
  // then one group). The redis broker keeps each group in order across engines and retries
  // and hands out one message per group at a time; the rabbitmq broker uses single_active.
  bool fifo = false;
  // RabbitMQ: declare the queue with x-single-active-consumer (FIFO named queues), so that one
  // consumer among all engines gets its messages at a time. Other brokers ignore it.
  bool single_active = false;
  bool operator==(const BrokerTarget& o) const {
    return named == o.named && name == o.name && function_id == o.function_id;
  }
};

// One message handed to a consumer. `handle` identifies the delivery for settle(); its meaning
// belongs to the broker.
struct Delivery {
  uint64_t consumer = 0;
  uint64_t handle = 0;
  uint64_t generation = 0;
  QueueMessage msg;  // id (message id), function_id, group, attempts, traceparent, baggage, data
};

enum class Settle {
  kAck,         // handled: gone
  kRetry,       // failed: back after the target's backoff with msg.attempts (already counted)
  kDeadLetter,  // failed for good: to the DLQ with `error`
  kRequeue,     // not handled (shutting down): back to the queue as it was
};

class Broker {
 public:
  using Done = std::function<void(std::optional<std::string> error)>;
  virtual ~Broker() = default;

  // Connects (in the background; failures are logged and retried with backoff).
  virtual void start() = 0;
  // Closes the connections; deliveries not settled go back to their queues (broker-side).
  virtual void stop() = 0;

  // Declares the named queues' topology up front (so a publish never races its declaration).
  virtual void declare_named(const std::vector<BrokerTarget>& named) = 0;
  virtual void publish(const BrokerTarget& to, QueueMessage msg, Done done) = 0;

  // Starts consuming `from` with at most `prefetch` unsettled deliveries; returns the id.
  virtual uint64_t consume(const BrokerTarget& from, int64_t prefetch,
                           std::function<void(Delivery)> on_delivery) = 0;
  virtual void cancel(uint64_t consumer) = 0;
  // Settles a delivery; `done` (optional) once the broker has it (for kRetry / kDeadLetter: the
  // copy is confirmed and the original acknowledged).
  virtual void settle(const Delivery& d, Settle how, const std::string& error, Done done) = 0;
  // False when the broker has taken `d` back already (its consumer's channel or connection went
  // away, so it is delivered again): a delivery held for a later attempt is then dropped.
  virtual bool current(const Delivery&) { return true; }

  // Console functions over a set of targets.
  virtual void counts(std::vector<BrokerTarget> targets,
                      std::function<void(QueueCounts, std::optional<std::string>)> done) = 0;
  virtual void dead_counts(
      std::vector<BrokerTarget> targets,
      std::function<void(std::vector<int64_t>, std::optional<std::string>)> done) = 0;
  virtual void dead_letters(
      std::vector<BrokerTarget> targets, int64_t offset, int64_t limit,
      std::function<void(std::vector<DeadLetter>, std::optional<std::string>)> done) = 0;
  // Moves dead letters (all, or the one whose id is `id`) back to their queues with attempts 0.
  virtual void redrive(std::vector<BrokerTarget> targets, std::optional<std::string> id,
                       std::function<void(int64_t, std::optional<std::string>)> done) = 0;
  virtual void discard(std::vector<BrokerTarget> targets, std::string id,
                       std::function<void(int64_t, std::optional<std::string>)> done) = 0;

  // "rabbitmq", "redis": the broker_type of topics in engine::queue::list_topics.
  virtual std::string kind() const = 0;
};

}  // namespace iii::workers::queue
