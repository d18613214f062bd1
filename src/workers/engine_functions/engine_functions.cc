#include "workers/engine_functions/engine_functions.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/config.h"
#include "engine/engine.h"

namespace iii::workers {
namespace {

using engine::CallContext;
using engine::Completion;
using engine::Outcome;
namespace json = boost::json;

// Reads an optional field of the given JSON kind; a present value of the wrong kind is a
// deserialization_error (like the original's serde input types).
template <typename Pred>
bool check_field(const json::object& o, std::string_view key, Pred ok, const char* expected,
                 const std::string& fn, Completion& done) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null() || ok(*v)) return true;
  done(Outcome::fail("deserialization_error", "Failed to deserialize input for " + fn +
                                                  ": field '" + std::string(key) + "' must be " +
                                                  expected));
  return false;
}

std::optional<std::string> opt_string(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (v && v->is_string()) return std::string(v->get_string());
  return std::nullopt;
}

// Built-in inputs must be objects; anything else is the caller's mistake.
const json::object* object_input(const json::value& input, const std::string& fn,
                                 Completion& done) {
  if (input.is_object()) return &input.get_object();
  if (input.is_null()) {
    static const json::object kEmpty;
    return &kEmpty;
  }
  done(Outcome::fail("deserialization_error",
                     "Failed to deserialize input for " + fn + ": expected a JSON object"));
  return nullptr;
}

// `engine::functions-available` / `engine::workers-available`: event trigger types whose bound
// triggers the engine fires itself (Engine::fire_type); any config is accepted.
class EventTriggerType : public engine::TriggerTypeHandler {
 public:
  std::optional<std::string> bind(const engine::Trigger&) override { return std::nullopt; }
  void unbind(const engine::Trigger&) override {}
};

class EngineFunctions : public engine::BuiltinWorker {
 public:
  EngineFunctions(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    r.finish();
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
  }

  void start() override {
    auto& eng = rt_.engine;
    register_event_types();
    add("engine::workers::register", "Report metadata of the calling worker",
        [&eng](const CallContext& ctx, json::value input, Completion done) {
          const std::string fn = "engine::workers::register";
          const json::object* in = object_input(input, fn, done);
          if (!in) return;
          // The engine injects _caller_worker_id; fall back to the connection for internal calls.
          std::optional<std::string> id = opt_string(*in, "_caller_worker_id");
          engine::Worker* w = id ? eng.find_worker_by_id(*id) : eng.find_worker(ctx.caller);
          if (!w) {
            done(Outcome::fail("deserialization_error",
                               "Failed to deserialize input for " + fn +
                                   ": missing or unknown _caller_worker_id"));
            return;
          }
          w->runtime = opt_string(*in, "runtime").value_or("unknown");
          w->version = opt_string(*in, "version");
          w->name = opt_string(*in, "name");
          w->os = opt_string(*in, "os");
          w->isolation = opt_string(*in, "isolation");
          if (auto* pid = in->if_contains("pid"); pid && pid->is_int64())
            w->pid = pid->as_int64();
          else if (pid && pid->is_uint64())
            w->pid = static_cast<int64_t>(pid->as_uint64());
          if (auto* t = in->if_contains("telemetry")) w->telemetry = *t;
          spdlog::info("worker {} is {} ({} {}, pid {})", w->id, w->name.value_or("unnamed"),
                       *w->runtime, w->version.value_or("?"), w->pid.value_or(0));
          const std::string wid = w->id;
          eng.notify_worker_event("worker_metadata_updated", wid);
          done(Outcome::ok(json::object{{"success", true}}));
        });
    add("engine::workers::list", "List connected workers and in-process workers",
        [&eng](const CallContext&, json::value input, Completion done) {
          const std::string fn = "engine::workers::list";
          const json::object* in = object_input(input, fn, done);
          if (!in) return;
          if (!check_field(
                  *in, "worker_id", [](auto& v) { return v.is_string(); }, "a string", fn, done))
            return;
          done(Outcome::ok(eng.list_workers(opt_string(*in, "worker_id"))));
        });
    add("engine::functions::list", "List registered functions",
        [&eng](const CallContext& ctx, json::value input, Completion done) {
          const std::string fn = "engine::functions::list";
          const json::object* in = object_input(input, fn, done);
          if (!in) return;
          if (!check_field(
                  *in, "include_internal", [](auto& v) { return v.is_bool(); }, "a boolean", fn,
                  done))
            return;
          bool internal = false;
          if (auto* v = in->if_contains("include_internal"); v && v->is_bool())
            internal = v->get_bool();
          done(Outcome::ok(eng.list_functions(internal, ctx.caller)));
        });
    add("engine::triggers::list", "List registered triggers and their state",
        [&eng](const CallContext&, json::value input, Completion done) {
          bool internal = false;
          if (read_include_internal(input, "engine::triggers::list", internal, done))
            done(Outcome::ok(eng.list_triggers(internal)));
        });
    add("engine::trigger-types::list", "List trigger types",
        [&eng](const CallContext&, json::value input, Completion done) {
          bool internal = false;
          if (read_include_internal(input, "engine::trigger-types::list", internal, done))
            done(Outcome::ok(eng.list_trigger_types(internal)));
        });
    add("engine::channels::create", "Create a data channel; returns writer and reader refs",
        [&eng](const CallContext&, json::value input, Completion done) {
          const std::string fn = "engine::channels::create";
          const json::object* in = object_input(input, fn, done);
          if (!in) return;
          if (!check_field(
                  *in, "buffer_size", [](auto& v) { return v.is_int64() || v.is_uint64(); },
                  "an integer", fn, done))
            return;
          std::optional<int64_t> size;
          if (auto* v = in->if_contains("buffer_size"); v && !v->is_null())
            size = v->is_int64()
                       ? v->get_int64()
                       : static_cast<int64_t>(std::min<uint64_t>(v->get_uint64(), INT64_MAX));
          auto refs = eng.channels().create(size, engine::Engine::now_ms());
          auto ref = [&](const char* dir) {
            return json::object{{"channel_id", refs.channel_id},
                                {"access_key", refs.access_key},
                                {"direction", dir}};
          };
          done(Outcome::ok(json::object{{"writer", ref("write")}, {"reader", ref("read")}}));
        });
    schedule_channel_sweep();
    add("engine::services::list", "List services registered by workers",
        [&eng](const CallContext&, json::value input, Completion done) {
          if (object_input(input, "engine::services::list", done))
            done(Outcome::ok(eng.list_services()));
        });
  }

