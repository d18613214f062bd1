// The SDK client: one Beast WebSocket per connection, driven by a private io_context thread.
//
// Threading model: everything that touches the socket, the pending-call table or timers runs
// on the I/O thread. Public entry points may be called from any thread; they do the costly
// part (JSON serialisation) on the caller's thread and then dispatch() onto the I/O thread,
// which runs inline when already there (so a trigger_async callback that issues the next call
// costs no thread hop). Completion handlers capture a raw `this`: they only ever run inside
// io_context::run(), which always finishes before the Client is destroyed.
#include <algorithm>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "iii/iii.h"
#include "protocol/codec.h"
#include "support.h"

namespace iii {
namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using std::chrono::milliseconds;

struct ReplyState {
  std::weak_ptr<Client> client;
  std::optional<std::string> invocation_id;  // empty for void invocations
  std::string function_id;
  std::optional<std::string> traceparent;
  std::optional<std::string> baggage;
  std::atomic<bool> done{false};
};

namespace {

enum class FrameKind {
  kRegistration,  // replayed from the registry on reconnect, so never queued
  kQueueable,     // invokes and results: kept while disconnected (like the Node SDK)
  kTransient,     // pong, unregister, metadata: pointless on a later connection
};

struct Frame {
  std::string text;
  FrameKind kind;
  std::string invocation_id;  // set for our own calls so stale ones can be skipped
};

// A concrete executor instead of any_io_executor: the type-erased one costs a few percent
// of CPU per message in copies and virtual calls.
using TcpStream = beast::basic_stream<tcp, asio::io_context::executor_type>;

struct Conn {
  Conn(asio::io_context& ioc, uint64_t g) : ws(ioc.get_executor()), gen(g) {}
  websocket::stream<TcpStream> ws;
  beast::flat_buffer buf;
  std::deque<Frame> wq;  // front() is being written while `writing`
  uint64_t gen;
  bool writing = false;
  bool open = false;
};

enum class State { kConnecting, kOpen, kBackoff, kFailed, kShutdown };

// Per-thread marker so shutdown() can tell it is running on one of its own pool threads.
thread_local const void* tl_pool_owner = nullptr;

void default_log(LogLevel level, const std::string& msg) {
  static const bool verbose = [] {
    const char* v = std::getenv("III_SDK_LOG");
    return v && (std::string_view(v) == "debug" || std::string_view(v) == "info");
  }();
  if (level < LogLevel::kWarn && !verbose) return;
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  std::fprintf(stderr, "[iii-sdk] %s: %s\n", kNames[static_cast<int>(level)], msg.c_str());
}

}  // namespace

struct FunctionEntry {
  std::string id;
  Handler sync;
  AsyncHandler async;
  std::string frame;      // the registerfunction frame
  uint64_t sent_gen = 0;  // connection that last received it (I/O thread only)
};

struct TriggerEntry {
  std::string id;
  std::string type;
  std::string frame;
  uint64_t sent_gen = 0;
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  Client(std::string url_text, WsUrl url, InitOptions opts)
      : url_text_(std::move(url_text)),
        url_(std::move(url)),
        opts_(std::move(opts)),
        work_(asio::make_work_guard(ioc_)),
        resolver_(ioc_),
        reconnect_timer_(ioc_) {
    if (!opts_.log) opts_.log = default_log;
    if (opts_.worker_name.empty()) opts_.worker_name = default_worker_name();
    metadata_frame_ =
        encode_invoke_frame(std::nullopt, "engine::workers::register",
                            worker_metadata(opts_.worker_name), TriggerAction::Void());
  }

  ~Client() { shutdown(); }

  void start() {
    thread_ = std::thread([this] { run_io(); });
    asio::post(ioc_, [this] { connect(); });
  }

  // ---- registry (any thread) -------------------------------------------------------------

  void add_function(std::shared_ptr<FunctionEntry> fn) {
    {
      std::lock_guard lk(reg_mu_);
      if (fn_index_.count(fn->id))
        throw std::invalid_argument("function '" + fn->id + "' is already registered");
      fn_index_.emplace(fn->id, fn);
      functions_.push_back(fn);
    }
    run_on_io([this, fn] {
      // Skip if the (re)connect replay already sent it, or it was removed meanwhile.
      if (!conn_ || !conn_->open || fn->sent_gen == conn_->gen || !is_registered(fn)) return;
      fn->sent_gen = conn_->gen;
      send_frame({fn->frame, FrameKind::kRegistration, {}});
    });
  }

