#include "workers/queue/queue_config.h"

#include <charconv>
#include <set>

namespace iii::workers::queue {
namespace {

int64_t int_at(config::WorkerConfigReader& r, const YAML::Node& v, const std::string& what,
               int64_t min, int64_t max) {
  int64_t out = 0;
  const std::string s = v.IsScalar() ? v.Scalar() : "";
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    r.fail_at(v, what + " must be an integer");
  if (out < min || out > max)
    r.fail_at(v, what + " must be between " + std::to_string(min) + " and " + std::to_string(max) +
                     " (got " + s + ")");
  return out;
}

std::string string_at(config::WorkerConfigReader& r, const YAML::Node& v, const std::string& what) {
  if (!v.IsScalar()) r.fail_at(v, what + " must be a string");
  return v.Scalar();
}

void read_rabbitmq(config::WorkerConfigReader& r, const YAML::Node& cfg, QueueWorkerConfig& out) {
  for (const auto& kv : cfg) {
    const auto key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    const std::string what = "adapter.config." + key;
    if (key == "amqp_url") {
      out.amqp_url = string_at(r, v, what);
      if (out.amqp_url.rfind("amqp://", 0) != 0 && out.amqp_url.rfind("amqps://", 0) != 0)
        r.fail_at(v, what + " must be an amqp:// or amqps:// URL (got '" + out.amqp_url + "')");
    } else if (key == "max_attempts") {
      out.max_attempts = int_at(r, v, what, 1, 1000000);
    } else if (key == "prefetch_count") {
      out.prefetch_count = int_at(r, v, what, 1, 65535);
    } else if (key == "backoff_ms") {
      out.backoff_ms = int_at(r, v, what, 0, 86400000);
    } else if (key == "queue_mode") {
      const auto m = string_at(r, v, what);
      if (m != "standard" && m != "fifo" && m != "concurrent")
        r.fail_at(v, what + " must be standard or fifo (got '" + m + "')");
      out.fifo_mode = m == "fifo";
    } else {
      r.fail_at(kv.first, "adapter.config: unknown key '" + key +
                              "' (known keys: amqp_url, backoff_ms, max_attempts, prefetch_count, "
                              "queue_mode)");
    }
  }
}

void read_redis(config::WorkerConfigReader& r, const YAML::Node& cfg, QueueWorkerConfig& out) {
  for (const auto& kv : cfg) {
    const auto key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    const std::string what = "adapter.config." + key;
    if (key == "redis_url") {
      out.redis_url = string_at(r, v, what);
      if (out.redis_url.rfind("redis://", 0) != 0 && out.redis_url.rfind("rediss://", 0) != 0)
        r.fail_at(v, what + " must be a redis:// or rediss:// URL");
    } else if (key == "max_attempts") {
      out.max_attempts = int_at(r, v, what, 1, 1000000);
    } else if (key == "backoff_ms") {
      out.backoff_ms = int_at(r, v, what, 0, 86400000);
    } else if (key == "concurrency") {
      out.concurrency = int_at(r, v, what, 1, 100000);
    } else if (key == "poll_interval_ms") {
      out.poll_interval_ms = int_at(r, v, what, 10, 60000);
    } else if (key == "visibility_timeout_ms") {
      out.visibility_timeout_ms = int_at(r, v, what, 100, 86400000);
    } else if (key == "mode") {
      const auto m = string_at(r, v, what);
      if (m != "fifo" && m != "concurrent")
        r.fail_at(v, what + " must be fifo or concurrent (got '" + m + "')");
      out.fifo_mode = m == "fifo";
    } else {
      r.fail_at(kv.first, "adapter.config: unknown key '" + key +
                              "' (known keys: backoff_ms, concurrency, max_attempts, mode, "
                              "poll_interval_ms, redis_url, visibility_timeout_ms)");
    }
  }
}

void read_adapter(config::WorkerConfigReader& r, QueueWorkerConfig& out) {
  const YAML::Node adapter = r.get_node("adapter");
  // The adapters this build has: the name is checked by read_adapter_block.
  std::string available = "builtin";
  if (adapter && adapter.IsMap() && adapter["name"] && adapter["name"].IsScalar()) {
    const std::string name = adapter["name"].Scalar();
    available = name == "builtin" || name == "rabbitmq" || name == "redis"
                    ? name
                    : "builtin, rabbitmq, redis";
  }
  const YAML::Node cfg = config::read_adapter_block(r, adapter, available, {"bridge"});
  out.adapter = available;
  if (available == "rabbitmq") {
    if (!cfg.IsNull()) read_rabbitmq(r, cfg, out);
    return;
  }
  if (available == "redis") {
    if (!cfg.IsNull()) read_redis(r, cfg, out);
    return;
  }
  if (cfg.IsNull()) return;
  for (const auto& kv : cfg) {
    const auto key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    const std::string what = "adapter.config." + key;
    if (key == "store_method") {
      const auto m = string_at(r, v, what);
      if (m == "in_memory")
        out.store.file_based = false;
      else if (m == "file_based")
        out.store.file_based = true;
      else
        r.fail_at(v, what + " must be in_memory or file_based (got '" + m + "')");
    } else if (key == "file_path") {
      out.store.file_path = string_at(r, v, what);
      if (out.store.file_path.empty()) r.fail_at(v, what + " must be a non-empty string");
    } else if (key == "fsync") {
      if (!v.IsScalar() || (v.Scalar() != "true" && v.Scalar() != "false"))
        r.fail_at(v, what + " must be true or false");
      out.store.fsync = v.Scalar() == "true";
    } else if (key == "max_attempts") {
      out.max_attempts = int_at(r, v, what, 0, 1000000);
    } else if (key == "backoff_ms") {
      out.backoff_ms = int_at(r, v, what, 0, 86400000);
    } else if (key == "concurrency") {
      out.concurrency = int_at(r, v, what, 1, 100000);
    } else if (key == "mode") {
      const auto m = string_at(r, v, what);
      if (m != "fifo" && m != "concurrent")
        r.fail_at(v, what + " must be fifo or concurrent (got '" + m + "')");
      out.fifo_mode = m == "fifo";
    } else if (key == "poll_interval_ms") {
      int_at(r, v, what, 0, 86400000);
    } else if (key == "save_interval_ms" || key == "channel_size") {
      // Accepted for compatibility: an acknowledged message is already committed.
      int_at(r, v, what, 0, INT64_MAX);
    } else {
      r.fail_at(kv.first, "adapter.config: unknown key '" + key +
                              "' (known keys: backoff_ms, channel_size, concurrency, file_path, "
                              "fsync, max_attempts, mode, poll_interval_ms, save_interval_ms, "
                              "store_method)");
    }
  }
}

void read_queues(config::WorkerConfigReader& r, QueueWorkerConfig& out) {
  YAML::Node queues = r.get_node("queue_configs");
  if (!queues || queues.IsNull()) return;
  if (!queues.IsMap()) r.fail("queue_configs", "key 'queue_configs' must be a mapping of queues");
  for (const auto& entry : queues) {
    const auto name = entry.first.as<std::string>();
    const YAML::Node& q = entry.second;
    if (name.empty()) r.fail_at(entry.first, "queue_configs: a queue name must not be empty");
    NamedQueueConfig c;
    std::string type = "standard";
    const YAML::Node* type_node = nullptr;
    if (!q.IsNull()) {
      if (!q.IsMap()) r.fail_at(q, "queue_configs." + name + " must be a mapping");
      for (const auto& kv : q) {
        const auto key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        const std::string what = "queue_configs." + name + "." + key;
        if (key == "max_retries")
          c.max_retries = int_at(r, v, what, 0, 1000000);
        else if (key == "concurrency")
          c.concurrency = int_at(r, v, what, 1, 100000);
        else if (key == "type") {
          type = string_at(r, v, what);
          type_node = &v;
        } else if (key == "message_group_field")
          c.message_group_field = string_at(r, v, what);
        else if (key == "backoff_ms")
          c.backoff_ms = int_at(r, v, what, 0, 86400000);
        else if (key == "poll_interval_ms")
          c.poll_interval_ms = int_at(r, v, what, 0, 86400000);
        else
          r.fail_at(kv.first, "queue_configs." + name + ": unknown key '" + key +
                                  "' (known keys: backoff_ms, concurrency, max_retries, "
                                  "message_group_field, poll_interval_ms, type)");
      }
    }
    if (type != "standard" && type != "fifo")
      r.fail_at(*type_node, "Queue '" + name + "' has invalid type '" + type +
                                "'. Must be 'standard' or 'fifo'");
    c.fifo = type == "fifo";
    if (c.fifo && c.message_group_field.empty())
      r.fail_at(q, "Queue '" + name + "' is of type 'fifo' but 'message_group_field' is not set");
    out.queues[name] = c;
  }
}

}  // namespace

QueueWorkerConfig read_queue_config(config::WorkerConfigReader& r) {
  QueueWorkerConfig out;
  read_adapter(r, out);
  read_queues(r, out);
  r.finish();
  return out;
}

std::optional<std::string> read_subscriber_config(const boost::json::value& config,
                                                  SubscriberConfig& s) {
  if (!config.is_object()) return "Failed to parse trigger config: expected an object";
  const auto& c = config.get_object();
  if (auto* v = c.if_contains("topic"); v && v->is_string())
    s.topic = v->get_string();
  else if (v && !v->is_null())
    return "Failed to parse trigger config: `topic` must be a string";
  if (auto* v = c.if_contains("queue_config"); v && !v->is_null()) {
    if (!v->is_object()) return "Failed to parse trigger config: `queue_config` must be an object";
    for (auto& [k, val] : v->get_object()) {
      auto int_field = [&](int64_t min, int64_t& out) -> std::optional<std::string> {
        if (val.is_null()) return std::nullopt;
        std::optional<int64_t> n;
        if (val.is_int64())
          n = val.get_int64();
        else if (val.is_uint64() && val.get_uint64() <= uint64_t(INT64_MAX))
          n = int64_t(val.get_uint64());
        else if (val.is_double() && val.get_double() == double(int64_t(val.get_double())))
          n = int64_t(val.get_double());
        if (!n || *n < min)
          return "Failed to parse trigger config: `queue_config." + std::string(k) +
                 "` must be an integer >= " + std::to_string(min);
        out = *n;
        return std::nullopt;
      };
      std::optional<std::string> err;
      int64_t ignored = 0;
      if (k == "maxRetries")
        err = int_field(0, s.cfg.max_retries);
      else if (k == "concurrency")
        err = int_field(1, s.cfg.concurrency);
      else if (k == "backoffDelayMs")
        err = int_field(0, s.cfg.backoff_ms);
      else if (k == "visibilityTimeout" || k == "delaySeconds")
        err = int_field(0, ignored);
      else if (k == "type" || k == "backoffType") {
        if (!val.is_string() && !val.is_null())
          err = "Failed to parse trigger config: `queue_config." + std::string(k) +
                "` must be a string";
        else if (k == "type" && val.is_string())
          s.cfg.fifo = val.get_string() == "fifo";
      }
      if (err) return err;
    }
  }
  return std::nullopt;
}

}  // namespace iii::workers::queue