 private:
  static bool read_include_internal(const json::value& input, const std::string& fn, bool& out,
                                    Completion& done) {
    const json::object* in = object_input(input, fn, done);
    if (!in) return false;
    if (!check_field(
            *in, "include_internal", [](auto& v) { return v.is_bool(); }, "a boolean", fn, done))
      return false;
    if (auto* v = in->if_contains("include_internal"); v && v->is_bool()) out = v->get_bool();
    return true;
  }

  // Channels whose other side never connects are removed after 5 minutes (checked each minute).
  void schedule_channel_sweep() {
    sweep_timer_.expires_after(std::chrono::seconds(60));
    sweep_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      if (size_t n = rt_.engine.channels().sweep(engine::Engine::now_ms()))
        spdlog::info("removed {} channel(s) whose other side never connected", n);
      schedule_channel_sweep();
    });
  }

  void stop() override { sweep_timer_.cancel(); }

  void register_event_types() {
    auto& eng = rt_.engine;
    engine::TriggerType fa;
    fa.id = "engine::functions-available";
    fa.description = "Fires with the current function list whenever the set of functions changes";
    eng.register_builtin_trigger_type(std::move(fa), &functions_available_);
    engine::TriggerType wa;
    wa.id = "engine::workers-available";
    wa.description = "Fires when a worker connects, disconnects or reports its metadata";
    eng.register_builtin_trigger_type(std::move(wa), &workers_available_);

    eng.on_functions_changed([&eng] {
      if (eng.bound_triggers("engine::functions-available").empty()) return;
      json::object payload;
      payload["event"] = "functions_changed";
      payload["functions"] = std::move(eng.list_functions(true)["functions"]);
      eng.fire_type("engine::functions-available", payload);
    });
    eng.on_worker_event([&eng](std::string_view event, const std::string& worker_id) {
      eng.fire_type("engine::workers-available",
                    json::object{{"event", event}, {"worker_id", worker_id}});
    });
  }

  void add(std::string id, std::string description, engine::BuiltinHandler h) {
    engine::FunctionInfo info;
    info.id = std::move(id);
    info.description = std::move(description);
    rt_.engine.register_builtin(std::move(info), name_, std::move(h));
  }

  engine::Runtime& rt_;
  std::string name_;
  EventTriggerType functions_available_;
  EventTriggerType workers_available_;
  boost::asio::steady_timer sweep_timer_{rt_.io};
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_engine_functions(const config::WorkerEntry& entry,
                                                             engine::Runtime& rt) {
  return std::make_unique<EngineFunctions>(entry, rt);
}

}  // namespace iii::workers
