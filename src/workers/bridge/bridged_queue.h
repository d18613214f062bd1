#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// iii-queue with `adapter: {name: bridge, config: {bridge_url}}`: durable topics live on another
// engine. `iii::durable::publish` and the DLQ / console functions are the remote engine's;
// each `durable:subscriber` trigger becomes a remote trigger on a function this engine exposes
// there, so the remote queue's retries and DLQ apply to the local handler.
std::unique_ptr<engine::BuiltinWorker> make_bridged_queue_worker(const config::WorkerEntry& entry,
                                                                 engine::Runtime& rt);
}  // namespace iii::workers
