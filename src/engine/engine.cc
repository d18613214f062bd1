#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "protocol/codec.h"

namespace iii::engine {

namespace json = boost::json;

namespace {
constexpr std::string_view kStoppedCode = "invocation_stopped";
constexpr std::string_view kStoppedMessage = "Invocation stopped";

// The engine-wide limit and a function's own `metadata.timeout_ms`: the smaller one that is set.
int64_t effective_timeout_ms(int64_t engine_ms, int64_t function_ms) {
  if (engine_ms <= 0) return function_ms;
  if (function_ms <= 0) return engine_ms;
  return std::min(engine_ms, function_ms);
}

// A worker function's own deadline from its registration metadata; 0 when absent.
int64_t metadata_timeout_ms(const std::optional<json::value>& metadata, const std::string& worker,
                            const std::string& function_id) {
  if (!metadata || !metadata->is_object()) return 0;
  const auto* v = metadata->get_object().if_contains("timeout_ms");
  if (!v || v->is_null()) return 0;
  if (v->is_int64() && v->get_int64() > 0) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() > 0)
    return static_cast<int64_t>(std::min<uint64_t>(v->get_uint64(), INT64_MAX));
  if (v->is_double() && v->get_double() >= 1 && v->get_double() < 9.2e18)
    return static_cast<int64_t>(v->get_double());
  spdlog::warn(
      "worker {}: function {}: metadata.timeout_ms must be a positive number of "
      "milliseconds; ignored (the engine-wide limit applies)",
      worker, function_id);
  return 0;
}

bool has_telemetry_prefix(std::string_view f) {
  return f.size() >= 4 &&
         (f.substr(0, 4) == "OTLP" || f.substr(0, 4) == "MTRC" || f.substr(0, 4) == "LOGS");
}
}  // namespace

Engine::Engine() : started_at_ms_(now_ms()) {}
Engine::~Engine() = default;

int64_t Engine::now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

uint64_t Engine::connect(std::shared_ptr<Connection> conn, ConnectionInfo info) {
  if (refusing_) {  // an upgrade that completed while the engine shuts down
    spdlog::debug("connection from {} refused: engine shutting down", info.ip_address);
    conn->close(1012, "engine shutting down");
    return 0;
  }
  if (info.policy && info.policy->limits.connections_per_ip > 0) {
    uint32_t same = 0;
    for (const auto& [h, other] : workers_)
      if (other.info.listener == info.listener && other.info.ip_address == info.ip_address) ++same;
    if (same >= info.policy->limits.connections_per_ip) {
      spdlog::warn("{}: connection from {} refused: {} connections from that address already",
                   info.listener, info.ip_address, same);
      conn->send(make_frame(protocol::encode_error_frame(
          "RATE_LIMITED", "too many connections from " + info.ip_address + " (limit " +
                              std::to_string(info.policy->limits.connections_per_ip) + ")")));
      conn->close(1008, "RATE_LIMITED: too many connections");
      return 0;
    }
  }
  const uint64_t handle = next_handle_++;
  Worker& w = workers_[handle];
  w.handle = handle;
  w.uuid = protocol::Uuid::random_v4();
  w.id = w.uuid.str();
  w.conn = std::move(conn);
  w.info = std::move(info);
  w.connected_at_ms = now_ms();
  if (w.info.policy && w.info.policy->limits.invocations_per_second > 0) {
    w.invoke_tokens = w.info.policy->limits.invocations_per_second;
    w.invoke_refill = Clock::now();
  }
  if (w.info.policy && w.info.policy->auth_function_id) {
    start_auth(w);  // announced once its AuthResult arrives
    return handle;
  }
  announce(w);
  return handle;
}

void Engine::announce(Worker& w) {
  w.ready = true;
  w.reattach_token = protocol::Uuid::random_v4().str();
  w.conn->send(make_frame(protocol::encode_worker_registered(w.id, w.reattach_token)));
  spdlog::debug("worker {} connected from {} on {}", w.id, w.info.ip_address, w.info.listener);
  notify_worker_event("worker_connected", w.id);
}

Worker* Engine::find_worker(uint64_t handle) {
  auto it = workers_.find(handle);
  return it == workers_.end() ? nullptr : &it->second;
}

