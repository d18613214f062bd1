#include "workers/bridge/bridged_queue.h"

#include <spdlog/spdlog.h>

#include <map>

#include "config/config.h"
#include "engine/engine.h"
#include "protocol/messages.h"
#include "protocol/uuid.h"
#include "workers/bridge/bridge_adapter.h"
#include "workers/bridge/remote_engine.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

class BridgedQueueWorker : public engine::BuiltinWorker, public engine::TriggerTypeHandler {
 public:
  BridgedQueueWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    url_ = bridge::read_bridge_adapter(r).value_or("ws://localhost:49134");
    const YAML::Node queues = r.get_node("queue_configs");
    r.finish();
    if (queues && !queues.IsNull() && !(queues.IsMap() && queues.size() == 0))
      r.fail("queue_configs",
             "queue_configs (named queues) need the builtin adapter; with the bridge adapter "
             "only durable topics are served, by the remote engine");
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  void start() override {
    remote_ = bridge::RemoteEngine::connect(rt_.io, url_, name_);
    engine::TriggerType tt;
    tt.id = "durable:subscriber";
    tt.description = "Durable topic subscriber, served by the engine at " + url_;
    rt_.engine.register_builtin_trigger_type(std::move(tt), this);
    // Named queues live on no engine here: enqueue actions get a clear refusal.
    rt_.engine.set_action_handler(
        protocol::ActionType::kEnqueue,
        [](const CallContext&, protocol::InvokeFunction&& m, Completion done) {
          if (done)
            done(Outcome::fail("enqueue_error", "Queue '" + m.action.queue +
                                                    "' not found (the bridge adapter serves "
                                                    "durable topics only)"));
        });
    for (const char* fid :
         {"iii::durable::publish", "iii::queue::redrive", "iii::queue::redrive_message",
          "iii::queue::discard_message", "engine::queue::list_topics", "engine::queue::topic_stats",
          "engine::queue::dlq_topics", "engine::queue::dlq_messages"}) {
      engine::FunctionInfo info;
      info.id = fid;
      info.description = std::string("Served by the engine at ") + url_;
      rt_.engine.register_builtin(std::move(info), name_,
                                  [remote = remote_, id = std::string(fid)](
                                      const CallContext&, json::value in, Completion done) {
                                    if (in.is_object()) in.get_object().erase("_caller_worker_id");
                                    remote->call(id, std::move(in), std::nullopt, std::move(done));
                                  });
    }
    spdlog::info("iii-queue: durable topics served by the engine at {} (bridge adapter)", url_);
  }

  void stop() override {
    rt_.engine.set_action_handler(protocol::ActionType::kEnqueue, {});
    if (remote_) remote_->shutdown();
  }

  // ---- durable:subscriber ----
  std::optional<std::string> bind(const engine::Trigger& t) override {
    if (!t.config.is_object()) return "durable:subscriber config must be an object";
    const auto* topic = t.config.get_object().if_contains("topic");
    if (!topic || !topic->is_string() || topic->get_string().empty())
      return "durable:subscriber needs a non-empty `topic`";
    // The condition runs here, with the handler (Engine::fire), so the remote config has none.
    json::object remote_config = t.config.get_object();
    remote_config.erase("condition_function_id");
    const std::string fid = "iii::durable::bridge::sub::" + protocol::Uuid::random_v4().str();
    auto& eng = rt_.engine;
    remote_->expose(fid, [&eng, trigger = t](json::value in, Completion done) {
      if (in.is_object()) in.get_object().erase("_caller_worker_id");
      eng.fire(trigger, std::move(in), [done](engine::FireStatus status, Outcome o) {
        if (status == engine::FireStatus::kSkipped) return done(Outcome::ok(nullptr));
        done(std::move(o));
      });
    });
    const std::string remote_trigger =
        remote_->add_remote_trigger("durable:subscriber", fid, std::move(remote_config));
    bound_[t.id] = {fid, remote_trigger};
    return std::nullopt;
  }

  void unbind(const engine::Trigger& t) override {
    auto it = bound_.find(t.id);
    if (it == bound_.end()) return;
    remote_->remove_remote_trigger(it->second.second);
    remote_->unexpose(it->second.first);
    bound_.erase(it);
  }

 private:
  engine::Runtime& rt_;
  std::string name_;
  std::string url_;
  std::shared_ptr<bridge::RemoteEngine> remote_;
  std::map<std::string, std::pair<std::string, std::string>>
      bound_;  // trigger → (fn, remote trigger)
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_bridged_queue_worker(const config::WorkerEntry& entry,
                                                                 engine::Runtime& rt) {
  return std::make_unique<BridgedQueueWorker>(entry, rt);
}

}  // namespace iii::workers
