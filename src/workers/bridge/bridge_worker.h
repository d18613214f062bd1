#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-bridge`: a worker connection to another iii engine. `forward` entries are local
// functions that call remote ones, `expose` entries remote functions that call local ones, and
// `bridge.invoke` / `bridge.invoke_async` call any remote function.
std::unique_ptr<engine::BuiltinWorker> make_bridge_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt);
}  // namespace iii::workers
