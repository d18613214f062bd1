// The table of built-in worker types. Names the config accepts but this build does not
// provide yet have no factory and are reported clearly at startup.
#include <spdlog/spdlog.h>

#include "engine/builtin_worker.h"
#include "workers/engine_functions/engine_functions.h"
#include "workers/observability/observability.h"
#include "workers/state/state_worker.h"
#include "workers/stream/stream_worker.h"
#include "workers/worker_manager/worker_manager.h"

namespace iii::engine {

const std::vector<WorkerType>& worker_types() {
  static const std::vector<WorkerType> kTypes = {
      {"iii-worker-manager", workers::make_worker_manager},
      {"iii-engine-functions", workers::make_engine_functions},
      {"iii-observability", workers::make_observability},
      {"iii-state", workers::make_state_worker},
      {"iii-stream", workers::make_stream_worker},
  };
  return kTypes;
}

std::vector<std::unique_ptr<BuiltinWorker>> create_workers(const config::EngineConfig& cfg,
                                                           Runtime& rt) {
  std::vector<std::unique_ptr<BuiltinWorker>> out;
  for (const auto& entry : cfg.workers) {
    const WorkerType* type = nullptr;
    for (const auto& t : worker_types())
      if (t.name == entry.name) type = &t;
    if (!type) {
      std::string available;
      for (const auto& t : worker_types()) available += (available.empty() ? "" : ", ") + t.name;
      throw config::ConfigError(entry.source + ":" + std::to_string(entry.line) + ": worker '" +
                                entry.name + "' is not available in this engine build yet " +
                                "(available: " + available + ")");
    }
    out.push_back(type->factory(entry, rt));
  }
  return out;
}

}  // namespace iii::engine
