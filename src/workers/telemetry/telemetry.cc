#include "workers/telemetry/telemetry.h"

#include <spdlog/spdlog.h>

#include <cstdint>

#include "config/config.h"
#include "engine/engine.h"

namespace iii::workers {
namespace {

// The original sends anonymous usage analytics from this worker. This engine has no such
// code at all: the keys are read and checked so that the original's configs start unchanged,
// and the one startup line says that nothing is collected or sent.
class Telemetry : public engine::BuiltinWorker {
 public:
  Telemetry(const config::WorkerEntry& entry, engine::Runtime& rt) {
    config::WorkerConfigReader r(entry);
    r.get_bool("enabled", true);
    r.get_optional_string("sdk_api_key");
    r.get_int("heartbeat_interval_secs", 21600, 1, INT64_C(365) * 24 * 3600);
    r.finish();
    rt.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
  }

  void start() override {
    spdlog::info(
        "iii-telemetry: this engine collects no usage data and sends nothing anywhere "
        "(telemetry settings are accepted and ignored)");
  }
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_telemetry(const config::WorkerEntry& entry,
                                                      engine::Runtime& rt) {
  return std::make_unique<Telemetry>(entry, rt);
}

}  // namespace iii::workers
