// iii-queue's `rabbitmq` adapter: a Broker over rabbitmq-c (blocking), run on two threads of its
// own: a control thread (publishes with publisher confirms, declarations, console operations)
// and a consumer thread (deliveries and acknowledgements). Results are posted to the engine
// thread. See docs/architecture.md ("iii-queue on RabbitMQ").
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "workers/queue/broker.h"

namespace iii::workers::queue {

using Poster = std::function<void(std::function<void()>)>;

// Throws std::invalid_argument when `amqp_url` cannot be parsed.
std::unique_ptr<Broker> make_rabbitmq_broker(const std::string& amqp_url, Poster post);

// host:port/vhost of an AMQP URL, without the credentials (for messages).
std::string redacted_amqp_url(const std::string& amqp_url);

}  // namespace iii::workers::queue
