// Typed worker-protocol messages (engine-core.md §1.3). Pure data: no I/O, no Beast.
#pragma once

#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <variant>

namespace iii::protocol {

struct ErrorBody {
  std::string code;
  std::string message;
  std::optional<std::string> stacktrace;
};

enum class ActionType { kNone, kVoid, kEnqueue };

struct Action {
  ActionType type = ActionType::kNone;
  std::string queue;  // only for kEnqueue
};

struct RegisterFunction {
  std::string id;
  std::optional<std::string> description;
  std::optional<boost::json::value> request_format;
  std::optional<boost::json::value> response_format;
  std::optional<boost::json::value> metadata;
  std::optional<boost::json::value> invocation;  // HTTP-invoked function config
};

struct UnregisterFunction {
  std::string id;
};

struct InvokeFunction {
  std::optional<std::string> invocation_id;  // as sent (validated UUID); echoed back verbatim
  std::string function_id;
  boost::json::value data;  // absent data decodes as null
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
  Action action;
  // Newer SDKs (0.12+) send caller metadata; forwarded to the executor as sent.
  std::optional<boost::json::value> metadata;
};

struct InvocationResult {
  std::string invocation_id;
  std::string function_id;
  std::optional<boost::json::value> result;  // absent stays absent; null stays null
  std::optional<ErrorBody> error;
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
};

struct RegisterTriggerType {
  std::string id;
  std::string description;
  std::optional<boost::json::value> trigger_request_format;
  std::optional<boost::json::value> call_request_format;
};

struct UnregisterTriggerType {
  std::string id;
};

struct RegisterTrigger {
  std::string id;
  std::string trigger_type;
  std::string function_id;
  boost::json::value config;
  std::optional<boost::json::value> metadata;
};

struct UnregisterTrigger {
  std::string id;
  std::optional<std::string> trigger_type;
};

struct TriggerRegistrationResult {
  std::string id;
  std::string trigger_type;
  std::string function_id;
  std::optional<ErrorBody> error;
};

struct RegisterService {
  std::string id;
  std::string name;
  std::optional<std::string> description;
  std::optional<std::string> parent_service_id;
};

struct Ping {};
struct Pong {};
struct WorkerRegistered {
  std::string worker_id;
  std::optional<std::string> reattach_token;
};

// Newer SDKs (0.12+), first frame after a reconnect: "I was `previous_worker_id`". With the
// token the engine handed that connection in `workerregistered`, the new connection takes over
// the old one's registrations and invocations and the old connection is retired.
struct Reattach {
  std::string previous_worker_id;
  std::optional<std::string> reattach_token;
};

using Message = std::variant<RegisterFunction, UnregisterFunction, InvokeFunction, InvocationResult,
                             RegisterTriggerType, UnregisterTriggerType, RegisterTrigger,
                             UnregisterTrigger, TriggerRegistrationResult, RegisterService, Ping,
                             Pong, WorkerRegistered, Reattach>;

// A frame that could not be decoded. `invocation_id`/`function_id` are filled in when the
// frame was an invokefunction whose id could still be read, so the caller can get an error.
struct DecodeError {
  std::string reason;
  std::string type;  // the `type` field if present
  std::optional<std::string> invocation_id;
  std::optional<std::string> function_id;
};

}  // namespace iii::protocol