  void remove_function(const std::string& id) {
    std::shared_ptr<FunctionEntry> fn;
    {
      std::lock_guard lk(reg_mu_);
      auto it = fn_index_.find(id);
      if (it == fn_index_.end()) return;
      fn = it->second;
      fn_index_.erase(it);
      functions_.erase(std::find(functions_.begin(), functions_.end(), fn));
    }
    run_on_io([this, fn] {
      // Only an engine that saw the registration needs to hear about the removal.
      if (conn_ && conn_->open && fn->sent_gen == conn_->gen)
        send_frame({encode_unregister_function(fn->id), FrameKind::kTransient, {}});
    });
  }

  void add_trigger(std::shared_ptr<TriggerEntry> t) {
    {
      std::lock_guard lk(reg_mu_);
      triggers_.push_back(t);
    }
    run_on_io([this, t] {
      if (!conn_ || !conn_->open || t->sent_gen == conn_->gen) return;
      {
        std::lock_guard lk(reg_mu_);
        if (std::find(triggers_.begin(), triggers_.end(), t) == triggers_.end()) return;
      }
      t->sent_gen = conn_->gen;
      send_frame({t->frame, FrameKind::kRegistration, {}});
    });
  }

  void add_service(std::shared_ptr<TriggerEntry> svc) {
    {
      std::lock_guard lk(reg_mu_);
      services_.push_back(svc);
    }
    run_on_io([this, svc] {
      if (!conn_ || !conn_->open || svc->sent_gen == conn_->gen) return;
      svc->sent_gen = conn_->gen;
      send_frame({svc->frame, FrameKind::kRegistration, {}});
    });
  }

  void remove_trigger(const std::string& id) {
    std::shared_ptr<TriggerEntry> t;
    {
      std::lock_guard lk(reg_mu_);
      auto it = std::find_if(triggers_.begin(), triggers_.end(),
                             [&](const auto& e) { return e->id == id; });
      if (it == triggers_.end()) return;
      t = *it;
      triggers_.erase(it);
    }
    run_on_io([this, t] {
      if (conn_ && conn_->open && t->sent_gen == conn_->gen)
        send_frame({encode_unregister_trigger(t->id, t->type), FrameKind::kTransient, {}});
    });
  }

  // ---- calls -----------------------------------------------------------------------------

  void trigger_async(const TriggerRequest& req, TriggerCallback cb) {
    if (!cb) cb = [](TriggerOutcome) {};
    const bool is_void = req.action.type == TriggerAction::Type::kVoid;
    std::optional<std::string> id;
    if (!is_void) id = make_uuid_v4();
    std::string frame = encode_invoke_frame(id, req.function_id, req.payload, req.action);
    const int timeout_ms = req.timeout_ms.value_or(opts_.invocation_timeout_ms);
    if (stopping_.load()) {
      // The I/O thread may already be gone; answer here rather than never.
      complete(cb, local_error("SHUTDOWN", "iii is shutting down", req.function_id));
      return;
    }
    run_on_io([this, id = std::move(id), fid = req.function_id, frame = std::move(frame),
               cb = std::move(cb), timeout_ms]() mutable {
      start_call(std::move(id), std::move(fid), std::move(frame), std::move(cb), timeout_ms);
    });
  }

  Result trigger(const TriggerRequest& req) {
    if (ioc_.get_executor().running_in_this_thread())
      throw std::logic_error(
          "iii: blocking trigger() called on the SDK I/O thread (from an async handler or a "
          "trigger_async callback) would deadlock; use trigger_async()");
    auto prom = std::make_shared<std::promise<TriggerOutcome>>();
    auto fut = prom->get_future();
    trigger_async(req, [prom](TriggerOutcome o) { prom->set_value(std::move(o)); });
    const int timeout_ms = req.timeout_ms.value_or(opts_.invocation_timeout_ms);
    // The I/O thread enforces the timeout; the extra grace only guards against a client that
    // was shut down between the enqueue and the I/O thread picking the call up.
    if (fut.wait_for(milliseconds(timeout_ms) + std::chrono::seconds(2)) !=
        std::future_status::ready)
      throw timeout_error(timeout_ms, req.function_id);
    TriggerOutcome o = fut.get();
    if (o.error) throw *o.error;
    return std::move(o.result);
  }