Worker* Engine::find_worker_by_id(std::string_view id) {
  for (auto& [h, w] : workers_)
    if (w.id == id) return &w;
  return nullptr;
}

void Engine::notify_worker_event(std::string_view event, const std::string& worker_id) {
  for (auto& fn : worker_observers_) fn(event, worker_id);
}

void Engine::on_telemetry(std::string_view frame) {
  ++stats_.telemetry_frames;
  if (telemetry_sink_) telemetry_sink_(frame);
}

void Engine::on_frame(uint64_t worker_handle, std::string_view frame) {
  Worker* w = find_worker(worker_handle);
  if (!w || w->rejected) return;
  if (w->paused) {
    // Authenticating, or a registration hook is running: keep arrival order. The backlog is
    // bounded (a peer flooding a connection that cannot make progress is cut off).
    constexpr size_t kMaxBacklogBytes = 64 * 1024 * 1024;
    if (w->backlog_bytes + frame.size() > kMaxBacklogBytes || w->backlog.size() >= 65536) {
      spdlog::warn(
          "worker {}: too many messages queued behind an auth or registration hook; "
          "closing the connection",
          w->id);
      w->rejected = true;
      w->conn->close(1008, "too many queued messages");
      return;
    }
    w->backlog_bytes += frame.size();
    w->backlog.emplace_back(frame);
    return;
  }
  process_frame(*w, frame);
}

void Engine::process_frame(Worker& worker, std::string_view frame) {
  Worker* w = &worker;
  if (has_telemetry_prefix(frame)) {
    on_telemetry(frame);
    return;
  }
  if (frame.find_first_not_of(" \t\r\n") == std::string_view::npos) return;
  auto decoded = protocol::decode(frame);
  if (auto* err = std::get_if<protocol::DecodeError>(&decoded)) {
    handle_decode_error(*w, *err);
    return;
  }
  std::visit(
      [&](auto&& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, protocol::Ping>) {
          w->conn->send(make_frame(protocol::encode_pong()));
        } else if constexpr (std::is_same_v<T, protocol::Pong> ||
                             std::is_same_v<T, protocol::WorkerRegistered>) {
          // Nothing to do: liveness is tracked at the WebSocket layer.
        } else if constexpr (std::is_same_v<T, protocol::RegisterFunction> ||
                             std::is_same_v<T, protocol::UnregisterFunction> ||
                             std::is_same_v<T, protocol::RegisterTriggerType> ||
                             std::is_same_v<T, protocol::RegisterTrigger>) {
          if (w->info.policy)
            admit(*w, std::move(m));  // RBAC checks, hooks and prefixes first
          else
            handle(*w, std::move(m));
        } else if constexpr (std::is_same_v<T, protocol::InvokeFunction> ||
                             std::is_same_v<T, protocol::InvocationResult> ||
                             std::is_same_v<T, protocol::RegisterService> ||
                             std::is_same_v<T, protocol::UnregisterTriggerType> ||
                             std::is_same_v<T, protocol::UnregisterTrigger> ||
                             std::is_same_v<T, protocol::Reattach>) {
          handle(*w, std::move(m));
        } else if constexpr (std::is_same_v<T, protocol::TriggerRegistrationResult>) {
          if (m.error)
            spdlog::warn("worker {} could not register trigger {} ({}): {}: {}", w->id, m.id,
                         m.trigger_type, m.error->code, m.error->message);
        }
      },
      std::move(std::get<protocol::Message>(decoded)));
}

void Engine::handle_decode_error(Worker& w, const protocol::DecodeError& e) {
  ++stats_.decode_errors;
  // A peer sending garbage in a loop must not flood the log: the first few warnings per
  // connection, then one a second with the count suppressed, and the rest when it disconnects.
  if (!w.invalid_messages.has_summary())
    w.invalid_messages.set_summary("worker " + w.id + ": invalid messages");
  if (const auto suppressed = w.invalid_messages.admit()) {
    if (*suppressed == 0)
      spdlog::warn("worker {}: invalid {} message: {}", w.id, e.type, e.reason);
    else
      spdlog::warn("worker {}: invalid {} message: {} ({} more suppressed before this one)", w.id,
                   e.type, e.reason, *suppressed);
  }
  // Only an invokefunction with a readable id has a caller waiting for an answer.
  if (e.invocation_id) {
    Outcome o = Outcome::fail("invalid_message", "invalid invokefunction: " + e.reason);
    reply_to_worker(w.handle, *e.invocation_id, e.function_id.value_or(""), o);
  }
}

