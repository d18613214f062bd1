// Triggers, trigger types, services and condition functions (engine-core.md §3, §4).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/serialize.hpp>

#include "engine/builtin_worker.h"
#include "engine/engine.h"
#include "protocol/codec.h"

namespace iii::engine {

namespace json = boost::json;

namespace {

std::optional<std::string_view> reserved_worker(std::string_view type) {
  return worker_for_trigger_type(type);
}

const char* state_name(Trigger::State s) {
  switch (s) {
    case Trigger::State::kPending:
      return "pending";
    case Trigger::State::kBound:
      return "bound";
    case Trigger::State::kFailed:
      return "failed";
  }
  return "pending";
}

bool same_binding(const Trigger& a, const protocol::RegisterTrigger& b) {
  return a.trigger_type == b.trigger_type && a.function_id == b.function_id &&
         a.config == b.config && a.metadata == b.metadata;
}

}  // namespace

std::optional<std::string> Trigger::condition_function_id() const {
  if (const auto* o = config.if_object())
    if (const auto* c = o->if_contains("condition_function_id"); c && c->is_string())
      return std::string(c->get_string());
  return std::nullopt;
}

json::object Trigger::to_json() const {
  json::object o;
  o["id"] = id;
  o["trigger_type"] = trigger_type;
  o["function_id"] = function_id;
  o["config"] = config;
  if (metadata) o["metadata"] = *metadata;
  o["state"] = state_name(state);
  if (!error.empty()) o["error"] = error;
  return o;
}

json::object TriggerType::to_json() const {
  json::object o;
  o["id"] = id;
  o["description"] = description;
  if (trigger_request_format) o["trigger_request_format"] = *trigger_request_format;
  if (call_request_format) o["call_request_format"] = *call_request_format;
  return o;
}

void Engine::register_builtin_trigger_type(TriggerType type, TriggerTypeHandler* handler) {
  type.builtin = handler;
  type.owner = 0;
  const std::string id = type.id;
  trigger_types_[id] = std::move(type);
  for (auto& [tid, t] : triggers_)
    if (t.trigger_type == id && t.state != Trigger::State::kBound) bind_trigger(t);
}

void Engine::bind_trigger(Trigger& t) {
  auto it = trigger_types_.find(t.trigger_type);
  if (it == trigger_types_.end()) {
    t.state = Trigger::State::kPending;
    if (auto w = reserved_worker(t.trigger_type))
      spdlog::warn("trigger {} ({} -> {}) is waiting: trigger type '{}' needs the {} worker", t.id,
                   t.trigger_type, t.function_id, t.trigger_type, *w);
    else
      spdlog::info("trigger {} ({} -> {}) is waiting for a worker to register trigger type '{}'",
                   t.id, t.trigger_type, t.function_id, t.trigger_type);
    return;
  }
  TriggerType& type = it->second;
  if (type.builtin) {
    if (auto err = type.builtin->bind(t)) {
      t.state = Trigger::State::kFailed;
      t.error = *err;
      spdlog::warn("trigger {} ({} -> {}) refused: {}", t.id, t.trigger_type, t.function_id, *err);
      return;
    }
    bound_by_type_[t.trigger_type].push_back(t.id);
  } else if (Worker* owner = find_worker(type.owner)) {
    protocol::RegisterTrigger msg{t.id, t.trigger_type, t.function_id, t.config, t.metadata};
    owner->conn->send(make_frame(protocol::encode_register_trigger(msg)));
  }
  t.state = Trigger::State::kBound;
  t.error.clear();
}

void Engine::unbind_trigger(Trigger& t) {
  if (t.state != Trigger::State::kBound) {
    t.state = Trigger::State::kPending;
    return;
  }
  t.state = Trigger::State::kPending;
  auto it = trigger_types_.find(t.trigger_type);
  if (it == trigger_types_.end()) return;
  if (it->second.builtin) {
    it->second.builtin->unbind(t);
    if (auto b = bound_by_type_.find(t.trigger_type); b != bound_by_type_.end()) {
      std::erase(b->second, t.id);
      if (b->second.empty()) bound_by_type_.erase(b);
    }
  } else if (Worker* owner = find_worker(it->second.owner)) {
    owner->conn->send(make_frame(protocol::encode_unregister_trigger(t.id, t.trigger_type)));
  }
}

void Engine::register_trigger(Trigger t) {
  auto [it, inserted] = triggers_.try_emplace(t.id);
  if (!inserted) unbind_trigger(it->second);
  it->second = std::move(t);
  bind_trigger(it->second);
}

void Engine::unregister_trigger(const std::string& id) {
  auto it = triggers_.find(id);
  if (it == triggers_.end()) return;
  unbind_trigger(it->second);
  triggers_.erase(it);
}

void Engine::refuse_trigger_change(Worker& w, const protocol::RegisterTrigger& m,
                                   const Trigger& existing) {
  const Worker* owner = find_worker(existing.owner);
  const std::string holder = owner ? "worker " + owner->id : std::string("the engine (built-in)");
  const std::string message = "trigger id '" + m.id + "' belongs to " + holder +
                              "; a worker can only replace or unregister its own triggers";
  spdlog::warn("worker {}: registertrigger refused: {}", w.id, message);
  // The SDKs ignore this frame; raw and C++ clients can read why.
  protocol::TriggerRegistrationResult r{m.id, m.trigger_type, m.function_id,
                                        protocol::ErrorBody{"forbidden", message, std::nullopt}};
  w.conn->send(make_frame(protocol::encode(protocol::Message(std::move(r)))));
}

void Engine::handle(Worker& w, protocol::RegisterTrigger&& m) {
  if (shutting_down_) return;
  auto it = triggers_.find(m.id);
  if (it != triggers_.end() && it->second.owner != w.handle) {
    // Another live worker's identical registration (a rolling deploy, an SDK reconnect racing
    // its old connection's cleanup) is adopted, so it outlives the older registrant. Anything
    // else would let one worker rebind or steal another's trigger.
    if (it->second.owner == 0 || !same_binding(it->second, m)) {
      refuse_trigger_change(w, m, it->second);
      return;
    }
  }
  if (it != triggers_.end() && same_binding(it->second, m)) {
    // Re-registration: adopt it, and bind it if it was waiting.
    it->second.owner = w.handle;
    if (it->second.state != Trigger::State::kBound) bind_trigger(it->second);
    return;
  }
  Trigger t;
  t.id = std::move(m.id);
  t.trigger_type = std::move(m.trigger_type);
  t.function_id = std::move(m.function_id);
  t.config = std::move(m.config);
  t.metadata = std::move(m.metadata);
  t.owner = w.handle;
  spdlog::debug("worker {} registered trigger {} ({} -> {})", w.id, t.id, t.trigger_type,
                t.function_id);
  register_trigger(std::move(t));
}

void Engine::handle(Worker& w, protocol::UnregisterTrigger&& m) {
  auto it = triggers_.find(m.id);
  if (it == triggers_.end()) {
    spdlog::debug("worker {}: unregistertrigger {} ignored (unknown id)", w.id, m.id);
    return;
  }
  if (it->second.owner != w.handle) {
    const Worker* owner = find_worker(it->second.owner);
    spdlog::warn("worker {}: unregistertrigger {} refused: it belongs to {}", w.id, m.id,
                 owner ? "worker " + owner->id : std::string("the engine (built-in)"));
    return;
  }
  unregister_trigger(m.id);
}

void Engine::handle(Worker& w, protocol::RegisterTriggerType&& m) {
  if (shutting_down_) return;
  auto existing = trigger_types_.find(m.id);
  if ((existing != trigger_types_.end() && existing->second.builtin) || reserved_worker(m.id)) {
    spdlog::warn(
        "worker {} tried to register trigger type '{}', which is built in (provided by {}); "
        "refused",
        w.id, m.id, reserved_worker(m.id).value_or("the engine"));
    return;
  }
  TriggerType& type = trigger_types_[m.id];
  const uint64_t previous = type.owner;
  type.id = m.id;
  type.description = std::move(m.description);
  type.trigger_request_format = std::move(m.trigger_request_format);
  type.call_request_format = std::move(m.call_request_format);
  std::erase(type.registrants, w.handle);
  type.registrants.push_back(w.handle);  // the newest registrant serves
  type.owner = w.handle;
  type.builtin = nullptr;
  if (previous == w.handle) {
    // Same connection again: only triggers that are not bound yet need sending.
    for (auto& [id, t] : triggers_)
      if (t.trigger_type == type.id && t.state != Trigger::State::kBound) bind_trigger(t);
    return;
  }
  if (Worker* prev = find_worker(previous)) {
    spdlog::info("trigger type '{}' moves from worker {} to worker {}", m.id, prev->id, w.id);
    // The previous owner must stop firing these triggers.
    for (auto& [id, t] : triggers_)
      if (t.trigger_type == type.id && t.state == Trigger::State::kBound)
        prev->conn->send(make_frame(protocol::encode_unregister_trigger(t.id, t.trigger_type)));
  }
  rebind_type(type.id);
}

// Replays every stored trigger of a custom type to its current owner.
void Engine::rebind_type(const std::string& type_id) {
  for (auto& [id, t] : triggers_) {
    if (t.trigger_type != type_id) continue;
    t.state = Trigger::State::kPending;
    bind_trigger(t);
  }
}

// `handle` no longer provides `type_id`: the next newest registrant takes over, or the type
// goes away and its triggers wait for a new provider.
void Engine::drop_type_registrant(const std::string& type_id, uint64_t handle) {
  auto it = trigger_types_.find(type_id);
  if (it == trigger_types_.end() || it->second.builtin) return;
  TriggerType& type = it->second;
  std::erase(type.registrants, handle);
  if (type.owner != handle) return;
  if (!type.registrants.empty()) {
    type.owner = type.registrants.back();
    if (Worker* next = find_worker(type.owner))
      spdlog::info("trigger type '{}' failed over to worker {}", type_id, next->id);
    rebind_type(type_id);
    return;
  }
  trigger_types_.erase(it);
  for (auto& [id, t] : triggers_)
    if (t.trigger_type == type_id) t.state = Trigger::State::kPending;
}

void Engine::handle(Worker& w, protocol::UnregisterTriggerType&& m) {
  auto it = trigger_types_.find(m.id);
  if (it == trigger_types_.end() || it->second.builtin ||
      std::find(it->second.registrants.begin(), it->second.registrants.end(), w.handle) ==
          it->second.registrants.end()) {
    spdlog::warn("worker {}: unregistertriggertype '{}' ignored (not registered by it)", w.id,
                 m.id);
    return;
  }
  // Its triggers stay stored and bind again when a worker registers the type.
  drop_type_registrant(m.id, w.handle);
  spdlog::info("worker {} unregistered trigger type '{}'", w.id, m.id);
}

void Engine::remove_worker_triggers(uint64_t handle) {
  for (auto it = triggers_.begin(); it != triggers_.end();) {
    if (it->second.owner == handle) {
      unbind_trigger(it->second);
      it = triggers_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::string> provided;
  for (const auto& [id, type] : trigger_types_)
    if (!type.builtin && std::find(type.registrants.begin(), type.registrants.end(), handle) !=
                             type.registrants.end())
      provided.push_back(id);
  for (const auto& id : provided) drop_type_registrant(id, handle);
  for (auto it = services_.begin(); it != services_.end();) {
    if (it->second.owner == handle)
      it = services_.erase(it);
    else
      ++it;
  }
}

void Engine::handle(Worker& w, protocol::RegisterService&& m) {
  if (shutting_down_) return;
  Service& s = services_[m.id];
  s.id = std::move(m.id);
  s.name = std::move(m.name);
  s.description = std::move(m.description);
  s.parent_service_id = std::move(m.parent_service_id);
  s.owner = w.handle;
}

void Engine::fire(const Trigger& t, json::value payload, FireCompletion done) {
  auto condition = t.condition_function_id();
  if (!condition) {
    invoke(t.function_id, std::move(payload), CallContext{}, [done](Outcome o) {
      if (done) done(FireStatus::kInvoked, std::move(o));
    });
    return;
  }
  json::value condition_input = payload;
  invoke(*condition, std::move(condition_input), CallContext{},
         [this, trigger_id = t.id, function_id = t.function_id, condition = *condition,
          payload = std::move(payload), done](Outcome o) mutable {
           if (o.error) {
             spdlog::warn("trigger {}: condition {} failed ({}: {}); {} not invoked", trigger_id,
                          condition, o.error->code, o.error->message, function_id);
             if (done) done(FireStatus::kConditionFailed, std::move(o));
             return;
           }
           if (o.result && o.result->is_bool() && !o.result->get_bool()) {
             spdlog::debug("trigger {}: condition {} returned false; skipped", trigger_id,
                           condition);
             if (done) done(FireStatus::kSkipped, Outcome::empty());
             return;
           }
           invoke(function_id, std::move(payload), CallContext{}, [done](Outcome r) {
             if (done) done(FireStatus::kInvoked, std::move(r));
           });
         });
}

const std::vector<std::string>& Engine::bound_triggers(const std::string& type) const {
  static const std::vector<std::string> kNone;
  auto it = bound_by_type_.find(type);
  return it == bound_by_type_.end() ? kNone : it->second;
}

void Engine::fire_type(const std::string& type, const json::value& payload,
                       const TriggerFilter& matches, const TriggerDone& done) {
  auto bound = bound_by_type_.find(type);
  if (bound == bound_by_type_.end()) return;
  const std::vector<std::string> ids = bound->second;  // a handler may (un)register triggers
  for (const auto& id : ids) {
    auto it = triggers_.find(id);
    if (it == triggers_.end() || it->second.state != Trigger::State::kBound) continue;
    const Trigger& t = it->second;
    if (matches && !matches(t)) continue;
    if (done) {
      fire(t, payload, [id, done](FireStatus st, Outcome o) { done(id, st, std::move(o)); });
    } else {
      fire(t, payload, [id, type](FireStatus st, Outcome o) {
        if (st == FireStatus::kInvoked && o.error)
          spdlog::warn("{} trigger {}: handler failed: {}: {}", type, id, o.error->code,
                       o.error->message);
      });
    }
  }
}

json::object Engine::list_triggers(bool include_internal) const {
  json::array arr;
  for (const auto& [id, t] : triggers_) {
    if (!include_internal && t.function_id.rfind("engine::", 0) == 0) continue;
    arr.push_back(t.to_json());
  }
  json::object out;
  out["triggers"] = std::move(arr);
  return out;
}

json::object Engine::list_trigger_types(bool include_internal) const {
  json::array arr;
  for (const auto& [id, t] : trigger_types_) {
    if (!include_internal && id.rfind("engine::", 0) == 0) continue;
    arr.push_back(t.to_json());
  }
  json::object out;
  out["trigger_types"] = std::move(arr);
  return out;
}

json::object Engine::list_services() const {
  json::array arr;
  for (const auto& [id, s] : services_) {
    json::object o;
    o["id"] = s.id;
    o["name"] = s.name;
    o["description"] = s.description ? json::value(*s.description) : json::value(nullptr);
    o["parent_service_id"] =
        s.parent_service_id ? json::value(*s.parent_service_id) : json::value(nullptr);
    if (const auto* w = const_cast<Engine*>(this)->find_worker(s.owner)) o["worker_id"] = w->id;
    arr.push_back(std::move(o));
  }
  json::object out;
  out["services"] = std::move(arr);
  return out;
}

void Engine::note_function_set_change() {
  if (functions_.generation() == notified_generation_ || functions_notify_scheduled_) return;
  if (functions_observers_.empty()) {
    notified_generation_ = functions_.generation();
    return;
  }
  functions_notify_scheduled_ = true;
  auto run = [this] {
    functions_notify_scheduled_ = false;
    if (functions_.generation() == notified_generation_) return;
    notified_generation_ = functions_.generation();
    for (auto& fn : functions_observers_) fn();
  };
  if (defer_)
    defer_(run);
  else
    run();
}

}  // namespace iii::engine
