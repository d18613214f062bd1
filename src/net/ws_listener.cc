// Beast plumbing for the worker listener: accept TCP, read the HTTP upgrade, route by path to
// a worker session (`/`), a telemetry session (`/otel`) or a channel relay (`/ws/channels/`).
#include "net/ws_listener.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "engine/connection.h"
#include "net/channel_relay.h"
#include "net/ws_session.h"
#include <boost/url/parse.hpp>
#include "engine/engine.h"

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);

bool is_telemetry(std::string_view f) {
  return f.size() >= 4 &&
         (f.substr(0, 4) == "OTLP" || f.substr(0, 4) == "MTRC" || f.substr(0, 4) == "LOGS");
}

// `/`: a worker connection of the engine.
class WorkerHandler : public SessionHandler {
 public:
  WorkerHandler(engine::Engine& engine, std::string listener) : engine_(engine), listener_(std::move(listener)) {}
  uint64_t on_open(std::shared_ptr<engine::Connection> conn, const std::string& ip) override {
    return engine_.connect(std::move(conn), engine::ConnectionInfo{ip, listener_});
  }
  void on_frame(uint64_t id, std::string_view frame, bool) override { engine_.on_frame(id, frame); }
  void on_close(uint64_t id) override { engine_.disconnect(id); }
  std::string describe(uint64_t id) override {
    if (auto* w = engine_.find_worker(id)) return "worker " + w->id;
    return "worker";
  }

 private:
  engine::Engine& engine_;
  std::string listener_;
};

// `/otel`: telemetry frames only; no worker entry.
class TelemetryHandler : public SessionHandler {
 public:
  explicit TelemetryHandler(engine::Engine& engine) : engine_(engine) {}
  uint64_t on_open(std::shared_ptr<engine::Connection>, const std::string&) override { return 0; }
  void on_frame(uint64_t, std::string_view frame, bool binary) override {
    if (binary && is_telemetry(frame)) engine_.on_telemetry(frame);
  }
  void on_close(uint64_t) override {}

 private:
  engine::Engine& engine_;
};

// Reads the HTTP request of a new connection and hands it to the right session type.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, engine::Engine& engine,
              std::shared_ptr<const ListenerOptions> opts,
              std::shared_ptr<const SessionOptions> session_opts)
      : stream_(std::move(socket)),
        engine_(engine),
        opts_(std::move(opts)),
        session_opts_(std::move(session_opts)) {}

  void run() {
    parser_.header_limit(16 * 1024);
    parser_.body_limit(0);
    stream_.expires_after(kHandshakeTimeout);
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->on_request(ec);
                     });
  }

 private:
  void on_request(beast::error_code ec) {
    if (ec) return;  // client went away or sent garbage before the upgrade
    auto req = parser_.release();
    std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    beast::error_code ignored;
    const auto ep = stream_.socket().remote_endpoint(ignored);
    std::string ip = ignored ? std::string() : ep.address().to_string();

    constexpr std::string_view kChannels = "/ws/channels/";
    const bool channel = path.substr(0, kChannels.size()) == kChannels;
    if (path != "/" && path != "/otel" && !channel)
      return respond(http::status::not_found, "Not Found\n");
    if (!websocket::is_upgrade(req))
      return respond(http::status::upgrade_required, "This endpoint expects a WebSocket upgrade\n");
    if (channel) return open_channel(path.substr(kChannels.size()), target, std::move(req));
    stream_.expires_never();
    std::shared_ptr<SessionHandler> handler;
    if (path == "/") handler = std::make_shared<WorkerHandler>(engine_, opts_->name);
    else handler = std::make_shared<TelemetryHandler>(engine_);
    run_ws_session(stream_.release_socket(), std::move(req), std::move(ip), session_opts_,
                   std::move(handler));
  }

  // `/ws/channels/{id}?key=<access key>&dir=read|write`
  void open_channel(std::string_view id, std::string_view target,
                    http::request<http::empty_body>&& req) {
    auto url = boost::urls::parse_origin_form(target);
    if (!url) return respond(http::status::bad_request, "Malformed request target\n");
    std::string key, dir;
    for (auto param : url->params()) {  // decoded key/value pairs
      if (param.key == "key") key = param.value;
      else if (param.key == "dir") dir = param.value;
    }
    if (key.empty() || (dir != "read" && dir != "write"))
      return respond(http::status::bad_request,
                     "Channel requests need ?key=<access key>&dir=read|write\n");
    std::shared_ptr<engine::Channel> ch;
    auto found = engine_.channels().find(std::string(id), key, ch);
    if (found != engine::ChannelRegistry::Lookup::kOk) {
      spdlog::warn("{}: channel {} refused: {}", opts_->name, id,
                   found == engine::ChannelRegistry::Lookup::kWrongKey ? "wrong access key"
                                                                       : "no such channel");
      return respond(http::status::not_found, "Channel not found\n");
    }
    const bool writer = dir == "write";
    if (writer ? ch->writer_taken : ch->reader_taken) {
      spdlog::warn("{}: channel {} already has a {}", opts_->name, id, writer ? "writer" : "reader");
      return respond(http::status::conflict, writer ? "Channel writer already connected\n"
                                                    : "Channel reader already connected\n");
    }
    stream_.expires_never();
    start_channel_relay(stream_.release_socket(), std::move(req), std::move(ch), writer, engine_,
                        opts_);
  }

  void respond(http::status status, std::string body) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "iii/" III_VERSION);
    res->set(http::field::content_type, "text/plain");
    res->keep_alive(false);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_;
  std::shared_ptr<const SessionOptions> session_opts_;
  beast::flat_buffer buffer_{2048};
  http::request_parser<http::empty_body> parser_;
};