void Engine::handle(Worker& w, protocol::RegisterFunction&& m) {
  if (shutting_down_) return;
  FunctionInfo info{m.id, std::move(m.description), std::move(m.request_format),
                    std::move(m.response_format), std::move(m.metadata)};
  const std::string id = info.id;
  std::shared_ptr<BuiltinFunction> served_in_process;
  if (m.invocation) {
    if (!invocation_registrar_) {
      spdlog::error(
          "worker {}: function {} is HTTP-invoked, which needs the iii-http-functions worker; "
          "not registered",
          w.id, id);
      return;
    }
    InvocationRegistration reg = invocation_registrar_(w, info, *m.invocation);
    if (!reg.handler) {
      spdlog::error("worker {}: HTTP-invoked function {} not registered: {}", w.id, id, reg.error);
      return;
    }
    served_in_process = std::make_shared<BuiltinFunction>(BuiltinFunction{std::move(*reg.handler)});
  }
  const size_t before = functions_.registrant_count(id);
  const int64_t timeout_ms = metadata_timeout_ms(info.metadata, w.id, id);
  switch (functions_.add(
      Registrant{w.handle, std::move(served_in_process), std::move(info), {}, timeout_ms})) {
    case FunctionRegistry::AddResult::kRefusedBuiltin:
      spdlog::warn("worker {}: function id {} belongs to a built-in worker; registration refused",
                   w.id, id);
      return;
    case FunctionRegistry::AddResult::kAdded:
      w.functions.push_back(id);
      if (before > 0)
        spdlog::info("function {} registered by another live worker too; worker {} now serves it",
                     id, w.id);
      break;
    case FunctionRegistry::AddResult::kUpdated:
      break;
  }
  spdlog::debug("worker {} registered function {}", w.id, id);
  note_function_set_change();
}

void Engine::handle(Worker& w, protocol::UnregisterFunction&& m) {
  auto it = std::find(w.functions.begin(), w.functions.end(), m.id);
  if (it == w.functions.end()) {
    spdlog::debug("worker {}: unregisterfunction {} ignored (not registered by it)", w.id, m.id);
    return;
  }
  w.functions.erase(it);
  functions_.remove(m.id, w.handle);
  note_function_set_change();
}

void Engine::handle(Worker& w, protocol::InvokeFunction&& m) {
  using protocol::ActionType;
  ++stats_.invocations;
  if (w.info.policy && gate_invoke(w, m)) return;
  const bool wants_reply = m.invocation_id && m.action.type != ActionType::kVoid;

  if (m.action.type != ActionType::kVoid && m.action.type != ActionType::kNone) {
    auto handler = action_handlers_.find(m.action.type);
    if (handler == action_handlers_.end()) {
      spdlog::warn(
          "worker {}: enqueue to queue '{}' for {} refused: the iii-queue worker is not loaded",
          w.id, m.action.queue, m.function_id);
      if (wants_reply)
        reply_to_worker(w.handle, *m.invocation_id, m.function_id,
                        Outcome::fail("enqueue_error", "QueueModule not loaded"));
      return;
    }
    Completion done;
    if (wants_reply)
      done = [this, caller = w.handle, inv = *m.invocation_id, fn = m.function_id](Outcome o) {
        reply_to_worker(caller, inv, fn, o);
      };
    CallContext ctx{w.handle, w.id, m.traceparent, m.baggage};
    if (observer_) observer_->deferred(m.function_id);
    handler->second(ctx, std::move(m), std::move(done));
    return;
  }
  if (m.data.is_object()) m.data.get_object()["_caller_worker_id"] = w.id;

  CallContext ctx{w.handle, w.id, std::move(m.traceparent), std::move(m.baggage),
                  std::move(m.metadata)};
  if (wants_reply) {
    const std::string& inv = *m.invocation_id;
    route(m.function_id, std::move(m.data), std::move(ctx), inv, w.handle, inv, {});
  } else {
    route(m.function_id, std::move(m.data), std::move(ctx), std::nullopt, 0, {}, {});
  }
}

