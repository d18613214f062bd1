#pragma once
#include <memory>

#include "engine/builtin_worker.h"

namespace iii::workers {
// `iii-stream`: real-time streams (stream::*), the client WebSocket server, the `stream`,
// `stream:join` and `stream:leave` trigger types, and routing to custom streams.
std::unique_ptr<engine::BuiltinWorker> make_stream_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt);
}  // namespace iii::workers
