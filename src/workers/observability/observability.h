#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-observability`: engine log level/format, engine::log::* functions, OTel frame intake.
std::unique_ptr<engine::BuiltinWorker> make_observability(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt);
}  // namespace iii::workers
