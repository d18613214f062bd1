// What a listener's RBAC policy does to a connection (engine-core.md §6): the auth function at
// connect time, the registration hooks and prefixes, the invocation gate (FORBIDDEN), the
// middleware function, and the per-session limits. Hooks run as internal calls; while one is in
// flight the connection is paused and its later frames wait, so order is kept.
#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "protocol/codec.h"

namespace iii::engine {

namespace json = boost::json;

namespace {

json::value opt(const std::optional<std::string>& s) {
  return s ? json::value(*s) : json::value(nullptr);
}
json::value opt(const std::optional<json::value>& v) { return v ? *v : json::value(nullptr); }

// {headers, query_params, ip_address} as the original passes to rbac.auth_function_id.
json::object auth_input(const ConnectionInfo& info) {
  json::object headers;
  for (const auto& [name, value] : info.headers) {
    std::string lower(name);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers[lower] = value;  // repeated headers: the last one wins
  }
  json::object query;
  std::string_view rest = info.query;
  while (!rest.empty()) {
    std::string_view part = rest.substr(0, rest.find('&'));
    rest = part.size() < rest.size() ? rest.substr(part.size() + 1) : std::string_view();
    const auto eq = part.find('=');
    std::string_view key = part.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? "" : part.substr(eq + 1);
    if (key.empty()) continue;
    auto& slot = query[key];
    if (!slot.is_array()) slot = json::array();
    slot.get_array().push_back(json::value(value));
  }
  return json::object{{"headers", std::move(headers)},
                      {"query_params", std::move(query)},
                      {"ip_address", info.ip_address}};
}

std::string describe_failure(const Outcome& o) {
  if (o.error) return o.error->code + ": " + o.error->message;
  if (!o.result) return "no result";
  return "result is not an object";
}

// A hook's answer: an object, or why the registration is dropped.
const json::object* hook_result(const Outcome& o, std::string& why) {
  if (o.error || !o.result || !o.result->is_object()) {
    why = describe_failure(o);
    return nullptr;
  }
  return &o.result->get_object();
}

void take_string(const json::object& r, std::string_view key, std::string& out) {
  if (const json::value* v = r.if_contains(key); v && v->is_string()) out = v->get_string();
}

}  // namespace

void Engine::start_auth(Worker& w) {
  pause(w);
  w.ready = false;
  const std::string& fn = *w.info.policy->auth_function_id;
  invoke(fn, auth_input(w.info), CallContext{},
         [this, handle = w.handle](Outcome o) { finish_auth(handle, std::move(o)); });
}

void Engine::finish_auth(uint64_t handle, Outcome o) {
  Worker* w = find_worker(handle);
  if (!w || w->rejected) return;
  std::string error;
  std::optional<Session> session;
  if (!o.error && o.result) session = Session::from_auth_result(*o.result, error);
  if (!session) {
    if (error.empty()) error = describe_failure(o);
    spdlog::warn("{}: connection from {} refused by auth function {}: {}", w->info.listener,
                 w->info.ip_address, *w->info.policy->auth_function_id, error);
    reject(*w, "AUTH_ERROR", "authentication failed: " + error);
    return;
  }
  w->session = std::move(*session);
  announce(*w);
  resume(handle);
}

void Engine::authenticate(const ConnectionInfo& info,
                          std::function<void(std::optional<std::string>)> done) {
  const std::string fn = *info.policy->auth_function_id;
  invoke(fn, auth_input(info), CallContext{},
         [fn, listener = info.listener, ip = info.ip_address, done](Outcome o) {
           std::string error;
           std::optional<Session> session;
           if (!o.error && o.result) session = Session::from_auth_result(*o.result, error);
           if (session) return done(std::nullopt);
           if (error.empty()) error = describe_failure(o);
           spdlog::warn("{}: telemetry connection from {} refused by auth function {}: {}",
                        listener, ip, fn, error);
           done(error);
         });
}

void Engine::reject(Worker& w, std::string_view code, const std::string& message) {
  w.rejected = true;
  w.backlog.clear();
  w.backlog_bytes = 0;
  w.conn->send(make_frame(protocol::encode_error_frame(code, message)));
  // The close reason must fit a control frame (123 bytes); the error frame has the details.
  std::string reason = std::string(code) + ": " + message;
  if (reason.size() > 120) reason.resize(120);
  w.conn->close(1008, reason);
}

void Engine::resume(uint64_t handle) {
  auto run = [this, handle] {
    Worker* w = find_worker(handle);
    if (!w || w->rejected) return;
    w->paused = false;
    while (!w->paused && !w->backlog.empty()) {
      std::string frame = std::move(w->backlog.front());
      w->backlog.pop_front();
      w->backlog_bytes -= frame.size();
      process_frame(*w, frame);
      w = find_worker(handle);
      if (!w || w->rejected) return;
    }
  };
  // Deferred: a hook may complete inside the call that started it.
  if (defer_)
    defer_(std::move(run));
  else
    run();
}

bool Engine::over_registration_limit(Worker& w, std::string_view what) {
  const uint32_t limit = w.info.policy->limits.registrations;
  if (limit == 0) return false;
  if (w.registrations < limit) {
    ++w.registrations;
    return false;
  }
  spdlog::warn(
      "worker {}: {} not registered: RATE_LIMITED (limit of {} registrations per session "
      "on {})",
      w.id, what, limit, w.info.listener);
  return true;
}

void Engine::admit(Worker& w, protocol::RegisterFunction&& m) {
  const ListenerPolicy& policy = *w.info.policy;
  if (!w.session.allow_function_registration) {
    spdlog::warn("worker {}: function {} not registered: the session may not register functions",
                 w.id, m.id);
    return;
  }
  if (over_registration_limit(w, "function " + m.id)) return;
  if (!policy.on_function_registration) {
    m.id = with_prefix(w.session, m.id);
    handle(w, std::move(m));
    return;
  }
  json::object in{{"function_id", m.id},
                  {"description", opt(m.description)},
                  {"metadata", opt(m.metadata)},
                  {"context", w.session.context}};
  pause(w);
  auto msg = std::make_shared<protocol::RegisterFunction>(std::move(m));
  invoke(*policy.on_function_registration, std::move(in), CallContext{},
         [this, h = w.handle, msg](Outcome o) {
           Worker* w = find_worker(h);
           if (!w || w->rejected) return;
           std::string why;
           if (const json::object* r = hook_result(o, why)) {
             take_string(*r, "function_id", msg->id);
             if (const json::value* v = r->if_contains("description"); v && v->is_string())
               msg->description = std::string(v->get_string());
             if (const json::value* v = r->if_contains("metadata"); v && !v->is_null())
               msg->metadata = *v;
             msg->id = with_prefix(w->session, msg->id);
             handle(*w, std::move(*msg));
           } else {
             spdlog::warn("worker {}: function {} not registered: refused by {} ({})", w->id,
                          msg->id, *w->info.policy->on_function_registration, why);
           }
           resume(h);
         });
}

void Engine::admit(Worker& w, protocol::UnregisterFunction&& m) {
  m.id = with_prefix(w.session, m.id);
  handle(w, std::move(m));
}

void Engine::admit(Worker& w, protocol::RegisterTriggerType&& m) {
  const ListenerPolicy& policy = *w.info.policy;
  if (!w.session.allow_trigger_type_registration) {
    spdlog::warn(
        "worker {}: trigger type {} not registered: the session may not register trigger types "
        "(AuthResult.allow_trigger_type_registration)",
        w.id, m.id);
    return;
  }
  if (over_registration_limit(w, "trigger type " + m.id)) return;
  if (!policy.on_trigger_type_registration) {
    handle(w, std::move(m));
    return;
  }
  json::object in{
      {"trigger_type_id", m.id}, {"description", m.description}, {"context", w.session.context}};
  pause(w);
  auto msg = std::make_shared<protocol::RegisterTriggerType>(std::move(m));
  invoke(*policy.on_trigger_type_registration, std::move(in), CallContext{},
         [this, h = w.handle, msg](Outcome o) {
           Worker* w = find_worker(h);
           if (!w || w->rejected) return;
           std::string why;
           if (const json::object* r = hook_result(o, why)) {
             take_string(*r, "trigger_type_id", msg->id);
             take_string(*r, "description", msg->description);
             handle(*w, std::move(*msg));
           } else {
             spdlog::warn("worker {}: trigger type {} not registered: refused by {} ({})", w->id,
                          msg->id, *w->info.policy->on_trigger_type_registration, why);
           }
           resume(h);
         });
}

void Engine::admit(Worker& w, protocol::RegisterTrigger&& m) {
  const ListenerPolicy& policy = *w.info.policy;
  if (w.session.allowed_trigger_types && !w.session.allowed_trigger_types->count(m.trigger_type)) {
    spdlog::warn(
        "worker {}: trigger {} not registered: trigger type {} is not in the session's "
        "allowed_trigger_types",
        w.id, m.id, m.trigger_type);
    return;
  }
  if (over_registration_limit(w, "trigger " + m.id)) return;
  if (!policy.on_trigger_registration) {
    m.function_id = with_prefix(w.session, m.function_id);
    handle(w, std::move(m));
    return;
  }
  json::object in{{"trigger_id", m.id},           {"trigger_type", m.trigger_type},
                  {"function_id", m.function_id}, {"config", m.config},
                  {"metadata", opt(m.metadata)},  {"context", w.session.context}};
  pause(w);
  auto msg = std::make_shared<protocol::RegisterTrigger>(std::move(m));
  invoke(*policy.on_trigger_registration, std::move(in), CallContext{},
         [this, h = w.handle, msg](Outcome o) {
           Worker* w = find_worker(h);
           if (!w || w->rejected) return;
           std::string why;
           if (const json::object* r = hook_result(o, why)) {
             take_string(*r, "trigger_id", msg->id);
             take_string(*r, "trigger_type", msg->trigger_type);
             take_string(*r, "function_id", msg->function_id);
             if (const json::value* v = r->if_contains("config"); v && !v->is_null())
               msg->config = *v;
             msg->function_id = with_prefix(w->session, msg->function_id);
             handle(*w, std::move(*msg));
           } else {
             spdlog::warn("worker {}: trigger {} not registered: refused by {} ({})", w->id,
                          msg->id, *w->info.policy->on_trigger_registration, why);
           }
           resume(h);
         });
}

bool Engine::gate_invoke(Worker& w, protocol::InvokeFunction& m) {
  const ListenerPolicy& policy = *w.info.policy;
  auto answer_id = [&] {
    return m.invocation_id ? *m.invocation_id : protocol::Uuid::random_v4().str();
  };
  if (const uint32_t rate = policy.limits.invocations_per_second; rate > 0) {
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - w.invoke_refill).count();
    w.invoke_refill = now;
    w.invoke_tokens = std::min<double>(rate, w.invoke_tokens + elapsed * rate);
    if (w.invoke_tokens < 1) {
      if (m.invocation_id)
        reply_to_worker(
            w.handle, *m.invocation_id, m.function_id,
            Outcome::fail("RATE_LIMITED", "more than " + std::to_string(rate) +
                                              " invocations per second on " + w.info.listener));
      return true;
    }
    w.invoke_tokens -= 1;
  }
  if (policy.rbac) {
    const Registrant* target = functions_.serving(m.function_id);
    const Access access =
        check_access(policy, w.session, m.function_id, target ? &target->info : nullptr);
    if (access != Access::kAllowed) {
      // Answered even for void calls, like the original.
      reply_to_worker(w.handle, answer_id(), m.function_id,
                      Outcome::fail("FORBIDDEN", forbidden_message(m.function_id, access)));
      return true;
    }
  }
  if (policy.middleware_function_id && m.function_id.rfind("engine::", 0) != 0) {
    json::value action = nullptr;
    if (m.action.type == protocol::ActionType::kVoid)
      action = json::object{{"type", "void"}};
    else if (m.action.type == protocol::ActionType::kEnqueue)
      action = json::object{{"type", "enqueue"}, {"queue", m.action.queue}};
    json::object in{{"function_id", m.function_id},
                    {"payload", std::move(m.data)},
                    {"action", std::move(action)},
                    {"context", w.session.context}};
    CallContext ctx{0, {}, std::move(m.traceparent), std::move(m.baggage)};
    invoke(*policy.middleware_function_id, std::move(in), std::move(ctx),
           [this, caller = w.handle, inv = answer_id(), fn = m.function_id](Outcome o) {
             reply_to_worker(caller, inv, fn, o);
           });
    return true;
  }
  return false;
}

}  // namespace iii::engine
