#include "workers/state/state_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "storage/adapter_config.h"
#include "storage/kv_store.h"
#include "workers/bridge/bridge_adapter.h"
#include "workers/bridge/remote_engine.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::BuiltinInput;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

constexpr std::string_view kIndexPrefix = "state:";

std::string index_of(const std::string& scope) { return std::string(kIndexPrefix) + scope; }

json::value or_null(const std::optional<json::value>& v) { return v ? *v : json::value(nullptr); }

// `state` trigger type: config {scope?, key?, condition_function_id?}.
class StateTriggers : public engine::TriggerTypeHandler {
 public:
  std::optional<std::string> bind(const engine::Trigger& t) override {
    if (!t.config.is_object()) return "Failed to parse trigger config: expected an object";
    const auto& c = t.config.get_object();
    for (const char* k : {"scope", "key"})
      if (auto* v = c.if_contains(k); v && !v->is_null() && !v->is_string())
        return std::string("Failed to parse trigger config: `") + k + "` must be a string";
    return std::nullopt;
  }
  void unbind(const engine::Trigger&) override {}

  // Fires the `state` triggers whose scope and key (when set) match.
  static void fire(engine::Engine& eng, std::string_view event_type, const std::string& scope,
                   const std::string& key, json::value old_value, json::value new_value) {
    if (eng.bound_triggers("state").empty()) return;
    const json::value payload =
        json::object{{"type", "state"}, {"event_type", event_type}, {"scope", scope},
                     {"key", key},      {"old_value", old_value},   {"new_value", new_value}};
    eng.fire_type("state", payload, [&](const engine::Trigger& t) {
      const auto& c = t.config.as_object();
      if (auto* s = c.if_contains("scope"); s && s->is_string() && s->get_string() != scope)
        return false;
      if (auto* k = c.if_contains("key"); k && k->is_string() && k->get_string() != key)
        return false;
      return true;
    });
  }
};

class StateWorker : public engine::BuiltinWorker {
 public:
  StateWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    bridge_url_ = bridge::read_bridge_adapter(r);
    if (!bridge_url_) opts_ = storage::read_adapter_config(r);
    r.finish();
    if (!bridge_url_)
      store_ = storage::open_store_for(entry, opts_, rt_.io);  // before any port is bound
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~StateWorker() override {
    if (store_) store_->close();
  }

  void start() override {
    engine::TriggerType tt;
    tt.id = "state";
    tt.description = "Fires when a state key is created, updated or deleted";
    rt_.engine.register_builtin_trigger_type(std::move(tt), &triggers_);
    if (bridge_url_) {
      remote_ = bridge::RemoteEngine::connect(rt_.io, *bridge_url_, name_);
      register_bridged_functions();
      spdlog::info("iii-state: served by the engine at {} (bridge adapter)", *bridge_url_);
    } else {
      register_functions();
    }
  }

  // Flushes every accepted write; their acknowledgements are posted before shutdown ends.
  void stop() override {
    if (store_) store_->close();
    if (remote_) remote_->shutdown();
  }