// A newer SDK reconnected and says which connection it was. With that connection's token, the
// new connection takes its place: functions, triggers, trigger types and services move over in
// place (no unregister/failover churn, no trigger replay), invocations it was executing are
// answered when their results arrive on the new connection, results it was waiting for are
// delivered there, and the old connection (half-open, or about to close) is closed. Without a
// matching live connection nothing happens: the SDK registers everything again anyway.
void Engine::handle(Worker& w, protocol::Reattach&& m) {
  Worker* old = find_worker_by_id(m.previous_worker_id);
  if (!old || old == &w) {
    spdlog::debug("worker {}: reattach to {}: no such live connection; starting fresh", w.id,
                  m.previous_worker_id);
    return;
  }
  if (!m.reattach_token || !protocol::secrets_equal(*m.reattach_token, old->reattach_token)) {
    spdlog::warn("worker {}: reattach to {} refused: wrong or missing reattach_token", w.id,
                 m.previous_worker_id);
    return;
  }
  const uint64_t from = old->handle, to = w.handle;
  for (const auto& id : old->functions) {
    if (!functions_.reassign(id, from, to)) continue;
    if (std::find(w.functions.begin(), w.functions.end(), id) == w.functions.end())
      w.functions.push_back(id);
  }
  old->functions.clear();
  for (const auto& key : old->executing) {
    auto p = pending_.find(key);
    if (p != pending_.end() && p->second.executor == from) p->second.executor = to;
    w.executing.insert(key);
  }
  old->executing.clear();
  for (const auto& key : old->waiting) {
    auto p = pending_.find(key);
    if (p != pending_.end() && p->second.caller == from) p->second.caller = to;
    w.waiting.insert(key);
  }
  old->waiting.clear();
  for (auto& [id, t] : triggers_)
    if (t.owner == from) t.owner = to;
  for (auto& [id, type] : trigger_types_) {
    if (type.builtin) continue;
    for (auto& r : type.registrants)
      if (r == from) r = to;
    if (type.owner == from) type.owner = to;
  }
  for (auto& [id, s] : services_)
    if (s.owner == from) s.owner = to;
  if (!w.name) w.name = old->name;
  if (!w.runtime) w.runtime = old->runtime;
  if (!w.version) w.version = old->version;
  if (!w.os) w.os = old->os;
  if (!w.pid) w.pid = old->pid;
  spdlog::info("worker {} reattached as {} (the old connection is retired)", old->id, w.id);
  // The old connection has nothing left, so its cleanup (now, or when its close completes)
  // changes nothing else.
  old->conn->close(1000, "reattached on a new connection");
  disconnect(from);
}

void Engine::set_action_handler(protocol::ActionType type, ActionHandler h) {
  if (h)
    action_handlers_[type] = std::move(h);
  else
    action_handlers_.erase(type);
}

void Engine::invoke(const std::string& function_id, json::value data, CallContext ctx,
                    Completion done) {
  route(function_id, std::move(data), std::move(ctx), std::nullopt, 0, {}, std::move(done));
}