  // Called by Responder from any thread. Serialises here, writes on the I/O thread.
  void send_reply(const ReplyState& r, const Result& result,
                  const std::optional<protocol::ErrorBody>& error) {
    std::string frame =
        error ? encode_result_frame(*r.invocation_id, r.function_id, std::nullopt, error->code,
                                    error->message, error->stacktrace, r.traceparent, r.baggage)
              : encode_result_frame(*r.invocation_id, r.function_id, result, std::nullopt, {},
                                    std::nullopt, r.traceparent, r.baggage);
    run_on_io([this, frame = std::move(frame)]() mutable {
      send_frame({std::move(frame), FrameKind::kQueueable, {}});
    });
  }

  // ---- state -----------------------------------------------------------------------------

  bool wait_connected(milliseconds timeout) {
    std::unique_lock lk(state_mu_);
    state_cv_.wait_for(lk, timeout, [&] {
      return (state_ == State::kOpen && registered_) || state_ == State::kFailed ||
             state_ == State::kShutdown;
    });
    return state_ == State::kOpen && registered_;
  }

  bool is_connected() const {
    std::lock_guard lk(state_mu_);
    return state_ == State::kOpen;
  }

  std::string worker_id() const {
    std::lock_guard lk(state_mu_);
    return worker_id_;
  }

  std::string last_error() const {
    std::lock_guard lk(state_mu_);
    return last_error_;
  }

  void log(LogLevel level, const std::string& msg) const {
    try {
      opts_.log(level, msg);
    } catch (...) {
    }
  }

  void shutdown() {
    if (stopping_.exchange(true)) return;
    const bool on_io = ioc_.get_executor().running_in_this_thread();
    if (thread_.joinable()) {
      run_on_io([this] { shutdown_on_io(); });
      if (on_io) {
        // Cannot join ourselves: keep the Client alive until run() returns, then let the
        // I/O thread drop the last reference.
        std::lock_guard lk(state_mu_);
        keepalive_ = shared_from_this();
        thread_.detach();
      } else {
        std::unique_lock lk(state_mu_);
        if (!state_cv_.wait_for(lk, std::chrono::seconds(3), [&] { return io_done_; })) {
          lk.unlock();
          ioc_.stop();  // a close that does not finish must not hang the caller
        }
        if (lk.owns_lock()) lk.unlock();
        thread_.join();
      }
    }
    if (pool_) {
      pool_->stop();
      if (tl_pool_owner == this || on_io) {
        // Joining from inside the pool (or with the pool possibly still posting to us) would
        // deadlock; the stopped pool's threads exit on their own.
        (void)pool_.release();
      } else {
        pool_->join();
      }
    }
    std::lock_guard lk(state_mu_);
    state_ = State::kShutdown;
    state_cv_.notify_all();
  }

 private:
  template <typename F>
  void run_on_io(F&& f) {
    asio::dispatch(ioc_, std::forward<F>(f));
  }

  bool is_registered(const std::shared_ptr<FunctionEntry>& fn) {
    std::lock_guard lk(reg_mu_);
    auto it = fn_index_.find(fn->id);
    return it != fn_index_.end() && it->second == fn;
  }

  std::shared_ptr<FunctionEntry> find_function(const std::string& id) {
    std::lock_guard lk(reg_mu_);
    auto it = fn_index_.find(id);
    return it == fn_index_.end() ? nullptr : it->second;
  }

  static TriggerOutcome local_error(std::string code, std::string message,
                                    const std::string& function_id) {
    TriggerOutcome o;
    o.error.emplace(std::move(code), std::move(message), std::nullopt, function_id);
    return o;
  }

  static InvocationError timeout_error(int timeout_ms, const std::string& function_id) {
    return InvocationError("TIMEOUT",
                           "invocation timed out after " + std::to_string(timeout_ms) + "ms",
                           std::nullopt, function_id);
  }

  void complete(const TriggerCallback& cb, TriggerOutcome o) {
    try {
      cb(std::move(o));
    } catch (const std::exception& e) {
      log(LogLevel::kError, std::string("trigger callback threw: ") + e.what());
    } catch (...) {
      log(LogLevel::kError, "trigger callback threw a non-std exception");
    }
  }

  void set_state(State s) {
    {
      std::lock_guard lk(state_mu_);
      if (state_ == State::kShutdown) return;
      state_ = s;
      if (s != State::kOpen) {
        registered_ = false;
        worker_id_.clear();
      }
    }
    state_cv_.notify_all();
  }

  void set_last_error(std::string msg) {
    std::lock_guard lk(state_mu_);
    last_error_ = std::move(msg);
  }

