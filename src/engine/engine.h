// The engine core: worker connections, the function registry and invocation routing.
// Single-threaded by design: every method runs on the engine's I/O thread (see
// docs/architecture.md), so no locks guard this state.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/logging.h"
#include "engine/channels.h"
#include "engine/connection.h"
#include "engine/function_registry.h"
#include "engine/rbac.h"
#include "protocol/messages.h"
#include "protocol/uuid.h"

namespace iii::engine {

// What an invocation produced: a result (possibly absent), or an error.
struct Outcome {
  std::optional<boost::json::value> result;
  std::optional<protocol::ErrorBody> error;
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
  // A successful result already serialised as one compact JSON value (a store list built on a
  // reader thread), used when `result` and `error` are absent. A worker caller gets it
  // verbatim; the engine parses it into `result` (materialise) before an in-process caller
  // sees the outcome, so only the worker reply path ever reads it.
  std::shared_ptr<const std::string> raw_result;

  static Outcome ok(boost::json::value v) { return Outcome{std::move(v), std::nullopt, {}, {}}; }
  static Outcome ok_raw(std::shared_ptr<const std::string> json_text) {
    Outcome o;
    o.raw_result = std::move(json_text);
    return o;
  }
  // Moves raw_result into result (parsed); a no-op when there is none.
  void materialise();
  static Outcome empty() { return Outcome{}; }
  static Outcome fail(std::string code, std::string message) {
    return Outcome{std::nullopt,
                   protocol::ErrorBody{std::move(code), std::move(message), std::nullopt},
                   {},
                   {}};
  }
};

// Called exactly once with the outcome; an empty Completion discards it.
using Completion = std::function<void(Outcome)>;

// The engine's own span of one routed invocation (ids as integers so the hot path formats no
// strings unless an observer wants them). Filled by an InvocationObserver.
struct InvocationSpan {
  uint64_t trace_hi = 0, trace_lo = 0;  // both 0: not traced
  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;  // 0: a root span
  uint8_t flags = 1;
  int64_t start_unix_nano = 0;
  bool traced() const { return trace_hi || trace_lo; }
};

struct CallContext {
  uint64_t caller = 0;           // worker handle of the caller; 0 for internal calls
  std::string caller_worker_id;  // its UUID; empty for internal calls
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
  // Caller metadata (newer SDKs' `metadata` on invokefunction), passed on to a worker executor.
  std::optional<boost::json::value> metadata;
};

using BuiltinHandler =
    std::function<void(const CallContext&, boost::json::value input, Completion done)>;

// Sees every invocation the engine routes (iii-observability: the engine's spans and metrics).
// begin() runs before the invocation is sent and may replace ctx.traceparent (the executor then
// gets the engine's span as its parent); end() runs once with the outcome, whatever it is
// (result, error, timeout, executor gone, function not found).
class InvocationObserver {
 public:
  virtual ~InvocationObserver() = default;
  virtual void begin(const std::string& function_id, CallContext& ctx, InvocationSpan& span) = 0;
  virtual void end(const std::string& function_id, const InvocationSpan& span, const Outcome& o,
                   uint64_t executor) = 0;
  // An invocation handed to an action handler (enqueue): it runs later, as its own invocation.
  virtual void deferred(const std::string& function_id) = 0;
};

struct BuiltinFunction {
  BuiltinHandler handler;
};

// A trigger binds an event source (its type) to a function. Stored by id; it stays stored
// while its type is missing ("pending") and binds when the type appears.
struct Trigger {
  enum class State { kPending, kBound, kFailed };
  std::string id;
  std::string trigger_type;
  std::string function_id;
  boost::json::value config;
  std::optional<boost::json::value> metadata;
  uint64_t owner = 0;  // registering connection; 0 = registered in-process
  State state = State::kPending;
  std::string error;  // why binding failed (kFailed)