void Engine::route(const std::string& function_id, json::value data, CallContext ctx,
                   std::optional<std::string> preferred_id, uint64_t caller,
                   std::string caller_inv_id, Completion done) {
  InvocationSpan span;
  if (observer_) observer_->begin(function_id, ctx, span);
  auto finish = [&](Outcome o) {
    if (observer_) observer_->end(function_id, span, o, 0);
    if (caller)
      reply_to_worker(caller, caller_inv_id, function_id, o);
    else if (done)
      done(std::move(o));
  };
  if (shutting_down_ || refusing_) {
    finish(Outcome::fail(std::string(kStoppedCode), "engine is shutting down"));
    return;
  }
  const Registrant* target = functions_.serving(function_id);
  if (!target) {
    if (!caller && !done)
      spdlog::warn("void invocation of unknown function {} dropped", function_id);
    finish(Outcome::fail("function_not_found", "Function " + function_id + " not found"));
    return;
  }
  if (target->builtin) {
    // Built-ins may complete synchronously or later; the caller may be gone by then.
    auto builtin = target->builtin;
    builtin->handler(ctx, std::move(data),
                     [this, caller, caller_inv_id, function_id, done, span](Outcome o) {
                       if (observer_) observer_->end(function_id, span, o, 0);
                       if (caller) {
                         reply_to_worker(caller, caller_inv_id, function_id, o);
                       } else if (done) {
                         o.materialise();
                         done(std::move(o));
                       }
                     });
    return;
  }
  Worker* executor = find_worker(target->worker);
  if (!executor) {  // impossible: registrations are removed with their worker
    finish(Outcome::fail("channel_send_failed", "executor of " + function_id + " is gone"));
    return;
  }
  // Register the pending invocation before anything is sent, so no answer can be lost.
  protocol::Uuid key;
  std::optional<protocol::Uuid> wanted =
      preferred_id ? protocol::Uuid::parse(*preferred_id) : std::nullopt;
  if (wanted && !pending_.count(*wanted))
    key = *wanted;
  else
    do key = protocol::Uuid::random_v4();
    while (pending_.count(key));
  const std::string wire_id = (wanted && key == *wanted) ? *preferred_id : key.str();

  Pending& p = pending_[key];
  p.function_id = function_id;
  const int64_t limit_ms = effective_timeout_ms(invocation_timeout_.count(), target->timeout_ms);
  if (limit_ms > 0) add_deadline(key, p, limit_ms);
  p.executor = executor->handle;
  p.caller = caller;
  p.caller_invocation_id = std::move(caller_inv_id);
  p.done = std::move(done);
  p.span = span;
  executor->executing.insert(key);
  if (caller)
    if (Worker* c = find_worker(caller)) c->waiting.insert(key);

  if (cork_depth_ > 0 && !executor->held) {
    executor->held = true;
    executor->conn->hold();
    corked_.push_back(executor->handle);
  }
  std::string_view local_id = function_id;  // as the executor registered it (before its prefix)
  if (const auto& prefix = executor->session.function_registration_prefix;
      prefix && local_id.size() > prefix->size() + 2 &&
      local_id.substr(0, prefix->size()) == *prefix && local_id.substr(prefix->size(), 2) == "::")
    local_id.remove_prefix(prefix->size() + 2);
  executor->conn->send(make_frame(protocol::encode_invoke(wire_id, local_id, data, ctx.traceparent,
                                                          ctx.baggage, ctx.metadata)));
}

void Engine::handle(Worker& w, protocol::InvocationResult&& m) {
  auto key = protocol::Uuid::parse(m.invocation_id);
  auto it = key ? pending_.find(*key) : pending_.end();
  if (it == pending_.end() || it->second.executor != w.handle) {
    // Late answers (after a halt or an SDK reconnect) are expected; never an error for others.
    ++stats_.late_results;
    spdlog::debug("worker {}: result for unknown or foreign invocation {} ignored", w.id,
                  m.invocation_id);
    return;
  }
  Outcome o{std::move(m.result), std::move(m.error), std::move(m.traceparent),
            std::move(m.baggage)};
  complete(*key, std::move(o));
}

void Engine::complete(const protocol::Uuid& key, Outcome outcome) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (p.deadline) deadlines_.erase(*p.deadline);
  if (Worker* ex = find_worker(p.executor)) ex->executing.erase(key);
  if (observer_) observer_->end(p.function_id, p.span, outcome, p.executor);
  if (p.caller) {
    if (Worker* c = find_worker(p.caller)) {
      c->waiting.erase(key);
      reply_to_worker(p.caller, p.caller_invocation_id, p.function_id, outcome);
    }
  } else if (p.done) {
    p.done(std::move(outcome));
  }
}

void Outcome::materialise() {
  if (!raw_result) return;
  if (!result && !error) {
    boost::system::error_code ec;
    json::value v = json::parse(*raw_result, ec, {}, protocol::json_parse_options());
    result = ec ? json::value(nullptr) : std::move(v);  // raw results are valid by contract
  }
  raw_result.reset();
}

