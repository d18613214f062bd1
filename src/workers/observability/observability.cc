#include "workers/observability/observability.h"

#include <spdlog/spdlog.h>

#include <boost/json/serialize.hpp>
#include <stdexcept>

#include "common/logging.h"
#include "config/config.h"
#include "engine/engine.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

// Keys of the original's config that this build accepts but does not act on yet (span, metric
// and log storage arrive with the observability issue). Accepting them keeps real configs valid.
constexpr const char* kAcceptedKeys[] = {"enabled",
                                         "service_name",
                                         "service_version",
                                         "service_namespace",
                                         "exporter",
                                         "endpoint",
                                         "sampling_ratio",
                                         "sampling",
                                         "memory_max_spans",
                                         "metrics_enabled",
                                         "metrics_exporter",
                                         "metrics_retention_seconds",
                                         "metrics_max_count",
                                         "logs_enabled",
                                         "logs_exporter",
                                         "logs_max_count",
                                         "logs_retention_seconds",
                                         "logs_sampling_ratio",
                                         "logs_console_output",
                                         "alerts"};

struct LogLevelFn {
  const char* id;
  spdlog::level::level_enum level;
};
constexpr LogLevelFn kLogFunctions[] = {{"engine::log::trace", spdlog::level::trace},
                                        {"engine::log::debug", spdlog::level::debug},
                                        {"engine::log::info", spdlog::level::info},
                                        {"engine::log::warn", spdlog::level::warn},
                                        {"engine::log::error", spdlog::level::err}};

class Observability : public engine::BuiltinWorker {
 public:
  Observability(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    // `level` wins over the original's older spelling `log_level`.
    const std::string level = r.get_string("level", "");
    const std::string log_level = r.get_string("log_level", "");
    const std::string level_key = level.empty() && !log_level.empty() ? "log_level" : "level";
    level_ = !level.empty() ? level : !log_level.empty() ? log_level : "info";
    format_ = r.get_string("format", "text");
    for (const char* k : kAcceptedKeys) r.get_node(k);
    r.finish();
    try {
      logging::parse_level(level_);
    } catch (const std::invalid_argument& e) {
      r.fail(level_key, "key '" + level_key + "': " + e.what());
    }
    try {
      logging::parse_format(format_);
    } catch (const std::invalid_argument& e) {
      r.fail("format", std::string("key 'format': ") + e.what());
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
    // Applied at creation, before any worker starts, so start-up is logged as configured.
    // The CLI's --log-level/--log-format have already been written into this entry.
    logging::init(level_, format_);
  }

  void start() override {
    for (const auto& fn : kLogFunctions) {
      engine::FunctionInfo info;
      info.id = fn.id;
      info.description = "Write a log record through the engine";
      const auto level = fn.level;
      rt_.engine.register_builtin(
          std::move(info), name_,
          [level, id = std::string(fn.id)](const CallContext& ctx, json::value input,
                                           Completion done) {
            const json::object* in = input.if_object();
            const json::value* msg = in ? in->if_contains("message") : nullptr;
            if (!msg || !msg->is_string()) {
              done(Outcome::fail("deserialization_error", "Failed to deserialize input for " + id +
                                                              ": missing string field 'message'"));
              return;
            }
            const json::value* data = in->if_contains("data");
            std::string who = ctx.caller_worker_id.empty() ? "engine" : ctx.caller_worker_id;
            if (data && !data->is_null())
              spdlog::log(level, "[{}] {} {}", who, msg->get_string(), json::serialize(*data));
            else
              spdlog::log(level, "[{}] {}", who, msg->get_string());
            done(Outcome::empty());  // the original's null result is absent on the wire
          });
    }
  }

 private:
  engine::Runtime& rt_;
  std::string name_;
  std::string level_, format_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_observability(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<Observability>(entry, rt);
}

}  // namespace iii::workers
