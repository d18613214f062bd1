#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-pubsub`: the `publish` function and the `subscribe` trigger type (local adapter:
// in-process fan-out to every function subscribed to the topic; not persisted).
std::unique_ptr<engine::BuiltinWorker> make_pubsub_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt);
}  // namespace iii::workers
