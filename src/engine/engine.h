// The engine core: worker connections, the function registry and invocation routing.
// Single-threaded by design: every method runs on the engine's I/O thread (see
// docs/architecture.md), so no locks guard this state.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/connection.h"
#include "engine/function_registry.h"
#include "engine/uuid.h"
#include "protocol/messages.h"

namespace iii::engine {

namespace json = boost::json;
using protocol::ErrorBody;

// What an invocation produced: a result (possibly absent), or an error.
struct Outcome {
  std::optional<json::value> result;
  std::optional<ErrorBody> error;
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;

  static Outcome ok(json::value v) { return Outcome{std::move(v), std::nullopt, {}, {}}; }
  static Outcome empty() { return Outcome{}; }
  static Outcome fail(std::string code, std::string message) {
    return Outcome{std::nullopt, ErrorBody{std::move(code), std::move(message), std::nullopt}, {}, {}};
  }
};

// Called exactly once with the outcome; an empty Completion discards it.
using Completion = std::function<void(Outcome)>;

struct CallContext {
  uint64_t caller = 0;           // worker handle of the caller; 0 for internal calls
  std::string caller_worker_id;  // its UUID; empty for internal calls
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
};

using BuiltinHandler = std::function<void(const CallContext&, json::value input, Completion done)>;

struct BuiltinFunction {
  BuiltinHandler handler;
};

// A connected worker (one WebSocket connection on `/`).
struct Worker {
  uint64_t handle = 0;
  Uuid uuid;
  std::string id;  // uuid.str()
  std::shared_ptr<Connection> conn;
  ConnectionInfo info;
  int64_t connected_at_ms = 0;
  // Metadata from engine::workers::register.
  std::optional<std::string> name, runtime, version, os, isolation;
  std::optional<int64_t> pid;
  json::value telemetry;
  std::vector<std::string> functions;       // ids this connection registered (insertion order)
  std::unordered_set<Uuid, UuidHash> executing;  // invocations it must answer
  std::unordered_set<Uuid, UuidHash> waiting;    // invocations it initiated and waits on
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
};

class Engine {
 public:
  Engine();
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- transport side (src/net) ----
  // Registers a new connection and sends it `workerregistered`. Returns its handle.
  uint64_t connect(std::shared_ptr<Connection> conn, ConnectionInfo info);
  // One protocol frame (text, or binary that is not telemetry).
  void on_frame(uint64_t worker, std::string_view frame);
  // A telemetry frame (OTLP/MTRC/LOGS prefix) from `/` or `/otel`.
  void on_telemetry(std::string_view frame);
  // The connection is gone: run the full cleanup (engine-core.md §1.6).
  void disconnect(uint64_t worker);

  // ---- in-process workers ----
  void add_builtin_worker(BuiltinWorkerInfo info);
  // Registers a built-in function owned by `owner` (an instance name).
  void register_builtin(FunctionInfo info, const std::string& owner, BuiltinHandler handler);
  // Invokes a function from inside the engine (or on behalf of a caller in `ctx`).
  void invoke(const std::string& function_id, json::value data, CallContext ctx, Completion done);

  // Graceful shutdown: every pending invocation is answered `invocation_stopped`, every
  // connection is closed with 1001. Idempotent.
  void shutdown();
  bool shutting_down() const { return shutting_down_; }

  // ---- introspection ----
  json::object list_functions(bool include_internal) const;
  json::object list_workers(const std::optional<std::string>& worker_id) const;
  Worker* find_worker(uint64_t handle);
  Worker* find_worker_by_id(std::string_view id);
  const FunctionRegistry& functions() const { return functions_; }
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
  struct Pending {
    std::string function_id;
    uint64_t executor = 0;
    uint64_t caller = 0;  // waiting worker; 0 if none (internal or void)
    std::string caller_invocation_id;
    Completion done;  // internal callers
  };

  void handle(Worker& w, protocol::RegisterFunction&& m);
  void handle(Worker& w, protocol::UnregisterFunction&& m);
  void handle(Worker& w, protocol::InvokeFunction&& m);
  void handle(Worker& w, protocol::InvocationResult&& m);
  void handle(Worker& w, protocol::RegisterService&& m);
  void handle_decode_error(Worker& w, const protocol::DecodeError& e);

  // Core routing: sends to a worker or runs a built-in. `reply` receives the outcome.
  void route(const std::string& function_id, json::value data, CallContext ctx,
             std::optional<std::string> preferred_id, uint64_t caller, std::string caller_inv_id,
             Completion done);
  void complete(const Uuid& key, Outcome outcome);
  void reply_to_worker(uint64_t caller, std::string_view invocation_id,
                       std::string_view function_id, const Outcome& outcome);

  std::unordered_map<uint64_t, Worker> workers_;
  std::unordered_map<Uuid, Pending, UuidHash> pending_;
  FunctionRegistry functions_;
  std::vector<BuiltinWorkerInfo> builtin_workers_;
  std::unordered_map<std::string, protocol::RegisterService> services_;
  std::vector<WorkerEventFn> worker_observers_;
  uint64_t next_handle_ = 1;
  int64_t started_at_ms_ = 0;
  bool shutting_down_ = false;
  EngineStats stats_;
};

}  // namespace iii::engine
