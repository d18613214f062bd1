// The worker listener: an HttpServer whose router sends each upgrade to a worker session (`/`),
// a telemetry session (`/otel`) or a channel relay (`/ws/channels/`).
#include "net/ws_listener.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <memory>
#include <optional>
#include <vector>

#include "engine/connection.h"
#include "engine/engine.h"
#include "net/channel_relay.h"
#include "net/http_server.h"
#include "net/ws_session.h"

namespace iii::net {

namespace asio = boost::asio;

namespace {

bool is_telemetry(std::string_view f) {
  return f.size() >= 4 &&
         (f.substr(0, 4) == "OTLP" || f.substr(0, 4) == "MTRC" || f.substr(0, 4) == "LOGS");
}

// `/`: a worker connection of the engine.
class WorkerHandler : public SessionHandler {
 public:
  WorkerHandler(engine::Engine& engine, engine::ConnectionInfo info)
      : engine_(engine), info_(std::move(info)) {}
  uint64_t on_open(std::shared_ptr<engine::Connection> conn, const std::string& ip) override {
    info_.ip_address = ip;
    return engine_.connect(std::move(conn), std::move(info_));
  }
  void on_frame(uint64_t id, std::string_view frame, bool) override { engine_.on_frame(id, frame); }
  void on_close(uint64_t id) override { engine_.disconnect(id); }
  std::string describe(uint64_t id) override {
    if (auto* w = engine_.find_worker(id)) return "worker " + w->id;
    return "worker";
  }

 private:
  engine::Engine& engine_;
  engine::ConnectionInfo info_;
};

// `/otel`: telemetry frames only; no worker entry. On a listener whose policy has an auth
// function the connection runs it first (engine-core.md §9: the same handshake as `/`). Frames
// that arrive meanwhile wait (bounded); a refused connection stays open but its frames are
// dropped: the SDKs send no credentials on this socket, and closing it would only make them
// reconnect (and re-run the auth function) forever.
class TelemetryHandler : public SessionHandler,
                         public std::enable_shared_from_this<TelemetryHandler> {
 public:
  TelemetryHandler(engine::Engine& engine, std::optional<engine::ConnectionInfo> auth)
      : engine_(engine), auth_(std::move(auth)), state_(auth_ ? kDeciding : kAdmitted) {}
  uint64_t on_open(std::shared_ptr<engine::Connection>, const std::string& ip) override {
    if (!auth_) return 0;
    auth_->ip_address = ip;
    engine_.authenticate(*auth_, [self = weak_from_this()](std::optional<std::string> refused) {
      if (auto h = self.lock()) h->decided(!refused);
    });
    return 0;
  }
  void on_frame(uint64_t, std::string_view frame, bool binary) override {
    if (!binary || !is_telemetry(frame) || state_ == kRefused) return;
    if (state_ == kAdmitted) return engine_.on_telemetry(frame);
    if (waiting_bytes_ + frame.size() > kMaxWaitingBytes) return;  // telemetry is lossy
    waiting_bytes_ += frame.size();
    waiting_.emplace_back(frame);
  }
  void on_close(uint64_t) override {}

 private:
  static constexpr size_t kMaxWaitingBytes = 8u << 20;
  enum State { kDeciding, kAdmitted, kRefused };

  void decided(bool admitted) {
    state_ = admitted ? kAdmitted : kRefused;
    if (admitted)
      for (const auto& f : waiting_) engine_.on_telemetry(f);
    waiting_.clear();
    waiting_bytes_ = 0;
  }

  engine::Engine& engine_;
  std::optional<engine::ConnectionInfo> auth_;
  State state_;
  std::vector<std::string> waiting_;
  size_t waiting_bytes_ = 0;
};

// Only upgrades are served: a request body is never needed.
HttpServerOptions http_options(const ListenerOptions& o) {
  HttpServerOptions h;
  h.name = o.name;
  h.host = o.host;
  h.port = o.port;
  h.max_body_bytes = 64 * 1024;
  return h;
}

// Routes the requests of one worker-manager listener.
class WsListener : public Listener {
 public:
  WsListener(asio::io_context& io, engine::Engine& engine, ListenerOptions opts)
      : engine_(engine),
        opts_(std::make_shared<const ListenerOptions>(std::move(opts))),
        session_opts_(std::make_shared<const SessionOptions>(
            SessionOptions{opts_->name, opts_->max_message_bytes, opts_->idle_timeout,
                           opts_->max_outbound_bytes, 1008})),
        server_(io, http_options(*opts_),
                [this](std::shared_ptr<IncomingRequest> r) { route(std::move(r)); }) {}

