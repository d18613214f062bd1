#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-telemetry`: accepted with the original's keys (`enabled`, `sdk_api_key`,
// `heartbeat_interval_secs`) and never sends anything: this engine collects no usage data.
std::unique_ptr<engine::BuiltinWorker> make_telemetry(const config::WorkerEntry& entry,
                                                      engine::Runtime& rt);
}  // namespace iii::workers
