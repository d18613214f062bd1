#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-exec`: runs a pipeline of shell commands (`exec`), restarts it when a file matching one
// of the `watch` globs changes, and never lets its processes outlive the engine.
std::unique_ptr<engine::BuiltinWorker> make_exec_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt);
}  // namespace iii::workers
