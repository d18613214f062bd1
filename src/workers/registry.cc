// The one table of built-in workers. Everything else that needs worker names derives from it:
// the names the config accepts, the mandatory and default worker sets, the trigger types only
// a built-in worker may provide, and the factories. Adding a worker is one line here.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "config/config.h"
#include "engine/builtin_worker.h"
#include "workers/bridge/bridge_worker.h"
#include "workers/cron/cron_worker.h"
#include "workers/engine_functions/engine_functions.h"
#include "workers/exec/exec_worker.h"
#include "workers/http/http_worker.h"
#include "workers/http_functions/http_functions_worker.h"
#include "workers/observability/observability.h"
#include "workers/pubsub/pubsub_worker.h"
#include "workers/queue/queue_worker.h"
#include "workers/state/state_worker.h"
#include "workers/stream/stream_worker.h"
#include "workers/telemetry/telemetry.h"
#include "workers/worker_manager/worker_manager.h"

namespace iii::engine {

namespace {
constexpr auto kMandatory = WorkerType::Role::kMandatory;
constexpr auto kDefault = WorkerType::Role::kDefault;
constexpr auto kOptional = WorkerType::Role::kOptional;
}  // namespace

const std::vector<WorkerType>& worker_types() {
  // Roles are the original's. Names without a factory are accepted by the config but not part
  // of this build yet: the mandatory and default sets leave them out.
  static const std::vector<WorkerType> kTypes = {
      {"iii-worker-manager", kMandatory, workers::make_worker_manager, {}},
      {"iii-engine-functions", kMandatory, workers::make_engine_functions, {}},
      {"iii-observability", kMandatory, workers::make_observability, {"log"}},
      {"iii-telemetry", kMandatory, workers::make_telemetry, {}},
      {"iii-http", kDefault, workers::make_http_worker, {"http"}},
      {"iii-state", kDefault, workers::make_state_worker, {"state"}},
      {"iii-stream",
       kDefault,
       workers::make_stream_worker,
       {"stream", "stream:join", "stream:leave"}},
      {"iii-queue", kDefault, workers::make_queue_worker, {"durable:subscriber"}},
      {"iii-pubsub", kDefault, workers::make_pubsub_worker, {"subscribe"}},
      {"iii-cron", kDefault, workers::make_cron_worker, {"cron"}},
      {"iii-http-functions", kOptional, workers::make_http_functions_worker, {}},
      {"iii-exec", kOptional, workers::make_exec_worker, {}},
      {"iii-bridge", kOptional, workers::make_bridge_worker, {}},
  };
  return kTypes;
}

const WorkerType* find_worker_type(std::string_view name) {
  for (const auto& t : worker_types())
    if (t.name == name) return &t;
  return nullptr;
}

std::optional<std::string_view> worker_for_trigger_type(std::string_view type) {
  for (const auto& t : worker_types())
    for (const auto& id : t.trigger_types)
      if (id == type) return t.name;
  if (type.rfind("engine::", 0) == 0) return "iii-engine-functions";
  return std::nullopt;
}

std::vector<std::unique_ptr<BuiltinWorker>> create_workers(const config::EngineConfig& cfg,
                                                           Runtime& rt) {
  std::vector<std::unique_ptr<BuiltinWorker>> out;
  for (const auto& entry : cfg.workers) {
    const WorkerType* type = find_worker_type(entry.name);
    if (!type || !type->factory) {
      std::string available;
      for (const auto& t : worker_types())
        if (t.factory) available += (available.empty() ? "" : ", ") + t.name;
      throw config::ConfigError(entry.source + ":" + std::to_string(entry.line) + ": worker '" +
                                entry.name + "' is not available in this engine build yet " +
                                "(available: " + available + ")");
    }
    out.push_back(type->factory(entry, rt));
  }
  return out;
}

}  // namespace iii::engine

namespace iii::config {

namespace {
std::vector<std::string> names_where(bool (*keep)(const engine::WorkerType&)) {
  std::vector<std::string> out;
  for (const auto& t : engine::worker_types())
    if (keep(t)) out.push_back(t.name);
  return out;
}
}  // namespace

const std::vector<std::string>& known_worker_names() {
  static const auto kNames = names_where([](const engine::WorkerType&) { return true; });
  return kNames;
}

const std::vector<std::string>& mandatory_worker_names() {
  static const auto kNames = names_where([](const engine::WorkerType& t) {
    return t.factory && t.role == engine::WorkerType::Role::kMandatory;
  });
  return kNames;
}

const std::vector<std::string>& default_worker_names() {
  static const auto kNames = names_where([](const engine::WorkerType& t) {
    return t.factory && t.role != engine::WorkerType::Role::kOptional;
  });
  return kNames;
}

bool is_mandatory_worker(const std::string& name) {
  const auto& m = mandatory_worker_names();
  return std::find(m.begin(), m.end(), name) != m.end();
}

}  // namespace iii::config