  std::optional<std::string> condition_function_id() const;
  boost::json::object to_json()
      const;  // {id, trigger_type, function_id, config, metadata?, state, error?}
};

// Implemented by in-process workers that provide a trigger type (http, cron, ...).
class TriggerTypeHandler {
 public:
  virtual ~TriggerTypeHandler() = default;
  // Activates a trigger; returns an error message when its config is refused.
  virtual std::optional<std::string> bind(const Trigger& t) = 0;
  virtual void unbind(const Trigger& t) = 0;
};

struct TriggerType {
  std::string id;
  std::string description;
  std::optional<boost::json::value> trigger_request_format;
  std::optional<boost::json::value> call_request_format;
  uint64_t owner = 0;                     // connection serving a custom type (newest)
  std::vector<uint64_t> registrants;      // every live connection that registered it
  TriggerTypeHandler* builtin = nullptr;  // in-process provider (not owned)

  boost::json::object to_json() const;
};

struct Service {
  std::string id;
  std::string name;
  std::optional<std::string> description;
  std::optional<std::string> parent_service_id;
  uint64_t owner = 0;
};

// What happened when a trigger fired.
enum class FireStatus { kInvoked, kSkipped, kConditionFailed };
using FireCompletion = std::function<void(FireStatus, Outcome)>;

// A connected worker (one WebSocket connection on `/`).
struct Worker {
  uint64_t handle = 0;
  protocol::Uuid uuid;
  std::string id;  // uuid.str()
  std::shared_ptr<Connection> conn;
  ConnectionInfo info;
  int64_t connected_at_ms = 0;
  // Metadata from engine::workers::register.
  std::optional<std::string> name, runtime, version, os, isolation;
  std::optional<int64_t> pid;
  boost::json::value telemetry;
  boost::json::value latest_metrics;   // from its SDK's MTRC frames (iii-observability); null
  std::vector<std::string> functions;  // ids this connection registered (insertion order)
  std::unordered_set<protocol::Uuid, protocol::UuidHash> executing;  // invocations it must answer
  std::unordered_set<protocol::Uuid, protocol::UuidHash> waiting;    // invocations it initiated
  logging::WarningLimiter invalid_messages;  // rate-limits the warnings for its bad frames
  bool held = false;                         // its connection is held by Engine::cork()
  // RBAC (engine/rbac.h, rbac_gate.cc). A connection on a listener with an auth function is not
  // `ready` (no workerregistered, not announced) until its AuthResult arrives. While `paused`
  // (authenticating, or a registration hook in flight) its frames wait in `backlog`, so they are
  // still processed in arrival order.
  Session session;
  bool ready = true;
  bool paused = false;
  bool rejected = false;  // auth failed: the connection is closing, frames are dropped
  std::deque<std::string> backlog;
  size_t backlog_bytes = 0;
  uint32_t registrations = 0;  // admitted registrations (ListenerLimits::registrations)
  double invoke_tokens = 0;    // token bucket for ListenerLimits::invocations_per_second
  std::chrono::steady_clock::time_point invoke_refill{};
  // Handed out in `workerregistered`; a newer SDK that reconnects presents it in `reattach`
  // to take this connection's place.
  std::string reattach_token;
};

// An in-process worker instance, listed by engine::workers::list.
struct BuiltinWorkerInfo {
  std::string instance_name;  // e.g. "iii-worker-manager#1"
  std::string type;           // e.g. "iii-worker-manager"
  bool mandatory = false;
  std::vector<std::string> functions;
};

struct EngineStats {
  uint64_t invocations = 0;
  uint64_t decode_errors = 0;
  uint64_t telemetry_frames = 0;
  uint64_t late_results = 0;
  uint64_t timeouts = 0;
};

class Engine {
 public:
  Engine();
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- transport side (src/net) ----
  // Registers a new connection and sends it `workerregistered`. Returns its handle, or 0 when
  // the engine is shutting down (the connection is then closed with 1012 and never registered).
  uint64_t connect(std::shared_ptr<Connection> conn, ConnectionInfo info);
  // One protocol frame (text, or binary that is not telemetry).
  void on_frame(uint64_t worker, std::string_view frame);
  // A telemetry frame (OTLP/MTRC/LOGS prefix) from `/` or `/otel`: counted, then handed to the
  // sink (iii-observability) if one is set.
  void on_telemetry(std::string_view frame);
  // Runs the listener policy's auth function for a connection that gets no worker entry (a
  // telemetry socket on `/otel`): `done(std::nullopt)` when the AuthResult admits it, else
  // `done(why)` (logged). The policy must have an auth function.
  void authenticate(const ConnectionInfo& info,
                    std::function<void(std::optional<std::string> refused)> done);
  using TelemetrySink = std::function<void(std::string_view frame)>;
  void set_telemetry_sink(TelemetrySink s) { telemetry_sink_ = std::move(s); }
  // Not owned; null to stop observing.
  void set_invocation_observer(InvocationObserver* o) { observer_ = o; }
  // The connection is gone: run the full cleanup (engine-core.md §1.6).
  void disconnect(uint64_t worker);