void Engine::uncork() {
  if (cork_depth_ == 0 || --cork_depth_ > 0) return;
  const std::vector<uint64_t> held = std::move(corked_);
  corked_.clear();
  for (uint64_t handle : held)
    if (Worker* w = find_worker(handle)) {
      w->held = false;
      w->conn->release();
    }
}

void Engine::add_deadline(const protocol::Uuid& key, Pending& p, int64_t timeout_ms) {
  const Clock::time_point when = Clock::now() + std::chrono::milliseconds(timeout_ms);
  p.timeout_ms = timeout_ms;
  p.deadline = deadlines_.emplace(when, key);
  // Deadlines mostly arrive in order, so the timer is re-armed only for an earlier one.
  if (arm_timer_ && (!timer_armed_for_ || when < *timer_armed_for_)) {
    timer_armed_for_ = when;
    arm_timer_(when);
  }
}

void Engine::expire_due(Clock::time_point now) {
  timer_armed_for_.reset();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const protocol::Uuid key = deadlines_.begin()->second;
    auto it = pending_.find(key);
    if (it == pending_.end()) {  // impossible: complete() erases the deadline with the entry
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    const Pending& p = it->second;
    ++stats_.timeouts;
    std::string message = "Invocation of " + p.function_id + " timed out after " +
                          std::to_string(p.timeout_ms) + " ms";
    if (const Worker* ex = find_worker(p.executor))
      spdlog::warn("{} (worker {}); a late result will be dropped", message, ex->id);
    complete(key, Outcome::fail("timeout", std::move(message)));
  }
  if (arm_timer_ && !deadlines_.empty() &&
      (!timer_armed_for_ || deadlines_.begin()->first < *timer_armed_for_)) {
    timer_armed_for_ = deadlines_.begin()->first;
    arm_timer_(*timer_armed_for_);
  }
}

void Engine::reply_to_worker(uint64_t caller, std::string_view invocation_id,
                             std::string_view function_id, const Outcome& o) {
  Worker* c = find_worker(caller);
  if (!c) return;
  if (o.raw_result && !o.result && !o.error) {
    c->conn->send(make_frame(protocol::encode_result_raw(invocation_id, function_id, *o.raw_result,
                                                         o.traceparent, o.baggage)));
    return;
  }
  c->conn->send(make_frame(protocol::encode_result(invocation_id, function_id, o.result, o.error,
                                                   o.traceparent, o.baggage)));
}

void Engine::disconnect(uint64_t handle) {
  auto it = workers_.find(handle);
  if (it == workers_.end()) return;
  Worker& w = it->second;
  // 1. Functions it registered; another registrant (if any) takes over.
  for (const auto& id : w.functions) {
    if (functions_.remove(id, handle)) continue;
    if (const Registrant* next = functions_.serving(id); next && next->worker)
      if (Worker* nw = find_worker(next->worker))
        spdlog::info("function {} failed over to worker {}", id, nw->id);
  }
  // 2. Invocations it was executing: their callers get invocation_stopped now.
  std::vector<protocol::Uuid> executing(w.executing.begin(), w.executing.end());
  for (const auto& key : executing)
    complete(key, Outcome::fail(std::string(kStoppedCode), std::string(kStoppedMessage)));
  // 3. Invocations it was waiting on: nobody to answer any more; drop the reply path.
  for (const auto& key : w.waiting) {
    auto p = pending_.find(key);
    if (p != pending_.end()) p->second.caller = 0;
  }
  // 4. Triggers it registered, trigger types it provided (their triggers wait), services.
  remove_worker_triggers(handle);
  note_function_set_change();
  const std::string id = w.id;
  const bool announced = w.ready;
  spdlog::debug("worker {} disconnected", id);
  workers_.erase(it);
  if (announced) notify_worker_event("worker_disconnected", id);
}

void Engine::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  refusing_ = true;
  std::vector<protocol::Uuid> keys;
  keys.reserve(pending_.size());
  for (const auto& [k, p] : pending_) keys.push_back(k);
  for (const auto& k : keys)
    complete(k, Outcome::fail(std::string(kStoppedCode), std::string(kStoppedMessage)));
  // 1012 (service restart), not 1001: the Python SDK's websockets client treats 1000/1001 as a
  // normal end and would not reconnect to the restarted engine.
  for (auto& [h, w] : workers_) w.conn->close(1012, "engine shutting down");
  channels_.close_all();
}