  uint16_t port() const override { return server_.port(); }
  void stop() override { server_.stop(); }

 private:
  void route(std::shared_ptr<IncomingRequest> r) {
    const std::string_view path = r->path();
    constexpr std::string_view kChannels = "/ws/channels/";
    const bool channel = path.substr(0, kChannels.size()) == kChannels;
    if (path != "/" && path != "/otel" && !channel)
      return r->respond(HttpStatus::not_found, "Not Found\n");
    if (!r->is_websocket_upgrade())
      return r->respond(HttpStatus::upgrade_required,
                        "This endpoint expects a WebSocket upgrade\n");
    if (opts_->allowed_origins) {
      auto origin = r->request().find(boost::beast::http::field::origin);
      const std::string_view o =
          origin == r->request().end() ? std::string_view() : std::string_view(origin->value());
      if (std::find(opts_->allowed_origins->begin(), opts_->allowed_origins->end(), o) ==
          opts_->allowed_origins->end()) {
        spdlog::warn("{}: upgrade from {} refused: origin '{}' is not in allowed_origins",
                     opts_->name, r->ip(), o);
        return r->respond(HttpStatus::forbidden, "Origin not allowed\n");
      }
    }
    if (channel) return open_channel(path.substr(kChannels.size()), std::move(r));
    engine::ConnectionInfo info;
    info.listener = opts_->name;
    info.policy = opts_->policy;
    if (info.policy) {  // the auth function gets the upgrade's headers and query
      for (const auto& f : r->request())
        info.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      const std::string_view t = r->target();
      if (auto q = t.find('?'); q != std::string_view::npos) info.query = t.substr(q + 1);
    }
    std::shared_ptr<SessionHandler> handler;
    if (path == "/") {
      handler = std::make_shared<WorkerHandler>(engine_, std::move(info));
    } else {
      std::optional<engine::ConnectionInfo> auth;
      if (info.policy && info.policy->auth_function_id) auth = std::move(info);
      handler = std::make_shared<TelemetryHandler>(engine_, std::move(auth));
    }
    run_ws_session(r->release_socket(), std::move(r->request()), r->ip(), session_opts_,
                   std::move(handler));
  }

  // `/ws/channels/{id}?key=<access key>&dir=read|write`
  void open_channel(std::string_view id, std::shared_ptr<IncomingRequest> r) {
    auto url = boost::urls::parse_origin_form(r->target());
    if (!url) return r->respond(HttpStatus::bad_request, "Malformed request target\n");
    std::string key, dir;
    for (auto param : url->params()) {  // decoded key/value pairs
      if (param.key == "key")
        key = param.value;
      else if (param.key == "dir")
        dir = param.value;
    }
    if (key.empty() || (dir != "read" && dir != "write"))
      return r->respond(HttpStatus::bad_request,
                        "Channel requests need ?key=<access key>&dir=read|write\n");
    std::shared_ptr<engine::Channel> ch;
    auto found = engine_.channels().find(std::string(id), key, ch);
    if (found != engine::ChannelRegistry::Lookup::kOk) {
      spdlog::warn("{}: channel {} refused: {}", opts_->name, id,
                   found == engine::ChannelRegistry::Lookup::kWrongKey ? "wrong access key"
                                                                       : "no such channel");
      return r->respond(HttpStatus::not_found, "Channel not found");
    }
    const bool writer = dir == "write";
    if (writer ? ch->writer_taken : ch->reader_taken) {
      spdlog::warn("{}: channel {} already has a {}", opts_->name, id,
                   writer ? "writer" : "reader");
      return r->respond(HttpStatus::conflict, writer ? "Channel writer already connected\n"
                                                     : "Channel reader already connected\n");
    }
    start_channel_relay(r->release_socket(), std::move(r->request()), std::move(ch), writer,
                        engine_, opts_);
  }

  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_;
  std::shared_ptr<const SessionOptions> session_opts_;
  HttpServer server_;
};

}  // namespace

std::unique_ptr<Listener> start_ws_listener(asio::io_context& io, engine::Engine& engine,
                                            ListenerOptions options) {
  return std::make_unique<WsListener>(io, engine, std::move(options));
}

}  // namespace iii::net