  // ---- in-process workers ----
  void add_builtin_worker(BuiltinWorkerInfo info);
  // Registers a built-in function owned by `owner` (an instance name).
  void register_builtin(FunctionInfo info, const std::string& owner, BuiltinHandler handler);
  // Invokes a function from inside the engine (or on behalf of a caller in `ctx`).
  void invoke(const std::string& function_id, boost::json::value data, CallContext ctx,
              Completion done);

  // ---- hooks for built-in workers that own part of the protocol ----
  // Invocations whose `action` is `type` (iii-queue owns `enqueue`). The handler answers through
  // `done` when the caller waits (an empty `done` for void calls). Without a handler such
  // invocations are answered `enqueue_error` ("QueueModule not loaded"), as in the original.
  using ActionHandler =
      std::function<void(const CallContext& ctx, protocol::InvokeFunction&& m, Completion done)>;
  void set_action_handler(protocol::ActionType type, ActionHandler h);
  // Functions registered with an `invocation` block (iii-http-functions): the registrar returns
  // the handler that serves the function in-process, or an error message. The function is owned
  // by the registering connection and goes with it.
  struct InvocationRegistration {
    std::optional<BuiltinHandler> handler;
    std::string error;  // when refused
  };
  using InvocationRegistrar = std::function<InvocationRegistration(
      const Worker& w, const FunctionInfo& info, const boost::json::value& invocation)>;
  void set_invocation_registrar(InvocationRegistrar r) { invocation_registrar_ = std::move(r); }

  // ---- triggers ----
  // Adds an in-process trigger type. Workers can never take over these ids.
  void register_builtin_trigger_type(TriggerType type, TriggerTypeHandler* handler);
  // Registers a trigger from inside the engine (owner 0).
  void register_trigger(Trigger t);
  void unregister_trigger(const std::string& id);
  // Runs `t`'s condition function (if any) with `payload`, then its function. The shared
  // implementation of condition_function_id for every trigger type.
  void fire(const Trigger& t, boost::json::value payload, FireCompletion done = {});
  // Fires every bound trigger of the built-in type `type` that `matches` accepts (all when
  // empty), each through its condition function. `done` gets each trigger's outcome; without it,
  // a failing handler is logged. The one way built-in workers fire their triggers.
  using TriggerFilter = std::function<bool(const Trigger&)>;
  using TriggerDone = std::function<void(const std::string& trigger_id, FireStatus, Outcome)>;
  void fire_type(const std::string& type, const boost::json::value& payload,
                 const TriggerFilter& matches = {}, const TriggerDone& done = {});
  // Ids of the bound triggers of a built-in type, in binding order.
  const std::vector<std::string>& bound_triggers(const std::string& type) const;
  const std::map<std::string, Trigger>& triggers() const { return triggers_; }
  const std::map<std::string, TriggerType>& trigger_types() const { return trigger_types_; }
  const std::map<std::string, Service>& services() const { return services_; }
  boost::json::object list_triggers(bool include_internal) const;
  boost::json::object list_trigger_types(bool include_internal) const;
  boost::json::object list_services() const;

  // Runs `fn` after the current message is processed (on the engine thread). Set by the
  // runtime to post onto the io_context; without one, `fn` runs inline.
  using Deferrer = std::function<void(std::function<void()>)>;
  void set_deferrer(Deferrer d) { defer_ = std::move(d); }
  // Called (deferred and coalesced) whenever the set of function ids changed.
  void on_functions_changed(std::function<void()> fn) {
    functions_observers_.push_back(std::move(fn));
  }

