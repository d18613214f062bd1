#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-engine-functions`: engine::workers::register|list, engine::functions::list, ...
std::unique_ptr<engine::BuiltinWorker> make_engine_functions(const config::WorkerEntry& entry,
                                                             engine::Runtime& rt);
}  // namespace iii::workers
