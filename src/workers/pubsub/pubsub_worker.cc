#include "workers/pubsub/pubsub_worker.h"

#include <spdlog/spdlog.h>

#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "workers/pubsub/topic_index.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

// `adapter: {name: local}` (the default). The local adapter has no settings.
void read_pubsub_config(const config::WorkerEntry& entry) {
  config::WorkerConfigReader r(entry);
  YAML::Node adapter = r.get_node("adapter");
  r.finish();
  const YAML::Node cfg = config::read_adapter_block(r, adapter, "local", {"redis"});
  if (!cfg.IsNull() && cfg.size() > 0) r.fail_at(cfg, "adapter 'local' takes no config");
}

class PubSubWorker : public engine::BuiltinWorker, public engine::TriggerTypeHandler {
 public:
  PubSubWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    read_pubsub_config(entry);
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  void start() override {
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
    if (!index_.add(std::string(topic->get_string()), t.id, t.function_id))
      return "Subscription '" + t.id + "' is already registered";
    return std::nullopt;
  }

  void unbind(const engine::Trigger& t) override { index_.remove(t.id); }

 private:
  void publish(json::value input, Completion done) {
    engine::BuiltinInput in("publish", input);
    auto topic = in.optional_string("topic");
    const json::value* data = in.optional_value("data");
    if (!in.ok()) return done(in.failure());
    if (!topic || topic->empty()) return done(Outcome::fail("topic_not_set", "Topic is not set"));
    const json::value payload = data ? *data : json::value(nullptr);
    // A handler may (un)subscribe while we deliver: take the function ids first.
    const std::vector<std::string> targets = index_.functions_of(*topic);
    engine::Engine::Cork cork(rt_.engine);  // one write per subscribed worker, not per function
    for (const auto& fid : targets) {
      rt_.engine.invoke(fid, payload, CallContext{}, [fid, topic = *topic](Outcome o) {
        if (o.error)
          spdlog::debug("publish to '{}': subscriber {} failed: {}: {}", topic, fid, o.error->code,
                        o.error->message);
      });
    }
    done(Outcome::ok(nullptr));
  }

  engine::Runtime& rt_;
  std::string name_;
  pubsub::TopicIndex index_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_pubsub_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<PubSubWorker>(entry, rt);
}

}  // namespace iii::workers
