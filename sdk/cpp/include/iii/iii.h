// First-party C++ SDK for iii workers (mirrors the Node/Python `registerWorker` API).
//
//   auto iii = iii::register_worker("ws://127.0.0.1:49134", {.worker_name = "orders"});
//   iii->register_function("orders::echo",
//                          [](const boost::json::value& in) -> iii::Result { return in; });
//   auto out = iii->trigger({.function_id = "orders::echo", .payload = {{"a", 1}}});
//
// Every client owns one I/O thread (one io_context) that runs the WebSocket, timers, async
// handlers and trigger_async callbacks. Synchronous handlers run on a small private thread
// pool so that they may block (e.g. call trigger() themselves).
//
// This header deliberately does not include Asio/Beast (pimpl) to keep user builds fast.
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace iii {

namespace detail {
class Client;
struct ReplyState;
struct ChannelSocket;
}  // namespace detail

// A function result. An empty optional means "no result": the `result` field is omitted on
// the wire, which callers observe as undefined/None, unlike an explicit JSON null.
using Result = std::optional<boost::json::value>;

enum class LogLevel { kDebug, kInfo, kWarn, kError };
using LogFn = std::function<void(LogLevel level, const std::string& message)>;

struct ReconnectOptions {
  bool enabled = true;
  int initial_delay_ms = 1000;
  double backoff_multiplier = 2.0;
  int max_delay_ms = 30000;
  double jitter = 0.3;   // +-30 % like the Node SDK
  int max_retries = -1;  // -1 = retry forever
};

struct InitOptions {
  std::string worker_name;  // default "<hostname>:<pid>"
  int invocation_timeout_ms = 30000;
  int connect_timeout_ms = 10000;  // TCP connect + WebSocket upgrade
  ReconnectOptions reconnect;
  std::map<std::string, std::string> headers;  // extra HTTP headers on the upgrade request
  // Send the `engine::workers::register` metadata call after every (re)connect.
  bool send_worker_metadata = true;
  // Threads that run synchronous handlers (created on first use).
  int handler_threads = 4;
  // Receives SDK diagnostics. Default: warnings and errors go to stderr.
  LogFn log;
};

struct FunctionOptions {
  std::optional<std::string> description;
  std::optional<boost::json::value> request_format;
  std::optional<boost::json::value> response_format;
  std::optional<boost::json::value> metadata;
};

// Error raised by trigger(): either the engine/remote handler's ErrorBody or a local one
// (`TIMEOUT`, `SHUTDOWN`, `DISCONNECTED`). what() is "<code>: <message>" like the Node SDK.
class InvocationError : public std::runtime_error {
 public:
  InvocationError(std::string code, std::string message,
                  std::optional<std::string> stacktrace = std::nullopt,
                  std::string function_id = {});

  std::string code;
  std::string message;
  std::optional<std::string> stacktrace;
  std::string function_id;
};

// Completion handle given to async handlers. Call ok() or fail() exactly once, from any
// thread; later calls are ignored. For fire-and-forget invocations nothing is sent.
class Responder {
 public:
  void ok(Result result = std::nullopt) const;
  void fail(std::string message, std::string code = "invocation_failed",
            std::optional<std::string> stacktrace = std::nullopt) const;
  const std::string& function_id() const;
  // False for void invocations (no invocation_id: the engine expects no reply).
  bool expects_reply() const;

 private:
  friend class detail::Client;
  explicit Responder(std::shared_ptr<detail::ReplyState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::ReplyState> state_;
};

// Runs on a handler-pool thread. Throwing std::exception yields error `invocation_failed`
// with what() as the message.
using Handler = std::function<Result(const boost::json::value& payload)>;
// Runs on the SDK I/O thread: must not block. Completes through the Responder.
using AsyncHandler = std::function<void(const boost::json::value& payload, Responder reply)>;

struct TriggerAction {
  enum class Type { kNone, kVoid, kEnqueue };
  Type type = Type::kNone;
  std::string queue;  // kEnqueue only

  static TriggerAction None() { return {}; }
  static TriggerAction Void() { return {Type::kVoid, {}}; }
  static TriggerAction Enqueue(std::string queue) { return {Type::kEnqueue, std::move(queue)}; }
};

struct TriggerRequest {
  std::string function_id;
  boost::json::value payload;  // null when not set
  TriggerAction action;
  std::optional<int> timeout_ms;  // default: InitOptions::invocation_timeout_ms
};

struct TriggerOutcome {
  Result result;
  std::optional<InvocationError> error;
  bool ok() const { return !error.has_value(); }
};
using TriggerCallback = std::function<void(TriggerOutcome outcome)>;

class FunctionRef {
 public:
  FunctionRef() = default;
  const std::string& id() const { return id_; }
  // Removes the local handler and tells the engine (if connected).
  void unregister();

 private:
  friend class III;
  FunctionRef(std::weak_ptr<detail::Client> c, std::string id)
      : client_(std::move(c)), id_(std::move(id)) {}
  std::weak_ptr<detail::Client> client_;
  std::string id_;
};

// A service (engine-core.md: `registerservice`): a named group the engine lists.
struct ServiceInfo {
  std::string id;
  std::string name;  // empty: the engine uses the id
  std::optional<std::string> description;
  std::optional<std::string> parent_service_id;
};

struct TriggerConfig {
  std::string type;  // trigger type id, e.g. "subscribe", "http", "cron"
  std::string function_id;
  boost::json::value config;
  std::optional<boost::json::value> metadata;
};

class TriggerRef {
 public:
  TriggerRef() = default;
  const std::string& id() const { return id_; }
  void unregister();

 private:
  friend class III;
  TriggerRef(std::weak_ptr<detail::Client> c, std::string id)
      : client_(std::move(c)), id_(std::move(id)) {}
  std::weak_ptr<detail::Client> client_;
  std::string id_;
};

// ---- Channels: streams of binary and text messages between two workers through the engine
// (`/ws/channels/{id}`), like the Node/Python SDKs' createChannel / ChannelWriter /
// ChannelReader. Each end is a blocking object with its own socket; use it from one thread.

// One end's access reference, as engine::channels::create returns it and as it travels inside
// payloads (a worker receiving one opens the matching end with ChannelWriter/ChannelReader).
struct ChannelRef {
  std::string channel_id;
  std::string access_key;
  std::string direction;  // "write" or "read"

  boost::json::value to_json() const;
  // Nullopt unless `v` has string channel_id and access_key and direction "write" or "read".
  static std::optional<ChannelRef> from_json(const boost::json::value& v);
};

struct ChannelMessage {
  bool binary = true;
  std::string data;
};

// The writing end. Connects on the first call. Throws std::runtime_error when the channel
// cannot be reached or the engine has closed it (e.g. because its reader left, or it refused a
// frame); a write notices the engine's Close within about 1 MiB. Once a call has thrown, every
// later call throws the same error.
class ChannelWriter {
 public:
  // `engine_url` is the worker endpoint (e.g. "ws://127.0.0.1:49134").
  ChannelWriter(std::string engine_url, ChannelRef ref);
  ~ChannelWriter();  // drops the connection if end()/close() was not called
  ChannelWriter(ChannelWriter&&) noexcept;
  ChannelWriter& operator=(ChannelWriter&&) noexcept;

  // Binary data, sent as messages of at most 64 KiB each (as the Node and Python SDKs do).
  void write(std::string_view bytes);
  // One text message.
  void send_message(std::string_view text);
  // No more data: closes with 1000 "stream_complete" (what ending the Node stream sends).
  // Returns once the engine has answered, which it does after taking everything written
  // before: while the channel's buffer is full that waits for the reader, so read from
  // another thread or process. Throws if the engine had closed the channel first.
  void end();
  // Closes with 1000 "channel_close" (the SDKs' writer.close()); waits like end().
  void close();
  const ChannelRef& ref() const;

 private:
  std::unique_ptr<detail::ChannelSocket> s_;
};

// The reading end. Connects on the first read; the engine keeps what was written before.
class ChannelReader {
 public:
  ChannelReader(std::string engine_url, ChannelRef ref);
  ~ChannelReader();
  ChannelReader(ChannelReader&&) noexcept;
  ChannelReader& operator=(ChannelReader&&) noexcept;

  // The next message, or nullopt once the writer is done and everything was read. Throws
  // std::runtime_error when the stream was cut short (the writer broke off, the engine stopped),
  // and again on every later call.
  std::optional<ChannelMessage> next();
  // The same without a copy: `data` stays valid until the next call of next() or close().
  // False at the end.
  bool next(bool* binary, std::string_view* data);
  // All binary data until the end; text messages go to `on_text` when given.
  std::string read_all(const std::function<void(std::string_view)>& on_text = {});
  // Leaves the channel before its end: closes with 1000, drops what is still on its way, and
  // returns once the engine has answered (or the connection is gone). The writer is told.
  void close();
  const ChannelRef& ref() const;

 private:
  std::unique_ptr<detail::ChannelSocket> s_;
};

struct Channel {
  ChannelWriter writer;
  ChannelReader reader;
  ChannelRef writer_ref;
  ChannelRef reader_ref;
};

class III {
 public:
  ~III();  // shutdown()
  III(const III&) = delete;
  III& operator=(const III&) = delete;

  // Registers (or replaces) a local function. Throws std::invalid_argument on an empty id
  // or an id that is already registered on this client.
  FunctionRef register_function(std::string id, Handler handler, FunctionOptions opts = {});
  FunctionRef register_function(std::string id, AsyncHandler handler, FunctionOptions opts = {});

  // Binds a trigger to a function; re-sent on every reconnect.
  TriggerRef register_trigger(TriggerConfig trigger);

  // Registers a service; re-sent (before the functions) on every reconnect. Throws
  // std::invalid_argument on an empty id.
  void register_service(ServiceInfo service);

  // Blocking call. Returns the result (empty if the engine omitted it; always empty for void
  // calls) or throws InvocationError. Must not be called on the SDK I/O thread (i.e. from an
  // async handler or a trigger_async callback): throws std::logic_error there.
  Result trigger(const TriggerRequest& request);
  // Non-blocking call. The payload is serialised before this returns, so `request` may be
  // reused. The callback runs on the SDK I/O thread (immediately for void calls).
  void trigger_async(const TriggerRequest& request, TriggerCallback callback);

  // Creates a channel (engine::channels::create; buffer_size in messages, engine default 64).
  // Throws InvocationError like trigger().
  Channel create_channel(std::optional<int64_t> buffer_size = std::nullopt);
  // Opens an end from a reference received in a payload.
  ChannelWriter channel_writer(ChannelRef ref) const { return ChannelWriter(url_, std::move(ref)); }
  ChannelReader channel_reader(ChannelRef ref) const { return ChannelReader(url_, std::move(ref)); }

  // Waits until the socket is open and the engine's `workerregistered` arrived. Returns false
  // on timeout, after shutdown(), or once reconnecting has given up.
  bool wait_connected(std::chrono::milliseconds timeout);
  bool is_connected() const;
  // Empty until `workerregistered` arrives on the current connection.
  std::string worker_id() const;
  // Last connection error (empty if none), for diagnostics.
  std::string last_error() const;
  const std::string& url() const { return url_; }

  // Closes the connection, fails in-flight calls with `SHUTDOWN`, stops the I/O thread.
  // Idempotent. Do not call it from inside a handler or callback.
  void shutdown();

 private:
  friend std::shared_ptr<III> register_worker(std::string url, InitOptions opts);
  III(std::shared_ptr<detail::Client> client, std::string url)
      : client_(std::move(client)), url_(std::move(url)) {}

  std::shared_ptr<detail::Client> client_;
  std::string url_;
};

// Creates a client and starts connecting immediately (does not wait; see wait_connected()).
// `url` is the engine's worker endpoint, e.g. "ws://127.0.0.1:49134". Throws
// std::invalid_argument for an unusable URL (only ws:// is supported).
std::shared_ptr<III> register_worker(std::string url, InitOptions opts = {});

// The SDK version reported in the worker metadata.
const char* sdk_version();

}  // namespace iii
