#include "workers/worker_manager/worker_manager.h"

#include "config/config.h"
#include "engine/engine.h"
#include "net/ws_listener.h"

namespace iii::workers {
namespace {

class WorkerManager : public engine::BuiltinWorker {
 public:
  WorkerManager(const config::WorkerEntry& entry, engine::Runtime& rt) : rt_(rt) {
    config::WorkerConfigReader r(entry);
    opts_.name = entry.instance_name;
    opts_.host = r.get_string("host", "0.0.0.0");
    opts_.port = static_cast<uint16_t>(r.get_int("port", 49134, 0, 65535));
    opts_.max_message_bytes =
        static_cast<size_t>(r.get_int("max_message_bytes", 64LL * 1024 * 1024, 1024, 1LL << 31));
    opts_.idle_timeout =
        std::chrono::milliseconds(r.get_int("idle_timeout_ms", 60000, 0, 24LL * 3600 * 1000));
    opts_.max_outbound_bytes = static_cast<size_t>(
        r.get_int("max_outbound_bytes", 256LL * 1024 * 1024, 1024 * 1024, 1LL << 40));
    // Engine-wide (one table of pending invocations), so every listener must agree on it.
    const int64_t timeout_ms = r.get_int("invocation_timeout_ms", -1, 0, 24LL * 3600 * 1000);
    if (timeout_ms >= 0) {
      if (rt_.engine.invocation_timeout_configured() &&
          rt_.engine.invocation_timeout().count() != timeout_ms)
        r.fail("invocation_timeout_ms",
               "invocation_timeout_ms is engine-wide: every iii-worker-manager that sets it must "
               "use the same value (another entry set " +
                   std::to_string(rt_.engine.invocation_timeout().count()) + ")");
      rt_.engine.set_invocation_timeout(std::chrono::milliseconds(timeout_ms));
    }
    if (!r.get_node("rbac").IsNull())
      r.fail("rbac", "RBAC is not supported by this engine build yet; remove the 'rbac' block");
    if (r.get_optional_string("middleware_function_id"))
      r.fail("middleware_function_id",
             "middleware is not supported by this engine build yet; remove the key");
    r.finish();
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
  }

  void start() override { listener_ = net::start_ws_listener(rt_.io, rt_.engine, opts_); }
  void stop() override {
    if (listener_) listener_->stop();
  }

 private:
  engine::Runtime& rt_;
  net::ListenerOptions opts_;
  std::unique_ptr<net::Listener> listener_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_worker_manager(const config::WorkerEntry& entry,
                                                           engine::Runtime& rt) {
  return std::make_unique<WorkerManager>(entry, rt);
}

}  // namespace iii::workers