  void run_io() {
    for (;;) {
      try {
        ioc_.run();
        break;
      } catch (const std::exception& e) {
        log(LogLevel::kError,
            std::string("unhandled exception on the SDK I/O thread: ") + e.what());
      }
    }
    std::shared_ptr<Client> keep;
    {
      std::lock_guard lk(state_mu_);
      io_done_ = true;
      keep = std::move(keepalive_);
      state_cv_.notify_all();
    }
    // `keep` may be the last reference and destroy *this here; nothing is touched after.
  }

  // ---- connection lifecycle (I/O thread) -------------------------------------------------

  void connect() {
    if (stopping_) return;
    set_state(State::kConnecting);
    auto c = std::make_shared<Conn>(ioc_, ++gen_);
    conn_ = c;
    resolver_.async_resolve(
        url_.host, url_.port, [this, c](error_code ec, tcp::resolver::results_type results) {
          if (c != conn_) return;
          if (ec) return connect_failed(c, "cannot resolve '" + url_.host + "': " + ec.message());
          auto& tcp_layer = beast::get_lowest_layer(c->ws);
          tcp_layer.expires_after(milliseconds(opts_.connect_timeout_ms));
          tcp_layer.async_connect(results, [this, c](error_code ec, const tcp::endpoint&) {
            if (c != conn_) return;
            if (ec)
              return connect_failed(c, "cannot connect to " + url_text_ + ": " + ec.message());
            on_tcp_connected(c);
          });
        });
  }

