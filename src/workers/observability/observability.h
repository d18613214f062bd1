#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-observability`: engine log level/format, the SDKs' OTLP/MTRC/LOGS frames stored in
// bounded memory, the engine's own spans and metrics, the engine::log|logs|traces|metrics|...
// functions and the `log` trigger type (modules.md §8, docs/observability-seam.md).
std::unique_ptr<engine::BuiltinWorker> make_observability(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt);
}  // namespace iii::workers