  // ---- batching ----
  // While corked, the invocations routed to each worker are queued on its connection and
  // written together when the last uncork() comes: a built-in worker firing many triggers at
  // once (cron ticks, pubsub fan-out) pays one write per worker instead of one per call.
  void cork() { ++cork_depth_; }
  void uncork();
  // Corks for the scope of the object.
  class Cork {
   public:
    explicit Cork(Engine& e) : e_(e) { e_.cork(); }
    ~Cork() { e_.uncork(); }
    Cork(const Cork&) = delete;
    Cork& operator=(const Cork&) = delete;

   private:
    Engine& e_;
  };

  // ---- deadlines ----
  // Engine-wide limit for an invocation routed to a worker (iii-worker-manager
  // `invocation_timeout_ms`; 0 = none). A function's `metadata.timeout_ms` can only shorten it.
  void set_invocation_timeout(std::chrono::milliseconds t) {
    invocation_timeout_ = t;
    invocation_timeout_configured_ = true;
  }
  bool invocation_timeout_configured() const { return invocation_timeout_configured_; }
  std::chrono::milliseconds invocation_timeout() const { return invocation_timeout_; }
  // The runtime's timer: the engine asks to be woken (expire_due) at `when`, replacing any
  // earlier request. Without one, deadlines only expire when expire_due is called (tests).
  using Clock = std::chrono::steady_clock;
  using TimerArm = std::function<void(Clock::time_point when)>;
  void set_timer(TimerArm arm) { arm_timer_ = std::move(arm); }
  // Answers every invocation whose deadline is at or before `now` with error `timeout`.
  void expire_due(Clock::time_point now);
  size_t deadline_count() const { return deadlines_.size(); }

  // First step of a graceful shutdown: new invocations are refused with `invocation_stopped`
  // while work already accepted (e.g. storage writes) completes.
  void stop_accepting() { refusing_ = true; }
  // Then: every pending invocation is answered `invocation_stopped`, every connection is
  // closed (1012) after its queued frames are written. Idempotent.
  void shutdown();
  bool shutting_down() const { return shutting_down_; }

  // ---- introspection ----
  // Filtered by the caller's RBAC session when `caller` is a worker on an RBAC listener.
  boost::json::object list_functions(bool include_internal, uint64_t caller = 0) const;
  boost::json::object list_workers(const std::optional<std::string>& worker_id) const;
  Worker* find_worker(uint64_t handle);
  Worker* find_worker_by_id(std::string_view id);
  const FunctionRegistry& functions() const { return functions_; }
  ChannelRegistry& channels() { return channels_; }
  size_t worker_count() const { return workers_.size(); }
  size_t pending_count() const { return pending_.size(); }
  const EngineStats& stats() const { return stats_; }

  // Observers of worker lifecycle events ("worker_connected", "worker_disconnected",
  // "worker_metadata_updated"); used by the workers-available trigger type.
  using WorkerEventFn = std::function<void(std::string_view event, const std::string& worker_id)>;
  void on_worker_event(WorkerEventFn fn) { worker_observers_.push_back(std::move(fn)); }
  void notify_worker_event(std::string_view event, const std::string& worker_id);

  static int64_t now_ms();

 private:
  using Deadlines = std::multimap<Clock::time_point, protocol::Uuid>;
  struct Pending {
    std::string function_id;
    int64_t timeout_ms = 0;
    std::optional<Deadlines::iterator> deadline;
    uint64_t executor = 0;
    uint64_t caller = 0;  // waiting worker; 0 if none (internal or void)
    std::string caller_invocation_id;
    Completion done;  // internal callers
    InvocationSpan span;
  };