void Engine::add_builtin_worker(BuiltinWorkerInfo info) {
  builtin_workers_.push_back(std::move(info));
}

void Engine::register_builtin(FunctionInfo info, const std::string& owner, BuiltinHandler handler) {
  const std::string id = info.id;
  functions_.add(Registrant{0,
                            std::make_shared<BuiltinFunction>(BuiltinFunction{std::move(handler)}),
                            std::move(info), owner});
  for (auto& bw : builtin_workers_)
    if (bw.instance_name == owner) bw.functions.push_back(id);
  note_function_set_change();
}

json::object Engine::list_functions(bool include_internal, uint64_t caller) const {
  const Worker* session = nullptr;  // a worker on an RBAC listener sees what it may call
  if (caller)
    if (auto it = workers_.find(caller); it != workers_.end() && it->second.info.policy)
      session = &it->second;
  json::array arr;
  functions_.for_each_sorted([&](const Registrant& r) {
    if (!include_internal && r.info.id.rfind("engine::", 0) == 0) return;
    if (session && check_access(*session->info.policy, session->session, r.info.id, &r.info) !=
                       Access::kAllowed)
      return;
    arr.push_back(r.info.to_json());
  });
  json::object out;
  out["functions"] = std::move(arr);
  return out;
}

json::object Engine::list_workers(const std::optional<std::string>& worker_id) const {
  struct Row {
    std::string sort_name, id;
    json::object obj;
  };
  std::vector<Row> rows;
  for (const auto& [h, w] : workers_) {
    if (worker_id && w.id != *worker_id) continue;
    // Like the original, anonymous connections (no reported pid) are hidden from the full list.
    if (!worker_id && !w.pid) continue;
    json::object o;
    o["id"] = w.id;
    o["name"] = w.name ? json::value(*w.name) : json::value(nullptr);
    o["runtime"] = w.runtime.value_or("unknown");
    o["version"] = w.version ? json::value(*w.version) : json::value(nullptr);
    o["os"] = w.os ? json::value(*w.os) : json::value(nullptr);
    o["ip_address"] = w.info.ip_address;
    o["internal"] = false;
    o["status"] = "connected";
    o["connected_at_ms"] = w.connected_at_ms;
    o["function_count"] = w.functions.size();
    json::array fns;
    for (const auto& f : w.functions) fns.push_back(json::value(f));
    o["functions"] = std::move(fns);
    o["active_invocations"] = w.executing.size() + w.waiting.size();
    o["latest_metrics"] = w.latest_metrics;
    if (w.pid) o["pid"] = *w.pid;
    if (w.isolation) o["isolation"] = *w.isolation;
    rows.push_back({w.name.value_or(w.id), w.id, std::move(o)});
  }
  if (!worker_id) {
    for (const auto& bw : builtin_workers_) {
      json::object o;
      o["id"] = bw.instance_name;
      o["name"] = bw.type;
      o["runtime"] = "engine";
      o["version"] = III_VERSION;
      o["os"] = nullptr;
      o["ip_address"] = nullptr;
      o["internal"] = bw.mandatory;
      o["status"] = "available";
      o["connected_at_ms"] = started_at_ms_;  // SDK models require an integer
      o["function_count"] = bw.functions.size();
      json::array fns;
      for (const auto& f : bw.functions) fns.push_back(json::value(f));
      o["functions"] = std::move(fns);
      o["active_invocations"] = 0;
      o["latest_metrics"] = nullptr;
      o["isolation"] = "in-process";
      rows.push_back({bw.type, bw.instance_name, std::move(o)});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.sort_name, a.id) < std::tie(b.sort_name, b.id);
  });
  json::array arr;
  for (auto& r : rows) arr.push_back(std::move(r.obj));
  json::object out;
  out["workers"] = std::move(arr);
  out["timestamp"] = now_ms();
  return out;
}

}  // namespace iii::engine