  void on_tcp_connected(const std::shared_ptr<Conn>& c) {
    auto& tcp_layer = beast::get_lowest_layer(c->ws);
    error_code ignored;
    tcp_layer.socket().set_option(tcp::no_delay(true), ignored);
    tcp_layer.expires_never();  // the websocket layer applies its own timeouts from here on

    websocket::stream_base::timeout t{};
    t.handshake_timeout = milliseconds(opts_.connect_timeout_ms);
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    c->ws.set_option(t);
    auto headers = opts_.headers;
    c->ws.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, std::string("iii-sdk-cpp/") + sdk_version());
      for (const auto& [k, v] : headers) req.set(k, v);
    }));
    // One frame per message: the engine reassembles fragments anyway, and masking happens in
    // write_buffer_bytes chunks regardless.
    c->ws.auto_fragment(false);
    c->ws.write_buffer_bytes(64 * 1024);
    c->ws.read_message_max(100ull * 1024 * 1024);  // the Node `ws` default
    c->ws.async_handshake(url_.host_header, url_.target, [this, c](error_code ec) {
      if (c != conn_) return;
      if (ec)
        return connect_failed(c, "WebSocket upgrade to " + url_text_ + " failed: " + ec.message());
      on_open(c);
    });
  }

  void connect_failed(const std::shared_ptr<Conn>& c, std::string msg) {
    log(attempt_ == 0 ? LogLevel::kWarn : LogLevel::kDebug, msg);
    set_last_error(std::move(msg));
    conn_.reset();
    error_code ignored;
    beast::get_lowest_layer(c->ws).socket().close(ignored);
    schedule_reconnect();
  }

  void on_open(const std::shared_ptr<Conn>& c) {
    c->open = true;
    attempt_ = 0;
    set_state(State::kOpen);
    log(LogLevel::kInfo, "connected to " + url_text_);

    // Replay order as in the Node SDK: registrations, then queued frames, then metadata.
    std::vector<std::shared_ptr<FunctionEntry>> fns;
    std::vector<std::shared_ptr<TriggerEntry>> trs, svcs;
    {
      std::lock_guard lk(reg_mu_);
      fns = functions_;
      trs = triggers_;
      svcs = services_;
    }
    for (auto& svc : svcs) {
      svc->sent_gen = c->gen;
      send_frame({svc->frame, FrameKind::kRegistration, {}});
    }
    for (auto& fn : fns) {
      fn->sent_gen = c->gen;
      send_frame({fn->frame, FrameKind::kRegistration, {}});
    }
    for (auto& t : trs) {
      t->sent_gen = c->gen;
      send_frame({t->frame, FrameKind::kRegistration, {}});
    }
    std::deque<Frame> queued;
    queued.swap(offline_);
    for (auto& f : queued) {
      // Calls that already timed out locally are not worth sending.
      if (!f.invocation_id.empty() && !pending_.count(f.invocation_id)) continue;
      send_frame(std::move(f));
    }
    if (opts_.send_worker_metadata) send_frame({metadata_frame_, FrameKind::kTransient, {}});
    do_read(c);
  }

  void on_conn_error(const std::shared_ptr<Conn>& c, error_code ec, const char* what) {
    if (c != conn_) return;
    std::string msg;
    if (ec == websocket::error::closed) {
      msg = "connection closed by the engine";
      const auto& reason = c->ws.reason();
      if (reason.code != websocket::close_code::none) {
        msg += " (code " + std::to_string(reason.code);
        if (!reason.reason.empty())
          msg += ": " + std::string(reason.reason.data(), reason.reason.size());
        msg += ")";
      }
    } else {
      msg = std::string(what) + " failed: " + ec.message();
    }
    log(LogLevel::kWarn, "connection to " + url_text_ + " lost: " + msg);
    set_last_error(msg);
    teardown(c);
    schedule_reconnect();
  }

  void teardown(const std::shared_ptr<Conn>& c) {
    conn_.reset();
    c->open = false;
    // Frames never handed to the socket go back to the offline queue; the one being written
    // may have partly reached the engine, so it is treated as sent.
    const size_t first_unsent = c->writing ? 1 : 0;
    for (size_t i = first_unsent; i < c->wq.size(); ++i) {
      Frame& f = c->wq[i];
      if (f.kind != FrameKind::kQueueable) continue;
      if (!f.invocation_id.empty()) {
        auto it = pending_.find(f.invocation_id);
        if (it == pending_.end()) continue;
        it->second.sent_gen = 0;
      }
      offline_.push_back(std::move(f));
    }
    // The in-flight frame stays: the aborted write may still reference its buffer.
    c->wq.erase(c->wq.begin() + first_unsent, c->wq.end());
    error_code ignored;
    beast::get_lowest_layer(c->ws).socket().close(ignored);
    // Results for calls sent on this connection would be routed to it by the engine, so they
    // can never arrive: fail them now instead of letting them run into the timeout.
    fail_pending_if([&](const Pending& p) { return p.sent_gen == c->gen; }, "DISCONNECTED",
                    "connection to the engine was lost before the result arrived");
  }

  void schedule_reconnect() {
    if (stopping_) return;
    const ReconnectOptions& rc = opts_.reconnect;
    if (!rc.enabled || (rc.max_retries >= 0 && attempt_ >= rc.max_retries)) {
      enter_failed();
      return;
    }
    double delay = std::max(0, rc.initial_delay_ms);
    for (int i = 0; i < attempt_ && delay < rc.max_delay_ms; ++i) delay *= rc.backoff_multiplier;
    delay = std::min(delay, static_cast<double>(rc.max_delay_ms));
    if (rc.jitter > 0) {
      std::uniform_real_distribution<double> dist(-rc.jitter, rc.jitter);
      delay *= 1.0 + dist(rng_);
    }
    ++attempt_;
    set_state(State::kBackoff);
    const auto ms = milliseconds(static_cast<int64_t>(std::max(0.0, delay)));
    log(LogLevel::kInfo, "reconnecting to " + url_text_ + " in " + std::to_string(ms.count()) +
                             "ms (attempt " + std::to_string(attempt_) + ")");
    reconnect_timer_.expires_after(ms);
    reconnect_timer_.async_wait([this](error_code ec) {
      if (ec || stopping_) return;
      connect();
    });
  }

  void enter_failed() {
    if (opts_.reconnect.enabled) log(LogLevel::kError, "giving up reconnecting to " + url_text_);
    set_state(State::kFailed);
    offline_.clear();
    fail_pending_if([](const Pending&) { return true; }, "DISCONNECTED",
                    "not connected to the engine at " + url_text_);
  }

  void shutdown_on_io() {
    {
      std::lock_guard lk(state_mu_);
      state_ = State::kShutdown;
      registered_ = false;
    }
    state_cv_.notify_all();
    reconnect_timer_.cancel();
    resolver_.cancel();
    offline_.clear();
    fail_pending_if([](const Pending&) { return true; }, "SHUTDOWN", "iii is shutting down");
    if (auto c = std::exchange(conn_, nullptr)) {
      if (c->open) {
        c->open = false;
        // Polite close so the engine cleans up at once; bounded so shutdown cannot hang.
        auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::seconds(1));
        timer->async_wait([c](error_code ec) {
          error_code ignored;
          if (!ec) beast::get_lowest_layer(c->ws).socket().close(ignored);
        });
        c->ws.async_close(websocket::close_code::normal, [c, timer](error_code) {
          timer->cancel();
          error_code ignored;
          beast::get_lowest_layer(c->ws).socket().close(ignored);
        });
      } else {
        error_code ignored;
        beast::get_lowest_layer(c->ws).socket().close(ignored);
      }
    }
    work_.reset();  // run() returns once the close above has finished
  }

  // ---- I/O ----------------------------------------------------------------------------------

  void send_frame(Frame f) {
    if (conn_ && conn_->open) {
      if (!f.invocation_id.empty()) {
        auto it = pending_.find(f.invocation_id);
        if (it != pending_.end()) it->second.sent_gen = conn_->gen;
      }
      conn_->wq.push_back(std::move(f));
      if (!conn_->writing) do_write(conn_);
      return;
    }
    if (f.kind == FrameKind::kQueueable && !stopping_) offline_.push_back(std::move(f));
  }

  void do_write(const std::shared_ptr<Conn>& c) {
    c->writing = true;
    c->ws.text(true);
    c->ws.async_write(asio::buffer(c->wq.front().text), [this, c](error_code ec, std::size_t) {
      if (c != conn_) return;
      if (ec) return on_conn_error(c, ec, "write");
      c->wq.pop_front();
      if (c->wq.empty()) {
        c->writing = false;
        return;
      }
      do_write(c);
    });
  }

  void do_read(const std::shared_ptr<Conn>& c) {
    c->ws.async_read(c->buf, [this, c](error_code ec, std::size_t) {
      if (c != conn_) return;
      if (ec) return on_conn_error(c, ec, "read");
      auto data = c->buf.cdata();
      handle_frame(std::string_view(static_cast<const char*>(data.data()), data.size()));
      c->buf.consume(c->buf.size());
      if (c == conn_) do_read(c);
    });
  }

  void handle_frame(std::string_view text) {
    // Text and binary frames are both parsed as JSON, like the Node/Python SDKs do.
    auto decoded = protocol::decode(text);
    if (auto* err = std::get_if<protocol::DecodeError>(&decoded)) {
      if (err->type == "error") {
        // The engine's auth rejection: {"type":"error","error":{code,message}}, then close.
        error_code ec;
        auto v = boost::json::parse(text, ec, {}, protocol::json_parse_options());
        std::string msg = "engine rejected the connection";
        if (!ec && v.is_object()) {
          if (auto* e = v.get_object().if_contains("error"))
            msg += ": " + boost::json::serialize(*e);
        }
        log(LogLevel::kWarn, msg);
        set_last_error(std::move(msg));
      } else {
        log(LogLevel::kDebug, "dropping undecodable frame: " + err->reason);
      }
      return;
    }
    auto& msg = std::get<protocol::Message>(decoded);
    if (auto* m = std::get_if<protocol::InvocationResult>(&msg)) {
      on_result(std::move(*m));
    } else if (auto* m = std::get_if<protocol::InvokeFunction>(&msg)) {
      on_invoke(std::move(*m));
    } else if (auto* m = std::get_if<protocol::WorkerRegistered>(&msg)) {
      {
        std::lock_guard lk(state_mu_);
        worker_id_ = m->worker_id;
        registered_ = state_ == State::kOpen;
      }
      state_cv_.notify_all();
      log(LogLevel::kInfo, "worker registered with id " + m->worker_id);
    } else if (std::holds_alternative<protocol::Ping>(msg)) {
      send_frame({protocol::encode(protocol::Pong{}), FrameKind::kTransient, {}});
    }
    // Everything else (registertrigger for custom trigger types, pong, ...) is ignored.
  }

  void on_result(protocol::InvocationResult&& m) {
    auto it = pending_.find(m.invocation_id);
    if (it == pending_.end()) return;  // timed out already, or not ours
    Pending p = std::move(it->second);
    pending_.erase(it);
    p.timer->cancel();
    TriggerOutcome o;
    if (m.error) {
      o.error.emplace(std::move(m.error->code), std::move(m.error->message),
                      std::move(m.error->stacktrace), p.function_id);
    } else {
      o.result = std::move(m.result);
    }
    complete(p.cb, std::move(o));
  }

  void on_invoke(protocol::InvokeFunction&& m) {
    auto state = std::make_shared<ReplyState>();
    state->client = weak_from_this();
    state->invocation_id = std::move(m.invocation_id);
    state->function_id = m.function_id;
    state->traceparent = std::move(m.traceparent);
    state->baggage = std::move(m.baggage);
    Responder reply(state);

    auto fn = find_function(m.function_id);
    if (!fn) {
      reply.fail("Function '" + m.function_id + "' not found", "function_not_found");
      return;
    }
    if (fn->async) {
      try {
        fn->async(m.data, reply);
      } catch (const std::exception& e) {
        reply.fail(e.what());
      } catch (...) {
        reply.fail("handler threw a non-std exception");
      }
      return;
    }
    if (!pool_) pool_ = std::make_unique<asio::thread_pool>(std::max(1, opts_.handler_threads));
    asio::post(*pool_, [this, fn, reply, data = std::move(m.data)] {
      tl_pool_owner = this;
      try {
        reply.ok(fn->sync(data));
      } catch (const std::exception& e) {
        reply.fail(e.what());
      } catch (...) {
        reply.fail("handler threw a non-std exception");
      }
    });
  }

  struct Pending {
    std::string function_id;
    TriggerCallback cb;
    std::unique_ptr<asio::steady_timer> timer;
    int timeout_ms = 0;
    uint64_t sent_gen = 0;  // connection the request was written to; 0 = not yet
  };

  void start_call(std::optional<std::string> id, std::string fid, std::string frame,
                  TriggerCallback cb, int timeout_ms) {
    if (stopping_) return complete(cb, local_error("SHUTDOWN", "iii is shutting down", fid));
    if (state_ == State::kFailed) {
      std::string why = last_error();
      return complete(cb, local_error("DISCONNECTED",
                                      "not connected to the engine at " + url_text_ +
                                          (why.empty() ? "" : ": " + why),
                                      fid));
    }
    if (!id) {  // void: nothing comes back
      send_frame({std::move(frame), FrameKind::kQueueable, {}});
      return complete(cb, TriggerOutcome{});
    }
    Pending p;
    p.function_id = std::move(fid);
    p.cb = std::move(cb);
    p.timeout_ms = timeout_ms;
    p.timer = std::make_unique<asio::steady_timer>(ioc_, milliseconds(timeout_ms));
    p.timer->async_wait([this, id = *id](error_code ec) {
      if (!ec) on_timeout(id);
    });
    std::string key = *id;
    pending_.emplace(key, std::move(p));
    send_frame({std::move(frame), FrameKind::kQueueable, std::move(key)});
  }

  void on_timeout(const std::string& id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Pending p = std::move(it->second);
    pending_.erase(it);
    TriggerOutcome o;
    o.error.emplace(timeout_error(p.timeout_ms, p.function_id));
    complete(p.cb, std::move(o));
  }

  template <typename Pred>
  void fail_pending_if(Pred pred, const std::string& code, const std::string& message) {
    // Collect first: callbacks may start new calls and modify pending_.
    std::vector<Pending> failed;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (pred(it->second)) {
        failed.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& p : failed) {
      p.timer->cancel();
      complete(p.cb, local_error(code, message, p.function_id));
    }
  }

  // Declared first so it is destroyed last: sockets and timers below belong to it.
  asio::io_context ioc_{1};
  const std::string url_text_;
  const WsUrl url_;
  InitOptions opts_;
  std::string metadata_frame_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  tcp::resolver resolver_;
  asio::steady_timer reconnect_timer_;
  std::thread thread_;
  std::unique_ptr<asio::thread_pool> pool_;
  std::atomic<bool> stopping_{false};

  // I/O-thread state.
  std::shared_ptr<Conn> conn_;
  uint64_t gen_ = 0;
  int attempt_ = 0;
  std::deque<Frame> offline_;
  std::unordered_map<std::string, Pending> pending_;
  std::mt19937 rng_{std::random_device{}()};

  // Registry, shared with API threads.
  std::mutex reg_mu_;
  std::vector<std::shared_ptr<FunctionEntry>> functions_;  // registration order for replay
  std::unordered_map<std::string, std::shared_ptr<FunctionEntry>> fn_index_;
  std::vector<std::shared_ptr<TriggerEntry>> triggers_;
  std::vector<std::shared_ptr<TriggerEntry>> services_;  // registerservice frames (id = service id)

  // Connection state visible to API threads (written on the I/O thread).
  mutable std::mutex state_mu_;
  std::condition_variable state_cv_;
  State state_ = State::kConnecting;
  bool registered_ = false;
  bool io_done_ = false;
  std::string worker_id_;
  std::string last_error_;
  std::shared_ptr<Client> keepalive_;
};

}  // namespace detail