  void handle(Worker& w, protocol::RegisterFunction&& m);
  void handle(Worker& w, protocol::UnregisterFunction&& m);
  void handle(Worker& w, protocol::InvokeFunction&& m);
  void handle(Worker& w, protocol::InvocationResult&& m);
  void handle(Worker& w, protocol::RegisterService&& m);
  void handle(Worker& w, protocol::RegisterTriggerType&& m);
  void handle(Worker& w, protocol::UnregisterTriggerType&& m);
  void handle(Worker& w, protocol::RegisterTrigger&& m);
  void handle(Worker& w, protocol::UnregisterTrigger&& m);
  void handle(Worker& w, protocol::Reattach&& m);
  void refuse_trigger_change(Worker& w, const protocol::RegisterTrigger& m,
                             const Trigger& existing);
  void bind_trigger(Trigger& t);
  void unbind_trigger(Trigger& t);
  void remove_worker_triggers(uint64_t handle);
  void drop_type_registrant(const std::string& type_id, uint64_t handle);
  void rebind_type(const std::string& type_id);
  void note_function_set_change();
  void handle_decode_error(Worker& w, const protocol::DecodeError& e);
  void process_frame(Worker& w, std::string_view frame);
  void announce(Worker& w);  // workerregistered + worker_connected

  // ---- RBAC (rbac_gate.cc): what a listener's policy does before the handlers above ----
  void start_auth(Worker& w);
  void finish_auth(uint64_t handle, Outcome o);
  void reject(Worker& w, std::string_view code, const std::string& message);
  void pause(Worker& w) { w.paused = true; }
  void resume(uint64_t handle);  // processes the backlog (deferred)
  bool over_registration_limit(Worker& w, std::string_view what);
  void admit(Worker& w, protocol::RegisterFunction&& m);
  void admit(Worker& w, protocol::UnregisterFunction&& m);
  void admit(Worker& w, protocol::RegisterTriggerType&& m);
  void admit(Worker& w, protocol::RegisterTrigger&& m);
  // True when the invocation was answered here (refused, rate-limited, or sent to middleware).
  bool gate_invoke(Worker& w, protocol::InvokeFunction& m);

  // Core routing: sends to a worker or runs a built-in. `reply` receives the outcome.
  void route(const std::string& function_id, boost::json::value data, CallContext ctx,
             std::optional<std::string> preferred_id, uint64_t caller, std::string caller_inv_id,
             Completion done);
  void complete(const protocol::Uuid& key, Outcome outcome);
  void add_deadline(const protocol::Uuid& key, Pending& p, int64_t timeout_ms);
  void reply_to_worker(uint64_t caller, std::string_view invocation_id,
                       std::string_view function_id, const Outcome& outcome);

  std::unordered_map<uint64_t, Worker> workers_;
  std::unordered_map<protocol::Uuid, Pending, protocol::UuidHash> pending_;
  Deadlines deadlines_;  // earliest first; erased when the invocation completes
  std::optional<Clock::time_point> timer_armed_for_;
  TimerArm arm_timer_;
  std::chrono::milliseconds invocation_timeout_{300000};
  int cork_depth_ = 0;
  std::vector<uint64_t> corked_;  // workers whose connection is held until uncork()
  bool invocation_timeout_configured_ = false;
  FunctionRegistry functions_;
  ChannelRegistry channels_;
  std::vector<BuiltinWorkerInfo> builtin_workers_;
  std::map<std::string, Trigger> triggers_;
  std::map<std::string, TriggerType> trigger_types_;
  std::unordered_map<std::string, std::vector<std::string>> bound_by_type_;  // built-in types
  std::map<std::string, Service> services_;
  std::vector<std::function<void()>> functions_observers_;
  Deferrer defer_;
  std::map<protocol::ActionType, ActionHandler> action_handlers_;
  InvocationRegistrar invocation_registrar_;
  uint64_t notified_generation_ = 0;
  bool functions_notify_scheduled_ = false;
  std::vector<WorkerEventFn> worker_observers_;
  uint64_t next_handle_ = 1;
  int64_t started_at_ms_ = 0;
  bool shutting_down_ = false;
  bool refusing_ = false;
  EngineStats stats_;
  TelemetrySink telemetry_sink_;
  InvocationObserver* observer_ = nullptr;
};

}  // namespace iii::engine
