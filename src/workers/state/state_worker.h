#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-state`: key-value state (state::*) over the storage layer, and the `state` trigger type.
std::unique_ptr<engine::BuiltinWorker> make_state_worker(const config::WorkerEntry& entry,
                                                         engine::Runtime& rt);
}  // namespace iii::workers
