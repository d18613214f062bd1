// iii-queue over an external broker (the `rabbitmq` adapter): see broker.h.
#pragma once

#include <memory>

#include "engine/builtin_worker.h"
#include "workers/queue/queue_config.h"

namespace iii::workers {

std::unique_ptr<engine::BuiltinWorker> make_broker_queue_worker(const config::WorkerEntry& entry,
                                                                engine::Runtime& rt,
                                                                queue::QueueWorkerConfig cfg);

}  // namespace iii::workers
