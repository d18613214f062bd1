#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-cron`: the `cron` trigger type (6/7-field expressions, UTC), scheduled on the engine's
// event loop with one timer for all jobs, and the `kv` tick lock (one firing per tick across
// engines sharing a file_based store).
std::unique_ptr<engine::BuiltinWorker> make_cron_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt);
}  // namespace iii::workers
