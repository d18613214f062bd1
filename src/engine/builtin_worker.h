// In-process ("built-in") workers: iii-worker-manager, iii-engine-functions, ... Each is
// created from its config entry (which validates the config) and started only after every
// entry was created, so a bad config fails before any port is bound.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace boost::asio {
class io_context;
}

namespace iii::engine {

class Engine;

struct Runtime {
  boost::asio::io_context& io;
  Engine& engine;
};

class BuiltinWorker {
 public:
  virtual ~BuiltinWorker() = default;
  // Binds ports, registers functions. Throws std::exception with a clear message on failure.
  virtual void start() = 0;
  // Stops accepting new work (listeners close); in-flight work is handled by Engine::shutdown.
  virtual void stop() {}
};

using WorkerFactory =
    std::function<std::unique_ptr<BuiltinWorker>(const config::WorkerEntry&, Runtime&)>;

struct WorkerType {
  std::string name;
  WorkerFactory factory;  // empty when the name is known but not part of this build yet
};

// The table of worker types this build provides (src/workers/registry.cc).
const std::vector<WorkerType>& worker_types();

// Creates (and so validates) every configured worker. Throws config::ConfigError.
std::vector<std::unique_ptr<BuiltinWorker>> create_workers(const config::EngineConfig& cfg,
                                                           Runtime& rt);

}  // namespace iii::engine
