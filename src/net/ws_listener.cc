// Beast plumbing: accept TCP, read the HTTP upgrade, route by path, run one session object per
// WebSocket connection with exactly one write in flight (Beast chat-multi style).
#include "net/ws_listener.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>

#include "engine/connection.h"
#include "net/channel_relay.h"
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
constexpr size_t kReadBufferKeep = 64 * 1024;  // larger read buffers are released after use

bool is_telemetry(std::string_view f) {
  return f.size() >= 4 &&
         (f.substr(0, 4) == "OTLP" || f.substr(0, 4) == "MTRC" || f.substr(0, 4) == "LOGS");
}

std::string_view buffer_view(const beast::flat_buffer& b) {
  auto d = b.data();
  return {static_cast<const char*>(d.data()), d.size()};
}

enum class SessionKind { kWorker, kTelemetry };

// One WebSocket connection. Worker sessions are Connections of the engine; telemetry sessions
// only feed Engine::on_telemetry.
class WsSession : public engine::Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, engine::Engine& engine,
            std::shared_ptr<const ListenerOptions> opts, SessionKind kind, std::string ip)
      : ws_(std::move(socket)),
        engine_(engine),
        opts_ptr_(std::move(opts)),
        opts_(*opts_ptr_),
        kind_(kind),
        ip_(std::move(ip)) {}

  void accept(http::request<http::empty_body>&& req) {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = kHandshakeTimeout;
    t.idle_timeout = opts_.idle_timeout.count() > 0
                         ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               opts_.idle_timeout)
                         : websocket::stream_base::none();
    t.keep_alive_pings = opts_.idle_timeout.count() > 0;
    ws_.set_option(t);
    ws_.read_message_max(opts_.max_message_bytes);
    ws_.auto_fragment(false);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "iii/" III_VERSION); }));
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      self->on_accept(ec);
    });
  }

  void send(engine::SharedFrame frame) override {
    if (closed_ || close_requested_) return;
    queued_bytes_ += frame->size();
    if (queued_bytes_ > opts_.max_outbound_bytes) {
      spdlog::warn("{}: worker {} is not reading ({} bytes queued); closing the connection",
                   opts_.name, worker_id(), queued_bytes_);
      queued_bytes_ -= frame->size();
      close(static_cast<uint16_t>(websocket::close_code::policy_error), "outbound queue full");
      return;
    }
    queue_.push_back(std::move(frame));
    if (!writing_) do_write();
  }

  void close(uint16_t code, std::string_view reason) override {
    if (closed_ || close_requested_) return;
    close_requested_ = true;
    close_reason_ = websocket::close_reason(static_cast<websocket::close_code>(code), std::string(reason));
    if (!writing_) do_close();
  }

 private:
  std::string worker_id() {
    if (auto* w = engine_.find_worker(handle_)) return w->id;
    return ip_;
  }

  void on_accept(beast::error_code ec) {
    if (ec) {
      spdlog::debug("{}: WebSocket handshake from {} failed: {}", opts_.name, ip_, ec.message());
      return;
    }
    if (kind_ == SessionKind::kWorker) {
      handle_ = engine_.connect(shared_from_this(), engine::ConnectionInfo{ip_, opts_.name});
    }
    do_read();
  }

  void do_read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    const std::string_view frame = buffer_view(buffer_);
    if (kind_ == SessionKind::kWorker) {
      engine_.on_frame(handle_, frame);
    } else if (!ws_.got_text() && is_telemetry(frame)) {
      engine_.on_telemetry(frame);
    }
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > kReadBufferKeep) buffer_ = beast::flat_buffer();
    if (!closed_) do_read();
  }

  void on_read_error(beast::error_code ec) {
    const std::string who = worker_id();
    if (ec == websocket::error::message_too_big) {
      spdlog::warn(
          "{}: {} sent a message larger than max_message_bytes ({} bytes); closed with code 1009",
          opts_.name, who, opts_.max_message_bytes);
    } else if (ec == beast::error::timeout) {
      spdlog::warn("{}: {} sent nothing for {} ms (no pong to our ping); connection closed",
                   opts_.name, who, opts_.idle_timeout.count());
    } else if (ec != websocket::error::closed && ec != asio::error::eof &&
               ec != asio::error::operation_aborted && ec != asio::error::connection_reset) {
      spdlog::debug("{}: connection {} ended: {}", opts_.name, who, ec.message());
    }
    finish();
  }

  void finish() {
    if (closed_) return;
    closed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    if (kind_ == SessionKind::kWorker && handle_) engine_.disconnect(handle_);
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).close(ignored);  // wakes any pending operation
  }

  void do_write() {
    writing_ = true;
    ws_.text(true);
    const auto& frame = *queue_.front();
    ws_.async_write(asio::buffer(frame), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_write(ec);
    });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (ec) {
      spdlog::debug("{}: write to {} failed: {}", opts_.name, worker_id(), ec.message());
      return finish();
    }
    if (closed_) return;
    queued_bytes_ -= queue_.front()->size();
    queue_.pop_front();
    if (!queue_.empty()) do_write();
    else if (close_requested_) do_close();
  }

  void do_close() {
    if (closed_) return;
    ws_.async_close(close_reason_, [self = shared_from_this()](beast::error_code) {
      self->finish();
    });
  }

  websocket::stream<tcp::socket> ws_;
  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_ptr_;  // keeps the options alive past the listener
  const ListenerOptions& opts_;
  SessionKind kind_;
  std::string ip_;
  uint64_t handle_ = 0;
  beast::flat_buffer buffer_;
  std::deque<engine::SharedFrame> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool close_requested_ = false;
  bool closed_ = false;
  websocket::close_reason close_reason_;
};

// Reads the HTTP request of a new connection and hands it to the right session type.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, engine::Engine& engine,
              std::shared_ptr<const ListenerOptions> opts)
      : stream_(std::move(socket)), engine_(engine), opts_(std::move(opts)) {}

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
    const auto kind = path == "/" ? SessionKind::kWorker : SessionKind::kTelemetry;
    auto session = std::make_shared<WsSession>(stream_.release_socket(), engine_, opts_, kind,
                                               std::move(ip));
    session->accept(std::move(req));
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
  beast::flat_buffer buffer_{2048};
  http::request_parser<http::empty_body> parser_;
};

class WsListener : public Listener {
 public:
  WsListener(asio::io_context& io, engine::Engine& engine, ListenerOptions opts)
      : engine_(engine),
        opts_ptr_(std::make_shared<const ListenerOptions>(std::move(opts))),
        opts_(*opts_ptr_),
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
        std::make_shared<HttpSession>(std::move(socket), engine_, opts_ptr_)->run();
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
