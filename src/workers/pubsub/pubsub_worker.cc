#include "workers/pubsub/pubsub_worker.h"

#include <spdlog/spdlog.h>

#include <boost/json/parse.hpp>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "protocol/json_writer.h"
#include "storage/redis/redis_client.h"
#include "workers/pubsub/topic_index.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

// `adapter: {name: local}` (the default; no settings) or `{name: redis, config: {redis_url}}`.
// Returns the Redis URL for the redis adapter.
std::optional<std::string> read_pubsub_config(const config::WorkerEntry& entry) {
  config::WorkerConfigReader r(entry);
  YAML::Node adapter = r.get_node("adapter");
  r.finish();
  const config::AdapterChoice choice = config::read_adapter_choice(r, adapter, {"local", "redis"});
  const YAML::Node& cfg = choice.config;
  if (choice.name == "local") {
    if (!cfg.IsNull() && cfg.size() > 0) r.fail_at(cfg, "adapter 'local' takes no config");
    return std::nullopt;
  }
  std::string url = "redis://localhost:6379";
  if (!cfg.IsNull()) {
    for (const auto& kv : cfg) {
      const auto key = kv.first.as<std::string>();
      if (key != "redis_url")
        r.fail_at(kv.first, "adapter.config: unknown key '" + key + "' (known keys: redis_url)");
      url = kv.second.as<std::string>("");
      try {
        storage::redis::RedisUrl::parse(url);
      } catch (const std::invalid_argument& e) {
        r.fail_at(kv.second, std::string("adapter.config.redis_url: ") + e.what());
      }
    }
  }
  return url;
}

class PubSubWorker : public engine::BuiltinWorker, public engine::TriggerTypeHandler {
 public:
  PubSubWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    if (auto url = read_pubsub_config(entry)) {
      storage::redis::ClientOptions o;
      o.url = *url;
      o.name = entry.instance_name;
      pub_ = std::make_unique<storage::redis::RedisClient>(rt_.io, o);
      o.mode = storage::redis::ClientOptions::Mode::kSubscriber;
      sub_ = std::make_unique<storage::redis::RedisClient>(rt_.io, o);
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  void start() override {
    if (pub_) {
      pub_->start();
      sub_->start();
    }
    engine::TriggerType tt;
    tt.id = "subscribe";
    tt.description = "Receives every message published to its topic (config {topic})";
    rt_.engine.register_builtin_trigger_type(std::move(tt), this);

    engine::FunctionInfo info;
    info.id = "publish";
    info.description = "Publish {topic, data} to every function subscribed to the topic";
    rt_.engine.register_builtin(std::move(info), name_,
                                [this](const CallContext&, json::value input, Completion done) {
                                  publish(std::move(input), std::move(done));
                                });
  }

  std::optional<std::string> bind(const engine::Trigger& t) override {
    const json::value* topic =
        t.config.is_object() ? t.config.get_object().if_contains("topic") : nullptr;
    if (!topic || topic->is_null() || (topic->is_string() && topic->get_string().empty()))
      return std::string(
          "Topic is not set: a subscribe trigger needs config {topic: <non-empty string>}");
    if (!topic->is_string())
      return std::string("Invalid subscribe trigger config: topic must be a string");
    const std::string name(topic->get_string());
    const bool first = !index_.has_topic(name);
    if (!index_.add(name, t.id, t.function_id))
      return "Subscription '" + t.id + "' is already registered";
    // One Redis subscription per topic; every local trigger of the topic gets its messages.
    if (sub_ && first)
      sub_->subscribe(name, [this](std::string_view channel, std::string_view payload) {
        boost::system::error_code ec;
        json::value data = json::parse(payload, ec);
        if (ec) {
          spdlog::warn("iii-pubsub: message on '{}' is not JSON; delivered as a string", channel);
          data = json::string(payload);
        }
        deliver(std::string(channel), data);
      });
    return std::nullopt;
  }

  void unbind(const engine::Trigger& t) override {
    const std::string* topic = index_.topic_of(t.id);
    if (!topic) return;
    const std::string name = *topic;
    index_.remove(t.id);
    if (sub_ && !index_.has_topic(name)) sub_->unsubscribe(name);
  }

  void stop() override {
    if (sub_) sub_->stop();
  }

 private:
  void publish(json::value input, Completion done) {
    engine::BuiltinInput in("publish", input);
    auto topic = in.optional_string("topic");
    const json::value* data = in.optional_value("data");
    if (!in.ok()) return done(in.failure());
    if (!topic || topic->empty()) return done(Outcome::fail("topic_not_set", "Topic is not set"));
    const json::value payload = data ? *data : json::value(nullptr);
    if (pub_) {
      std::string text;
      protocol::append_json(text, payload);
      pub_->command({"PUBLISH", *topic, std::move(text)}, [done](storage::redis::Reply r) {
        if (r.is_error())
          return done(Outcome::fail("publish_error", "Failed to publish: " + r.str));
        done(Outcome::ok(nullptr));
      });
      return;
    }
    deliver(*topic, payload);
    done(Outcome::ok(nullptr));
  }

  // Invokes every function subscribed to `topic` here.
  void deliver(const std::string& topic, const json::value& payload) {
    // A handler may (un)subscribe while we deliver: take the function ids first.
    const std::vector<std::string> targets = index_.functions_of(topic);
    engine::Engine::Cork cork(rt_.engine);  // one write per subscribed worker, not per function
    for (const auto& fid : targets) {
      rt_.engine.invoke(fid, payload, CallContext{}, [fid, topic](Outcome o) {
        if (o.error)
          spdlog::debug("publish to '{}': subscriber {} failed: {}: {}", topic, fid, o.error->code,
                        o.error->message);
      });
    }
  }

  engine::Runtime& rt_;
  std::string name_;
  pubsub::TopicIndex index_;
  std::unique_ptr<storage::redis::RedisClient> pub_;  // redis adapter: PUBLISH
  std::unique_ptr<storage::redis::RedisClient> sub_;  // redis adapter: SUBSCRIBE
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_pubsub_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<PubSubWorker>(entry, rt);
}

}  // namespace iii::workers
