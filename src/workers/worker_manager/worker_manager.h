#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-worker-manager`: one WebSocket listener for workers (several entries = several listeners).
std::unique_ptr<engine::BuiltinWorker> make_worker_manager(const config::WorkerEntry& entry,
                                                           engine::Runtime& rt);
}  // namespace iii::workers