// ---- public API -------------------------------------------------------------------------

InvocationError::InvocationError(std::string code_in, std::string message_in,
                                 std::optional<std::string> stacktrace_in,
                                 std::string function_id_in)
    : std::runtime_error(code_in + ": " + message_in),
      code(std::move(code_in)),
      message(std::move(message_in)),
      stacktrace(std::move(stacktrace_in)),
      function_id(std::move(function_id_in)) {}

void Responder::ok(Result result) const {
  if (!state_ || state_->done.exchange(true)) return;
  if (!state_->invocation_id) return;  // void invocation: the engine expects nothing
  if (auto c = state_->client.lock()) c->send_reply(*state_, result, std::nullopt);
}

void Responder::fail(std::string message, std::string code,
                     std::optional<std::string> stacktrace) const {
  if (!state_ || state_->done.exchange(true)) return;
  auto c = state_->client.lock();
  if (!state_->invocation_id) {
    if (c)
      c->log(LogLevel::kError,
             "function '" + state_->function_id + "' failed (void call): " + message);
    return;
  }
  if (c)
    c->send_reply(*state_, std::nullopt,
                  protocol::ErrorBody{std::move(code), std::move(message), std::move(stacktrace)});
}

const std::string& Responder::function_id() const {
  static const std::string kEmpty;
  return state_ ? state_->function_id : kEmpty;
}

