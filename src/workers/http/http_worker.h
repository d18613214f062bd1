#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-http`: functions bound to HTTP routes by `http` triggers (modules.md §7).
std::unique_ptr<engine::BuiltinWorker> make_http_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt);
}  // namespace iii::workers
