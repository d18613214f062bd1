// In-process ("built-in") workers: iii-worker-manager, iii-engine-functions, ... Each is
// created from its config entry (which validates the config) and started only after every
// entry was created, so a bad config fails before any port is bound.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace iii::config {
struct WorkerEntry;
struct EngineConfig;
}  // namespace iii::config

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
  // First step of a graceful shutdown, while the engine still routes normally: stop taking
  // work from outside (close listeners) and call `done` once the requests already taken have
  // been answered. The engine waits for every worker, bounded by a grace period.
  virtual void drain(std::function<void()> done) { done(); }
  // Stops accepting new work (listeners close); in-flight work is handled by Engine::shutdown.
  virtual void stop() {}
};

using WorkerFactory =
    std::function<std::unique_ptr<BuiltinWorker>(const config::WorkerEntry&, Runtime&)>;

struct WorkerType {
  // kMandatory: always running (appended when a config omits it); kDefault: also started by
  // the embedded defaults; kOptional: only when a config lists it.
  enum class Role { kMandatory, kDefault, kOptional };
  std::string name;
  Role role = Role::kOptional;
  WorkerFactory factory;  // empty when the name is known but not part of this build yet
  // Trigger types only this worker provides; workers can never register these ids, loaded or
  // not, so no worker can hijack e.g. every HTTP route.
  std::vector<std::string> trigger_types;
};

// The one table of built-in worker types (src/workers/registry.cc), in config order.
const std::vector<WorkerType>& worker_types();
const WorkerType* find_worker_type(std::string_view name);
// The built-in worker that provides a reserved trigger type (engine::* ids included).
std::optional<std::string_view> worker_for_trigger_type(std::string_view type);

// Creates (and so validates) every configured worker. Throws config::ConfigError.
std::vector<std::unique_ptr<BuiltinWorker>> create_workers(const config::EngineConfig& cfg,
                                                           Runtime& rt);

}  // namespace iii::engine