bool Responder::expects_reply() const { return state_ && state_->invocation_id.has_value(); }

void FunctionRef::unregister() {
  if (auto c = client_.lock()) c->remove_function(id_);
}

void TriggerRef::unregister() {
  if (auto c = client_.lock()) c->remove_trigger(id_);
}

III::~III() { shutdown(); }

FunctionRef III::register_function(std::string id, Handler handler, FunctionOptions opts) {
  if (id.empty()) throw std::invalid_argument("function id must not be empty");
  if (!handler) throw std::invalid_argument("handler for '" + id + "' is empty");
  auto fn = std::make_shared<detail::FunctionEntry>();
  fn->id = id;
  fn->sync = std::move(handler);
  fn->frame = detail::encode_register_function(id, opts);
  client_->add_function(fn);
  return FunctionRef(client_, std::move(id));
}

FunctionRef III::register_function(std::string id, AsyncHandler handler, FunctionOptions opts) {
  if (id.empty()) throw std::invalid_argument("function id must not be empty");
  if (!handler) throw std::invalid_argument("handler for '" + id + "' is empty");
  auto fn = std::make_shared<detail::FunctionEntry>();
  fn->id = id;
  fn->async = std::move(handler);
  fn->frame = detail::encode_register_function(id, opts);
  client_->add_function(fn);
  return FunctionRef(client_, std::move(id));
}

