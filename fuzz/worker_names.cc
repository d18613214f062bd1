// The config fuzz target parses configs without the engine: these are the worker names the
// config accepts, as in src/workers/registry.cc (which would link every worker). A name the
// registry adds later only changes which names this harness treats as known.
#include <algorithm>
#include <string>
#include <vector>

#include "config/config.h"

namespace iii::config {

const std::vector<std::string>& known_worker_names() {
  static const std::vector<std::string> kNames = {"iii-worker-manager", "iii-engine-functions",
                                                  "iii-observability",  "iii-telemetry",
                                                  "iii-http",           "iii-state",
                                                  "iii-stream",         "iii-queue",
                                                  "iii-pubsub",         "iii-cron",
                                                  "iii-http-functions", "iii-exec",
                                                  "iii-bridge"};
  return kNames;
}

const std::vector<std::string>& mandatory_worker_names() {
  static const std::vector<std::string> kNames = {"iii-worker-manager", "iii-engine-functions",
                                                  "iii-observability"};
  return kNames;
}

const std::vector<std::string>& default_worker_names() {
  static const std::vector<std::string> kNames = {"iii-worker-manager",
                                                  "iii-engine-functions",
                                                  "iii-observability",
                                                  "iii-http",
                                                  "iii-state",
                                                  "iii-stream",
                                                  "iii-queue",
                                                  "iii-pubsub",
                                                  "iii-cron"};
  return kNames;
}

bool is_mandatory_worker(const std::string& name) {
  const auto& m = mandatory_worker_names();
  return std::find(m.begin(), m.end(), name) != m.end();
}

}  // namespace iii::config
