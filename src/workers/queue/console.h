// The input checks and result shapes of iii-queue's DLQ and console functions, shared by the
// builtin worker (queue_worker.cc) and the front over an external broker (broker_worker.cc), so
// both answer with the same errors and shapes.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "workers/queue/queue_store.h"

namespace iii::workers::queue {

// A stored payload as JSON; text that does not parse becomes null.
boost::json::value parse_or_null(const std::string& s);

// `queue` and (when `need_id`) `message_id` of redrive / redrive_message / discard_message.
// On bad input, `error` is the outcome to answer.
struct DlqTarget {
  std::string queue;
  std::string message_id;
  std::optional<engine::Outcome> error;
};
DlqTarget read_dlq_target(engine::BuiltinInput& in, bool need_id);

// `topic`, `offset` (0) and `limit` (50) of engine::queue::dlq_messages.
struct DlqPage {
  std::string topic;
  int64_t offset = 0;
  int64_t limit = 50;
  std::optional<engine::Outcome> error;
};
DlqPage read_dlq_page(engine::BuiltinInput& in);

// The answers of redrive (no id), redrive_message (an id) and discard_message.
engine::Outcome redrive_outcome(const std::string& queue, const std::optional<std::string>& id,
                                int64_t n, const std::optional<std::string>& err);
engine::Outcome discard_outcome(const std::string& queue, const std::string& id, int64_t n,
                                const std::optional<std::string>& err);

// engine::queue::dlq_topics rows from counts by (name, broker_type).
boost::json::array dlq_topics_json(const std::map<std::pair<std::string, std::string>, int64_t>& n);
// engine::queue::dlq_messages rows.
boost::json::array dead_letters_json(const std::vector<DeadLetter>& list);

}  // namespace iii::workers::queue