TriggerRef III::register_trigger(TriggerConfig trigger) {
  if (trigger.type.empty()) throw std::invalid_argument("trigger type must not be empty");
  if (trigger.function_id.empty()) throw std::invalid_argument("trigger function_id is empty");
  auto t = std::make_shared<detail::TriggerEntry>();
  t->id = detail::make_uuid_v4();
  t->type = trigger.type;
  t->frame = detail::encode_register_trigger(t->id, trigger);
  client_->add_trigger(t);
  return TriggerRef(client_, t->id);
}

void III::register_service(ServiceInfo service) {
  if (service.id.empty()) throw std::invalid_argument("service id must not be empty");
  auto svc = std::make_shared<detail::TriggerEntry>();
  svc->id = service.id;
  svc->type = "service";
  protocol::RegisterService m{service.id, service.name, service.description,
                              service.parent_service_id};
  svc->frame = protocol::encode(m);
  client_->add_service(svc);
}

Result III::trigger(const TriggerRequest& request) { return client_->trigger(request); }

void III::trigger_async(const TriggerRequest& request, TriggerCallback callback) {
  client_->trigger_async(request, std::move(callback));
}

bool III::wait_connected(std::chrono::milliseconds timeout) {
  return client_->wait_connected(timeout);
}

bool III::is_connected() const { return client_->is_connected(); }
std::string III::worker_id() const { return client_->worker_id(); }
std::string III::last_error() const { return client_->last_error(); }
void III::shutdown() { client_->shutdown(); }

std::shared_ptr<III> register_worker(std::string url, InitOptions opts) {
  std::string error;
  auto parsed = detail::parse_ws_url(url, &error);
  if (!parsed) throw std::invalid_argument(error);
  auto client = std::make_shared<detail::Client>(url, std::move(*parsed), std::move(opts));
  client->start();
  return std::shared_ptr<III>(new III(std::move(client), std::move(url)));
}

}  // namespace iii