class WsListener : public Listener {
 public:
  WsListener(asio::io_context& io, engine::Engine& engine, ListenerOptions opts)
      : engine_(engine),
        opts_ptr_(std::make_shared<const ListenerOptions>(std::move(opts))),
        opts_(*opts_ptr_),
        session_opts_(std::make_shared<const SessionOptions>(SessionOptions{
            opts_.name, opts_.max_message_bytes, opts_.idle_timeout, opts_.max_outbound_bytes,
            1008})),
        acceptor_(io) {
    beast::error_code ec;
    const auto address = asio::ip::make_address(opts_.host, ec);
    if (ec) throw std::system_error(ec, "invalid host '" + opts_.host + "'");
    tcp::endpoint ep(address, opts_.port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep, ec);
    if (ec)
      throw std::system_error(ec, "cannot listen on " + opts_.host + ":" +
                                      std::to_string(opts_.port));
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    spdlog::info("{} listening on {}:{}", opts_.name, opts_.host, port_);
    do_accept();
  }

  uint16_t port() const override { return port_; }

  void stop() override {
    beast::error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
  }

 private:
  void do_accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (!ec) {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<HttpSession>(std::move(socket), engine_, opts_ptr_, session_opts_)->run();
      } else {
        // Typically EMFILE: back off briefly instead of spinning on the error.
        spdlog::warn("{}: accept failed: {}", opts_.name, ec.message());
        retry_.expires_after(std::chrono::milliseconds(50));
        retry_.async_wait([this](beast::error_code e) {
          if (!e) do_accept();
        });
        return;
      }
      do_accept();
    });
  }

  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_ptr_;
  const ListenerOptions& opts_;
  std::shared_ptr<const SessionOptions> session_opts_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_{acceptor_.get_executor()};
  uint16_t port_ = 0;
};

}  // namespace

std::unique_ptr<Listener> start_ws_listener(asio::io_context& io, engine::Engine& engine,
                                            ListenerOptions options) {
  return std::make_unique<WsListener>(io, engine, std::move(options));
}

}  // namespace iii::net
