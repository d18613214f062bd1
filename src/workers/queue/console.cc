#include "workers/queue/console.h"

#include <boost/json/parse.hpp>

namespace iii::workers::queue {

namespace json = boost::json;
using engine::Outcome;

json::value parse_or_null(const std::string& s) {
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  return ec ? json::value(nullptr) : v;
}

DlqTarget read_dlq_target(engine::BuiltinInput& in, bool need_id) {
  DlqTarget t;
  t.queue = in.optional_string("queue").value_or("");
  if (need_id) t.message_id = in.optional_string("message_id").value_or("");
  if (!in.ok())
    t.error = in.failure();
  else if (t.queue.empty())
    t.error = Outcome::fail("queue_not_set", "Queue name is required");
  else if (need_id && t.message_id.empty())
    t.error = Outcome::fail("message_id_not_set", "Message ID is required");
  return t;
}

DlqPage read_dlq_page(engine::BuiltinInput& in) {
  DlqPage p;
  p.topic = in.optional_string("topic").value_or("");
  for (auto [key, out] : {std::pair{"offset", &p.offset}, std::pair{"limit", &p.limit}})
    if (auto* v = in.optional_value(key); v && !v->is_null()) {
      if (v->is_int64() && v->get_int64() >= 0)
        *out = v->get_int64();
      else if (v->is_uint64())
        *out = int64_t(std::min<uint64_t>(v->get_uint64(), INT64_MAX));
      else
        in.fail(std::string("field `") + key + "` must be a non-negative integer");
    }
  if (!in.ok())
    p.error = in.failure();
  else if (p.topic.empty())
    p.error = Outcome::fail("topic_required", "topic is required");
  return p;
}

Outcome redrive_outcome(const std::string& queue, const std::optional<std::string>& id, int64_t n,
                        const std::optional<std::string>& err) {
  if (!id) {
    if (err)
      return Outcome::fail("redrive_failed",
                           "Failed to redrive DLQ for queue '" + queue + "': " + *err);
    return Outcome::ok(json::object{{"queue", queue}, {"redriven", n}});
  }
  if (err) return Outcome::fail("redrive_message_failed", "Failed to redrive DLQ message: " + *err);
  return Outcome::ok(json::object{{"queue", queue}, {"message_id", *id}, {"redriven", n}});
}

Outcome discard_outcome(const std::string& queue, const std::string& id, int64_t n,
                        const std::optional<std::string>& err) {
  if (err) return Outcome::fail("discard_message_failed", "Failed to discard DLQ message: " + *err);
  return Outcome::ok(
      json::object{{"queue", queue}, {"message_id", id}, {"redriven", n}, {"discarded", n}});
}

json::array dlq_topics_json(const std::map<std::pair<std::string, std::string>, int64_t>& n) {
  json::array out;
  for (const auto& [k, c] : n)
    out.push_back(
        json::object{{"topic", k.first}, {"broker_type", k.second}, {"message_count", c}});
  return out;
}

json::array dead_letters_json(const std::vector<DeadLetter>& list) {
  json::array out;
  for (const auto& d : list)
    out.push_back(json::object{{"id", d.msg.id},
                               {"payload", parse_or_null(d.msg.data)},
                               {"error", d.error},
                               {"failed_at", d.failed_at_ms / 1000},
                               {"retries", d.msg.attempts},
                               {"size_bytes", d.msg.data.size()}});
  return out;
}

}  // namespace iii::workers::queue
