// iii-queue: named queues (the `enqueue` invocation action), topic queues
// (`iii::durable::publish` + `durable:subscriber` triggers), retries with exponential backoff,
// dead letters and the queue console functions (modules.md §4).
#pragma once

#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {

std::unique_ptr<engine::BuiltinWorker> make_queue_worker(const config::WorkerEntry& entry,
                                                         engine::Runtime& rt);

}  // namespace iii::workers