 private:
  void add(const char* id, const char* description, engine::BuiltinHandler h) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    rt_.engine.register_builtin(std::move(info), name_, std::move(h));
  }

  void register_functions() {
    auto& eng = rt_.engine;
    auto* store = store_.get();
    auto* triggers = &triggers_;

    add("state::set", "Set a value; returns {old_value, new_value}",
        [&eng, store, triggers](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::set", input);
          auto scope = in.required_string("scope");
          auto key = in.required_string("key");
          const json::value* value = in.optional_value("value");
          if (!value) value = in.optional_value("data");  // accepted alias
          if (!value) in.fail("missing field `value`");
          if (!in.ok()) return done(in.failure());
          store->set(
              index_of(scope), key, *value,
              [&eng, triggers, scope, key, done](storage::Stored<storage::SetResult> r) {
                if (!r.ok())
                  return done(Outcome::fail("SET_ERROR", "Failed to set value: " + *r.error));
                json::value old = or_null(r.value.old_value);
                done(Outcome::ok(
                    json::object{{"old_value", old}, {"new_value", r.value.new_value}}));
                triggers->fire(eng, r.value.old_value ? "state:updated" : "state:created", scope,
                               key, std::move(old), std::move(r.value.new_value));
              });
        });

    add("state::get", "Get a value (absent result when missing)",
        [store](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::get", input);
          auto scope = in.required_string("scope");
          auto key = in.required_string("key");
          if (!in.ok()) return done(in.failure());
          store->get(index_of(scope), key, [done](storage::Stored<std::optional<json::value>> r) {
            if (!r.ok())
              return done(Outcome::fail("GET_ERROR", "Failed to get value: " + *r.error));
            done(r.value ? Outcome::ok(std::move(*r.value)) : Outcome::empty());
          });
        });

    add("state::delete", "Delete a value; returns the deleted value",
        [&eng, store, triggers](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::delete", input);
          auto scope = in.required_string("scope");
          auto key = in.required_string("key");
          if (!in.ok()) return done(in.failure());
          store->del(
              index_of(scope), key,
              [&eng, triggers, scope, key, done](storage::Stored<std::optional<json::value>> r) {
                if (!r.ok())
                  return done(Outcome::fail("DELETE_ERROR", "Failed to delete value: " + *r.error));
                if (!r.value) return done(Outcome::empty());
                done(Outcome::ok(*r.value));
                // Only a key that existed produces a delete event.
                triggers->fire(eng, "state:deleted", scope, key, std::move(*r.value), nullptr);
              });
        });

    add("state::update", "Apply atomic update ops; returns {old_value, new_value, errors?}",
        [&eng, store, triggers](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::update", input);
          auto scope = in.required_string("scope");
          auto key = in.required_string("key");
          const json::value* ops = in.required_value("ops", false);
          storage::ParsedUpdateOps parsed;
          if (in.ok()) {
            parsed = storage::parse_update_ops(*ops);
            if (!parsed.ok()) in.fail(parsed.error);
          }
          if (!in.ok()) return done(in.failure());
          store->update(
              index_of(scope), key, std::move(parsed.ops),
              [&eng, triggers, scope, key, done](storage::Stored<storage::UpdateResult> r) {
                if (!r.ok())
                  return done(Outcome::fail("UPDATE_ERROR", "Failed to update value: " + *r.error));
                for (const auto& w : r.value.warnings) spdlog::warn("state::update: {}", w);
                done(Outcome::ok(r.value.to_json()));
                triggers->fire(eng, r.value.old_value ? "state:updated" : "state:created", scope,
                               key, or_null(r.value.old_value), r.value.new_value);
              });
        });

    add("state::list", "List the values of a scope",
        [store](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::list", input);
          auto scope = in.required_string("scope");
          if (!in.ok()) return done(in.failure());
          // Forwarded as the store's JSON text: no json::array is built on the engine thread.
          store->list_raw(index_of(scope), [done](storage::Stored<storage::KvStore::RawList> r) {
            if (!r.ok())
              return done(Outcome::fail("LIST_ERROR", "Failed to list values: " + *r.error));
            done(Outcome::ok_raw(std::move(r.value)));
          });
        });

    add("state::list_groups", "List scopes that hold values",
        [store](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("state::list_groups", input, false);
          if (!in.ok()) return done(in.failure());
          store->list_indexes(
              std::string(kIndexPrefix), [done](storage::Stored<std::vector<std::string>> r) {
                if (!r.ok())
                  return done(
                      Outcome::fail("LIST_GROUPS_ERROR", "Failed to list groups: " + *r.error));
                json::array groups;
                for (auto& idx : r.value)
                  groups.push_back(json::value(idx.substr(kIndexPrefix.size())));
                done(Outcome::ok(json::object{{"groups", std::move(groups)}}));
              });
        });
  }

  // `bridge` adapter: every state::* call is the remote engine's, with the caller's input; the
  // `state` triggers of this engine fire on the remote results as they would on local ones.
  void register_bridged_functions() {
    auto& eng = rt_.engine;
    auto remote = remote_;
    auto* triggers = &triggers_;
    auto forward = [remote](
                       const char* fid, const char* code, const char* what,
                       std::function<void(json::value && input, json::value && result)> after) {
      return
          [remote, fid, code, what, after](const CallContext&, json::value input, Completion done) {
            if (input.is_object()) input.get_object().erase("_caller_worker_id");
            json::value copy = after ? input : json::value();
            remote->call(fid, std::move(input), std::nullopt,
                         [done, code, what, after, copy = std::move(copy)](Outcome o) mutable {
                           if (o.error)
                             return done(Outcome::fail(code, std::string(what) + o.error->code +
                                                                 ": " + o.error->message));
                           o.materialise();
                           json::value result = o.result ? *o.result : json::value(nullptr);
                           done(std::move(o));
                           if (after) after(std::move(copy), std::move(result));
                         });
          };
    };
    auto str = [](const json::value& in, const char* k) {
      const auto* o = in.if_object();
      const auto* v = o ? o->if_contains(k) : nullptr;
      return v && v->is_string() ? std::string(v->get_string()) : std::string();
    };
    auto changed = [&eng, triggers, str](json::value&& in, json::value&& r) {
      const auto* o = r.if_object();
      if (!o || !o->contains("new_value")) return;
      const json::value* old = o->if_contains("old_value");
      const bool existed = old && !old->is_null();
      triggers->fire(eng, existed ? "state:updated" : "state:created", str(in, "scope"),
                     str(in, "key"), existed ? *old : json::value(nullptr), o->at("new_value"));
    };
    add("state::set", "Set a value; returns {old_value, new_value}",
        forward("state::set", "SET_ERROR", "Failed to set value: ", changed));
    add("state::get", "Get a value (absent result when missing)",
        forward("state::get", "GET_ERROR", "Failed to get value: ", {}));
    add("state::delete", "Delete a value; returns the deleted value",
        forward("state::delete", "DELETE_ERROR", "Failed to delete value: ",
                [&eng, triggers, str](json::value&& in, json::value&& old) {
                  if (old.is_null()) return;
                  triggers->fire(eng, "state:deleted", str(in, "scope"), str(in, "key"),
                                 std::move(old), nullptr);
                }));
    add("state::update", "Apply atomic update ops; returns {old_value, new_value, errors?}",
        forward("state::update", "UPDATE_ERROR", "Failed to update value: ", changed));
    add("state::list", "List the values of a scope",
        forward("state::list", "LIST_ERROR", "Failed to list values: ", {}));
    add("state::list_groups", "List scopes that hold values",
        [remote](const CallContext&, json::value input, Completion done) {
          if (input.is_object()) input.get_object().erase("_caller_worker_id");
          remote->call("state::list_groups", std::move(input), std::nullopt, [done](Outcome o) {
            if (o.error)
              return done(Outcome::fail(
                  "LIST_GROUPS_ERROR",
                  "Failed to list groups: " + o.error->code + ": " + o.error->message));
            o.materialise();
            const auto* r = o.result ? o.result->if_object() : nullptr;
            if (!r || !r->contains("groups"))
              return done(Outcome::fail("LIST_GROUPS_ERROR",
                                        "Failed to list groups: invalid state::list_groups "
                                        "response: missing 'groups' field"));
            done(std::move(o));
          });
        });
  }

  engine::Runtime& rt_;
  std::string name_;
  std::optional<std::string> bridge_url_;
  std::shared_ptr<bridge::RemoteEngine> remote_;
  storage::StoreOptions opts_;
  std::unique_ptr<storage::KvStore> store_;
  StateTriggers triggers_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_state_worker(const config::WorkerEntry& entry,
                                                         engine::Runtime& rt) {
  return std::make_unique<StateWorker>(entry, rt);
}

}  // namespace iii::workers
