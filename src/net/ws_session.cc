#include "net/ws_session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include "net/frame_socket.h"

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr size_t kReadBufferKeep = 64 * 1024;  // larger read buffers are released after use
constexpr size_t kReadChunk = 512 * 1024;      // bytes per read while a message arrives

std::string_view buffer_view(const beast::flat_buffer& b) {
  auto d = b.data();
  return {static_cast<const char*>(d.data()), d.size()};
}

class WsSession : public engine::Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::string ip, std::shared_ptr<const SessionOptions> opts,
            std::shared_ptr<SessionHandler> handler)
      : ws_(std::move(socket)),
        opts_ptr_(std::move(opts)),
        opts_(*opts_ptr_),
        handler_(std::move(handler)),
        ip_(std::move(ip)) {}

  void accept(HttpRequest&& req, std::string subprotocol) {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = kHandshakeTimeout;
    t.idle_timeout =
        opts_.idle_timeout.count() > 0
            ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(opts_.idle_timeout)
            : websocket::stream_base::none();
    t.keep_alive_pings = opts_.idle_timeout.count() > 0;
    ws_.set_option(t);
    // The size limit is enforced here, not by Beast: Beast's failure path tears the socket
    // down while the peer may still be sending, which loses the 1009 close frame (RST).
    ws_.read_message_max(0);
    ws_.auto_fragment(false);
    ws_.set_option(websocket::stream_base::decorator(
        [subprotocol = std::move(subprotocol)](websocket::response_type& res) {
          res.set(http::field::server, "iii/" III_VERSION);
          if (!subprotocol.empty()) res.set(http::field::sec_websocket_protocol, subprotocol);
        }));
    ws_.next_layer().set_owner(weak_from_this());
    ws_.async_accept(req,
                     [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  // Frames are queued in the FrameSocket and written in order; whatever has queued up by the
  // time the socket can take more goes out in one sendmsg.
  void send(engine::SharedFrame frame) override {
    if (closed_ || close_requested_ || !ws_.is_open()) return;
    FrameSocket& out = ws_.next_layer();
    if (out.queued_bytes() + frame->size() > opts_.max_outbound_bytes) {
      spdlog::warn("{}: {} is not reading ({} bytes queued); closing the connection", opts_.name,
                   who(), out.queued_bytes() + frame->size());
      close(opts_.overflow_close_code, "outbound queue full");
      return;
    }
    out.send_frame(false, std::move(frame));
  }

  void hold() override { ws_.next_layer().hold(); }
  void release() override { ws_.next_layer().release(); }

  // The Close frame is queued behind the frames already sent, so they are delivered first.
  void close(uint16_t code, std::string_view reason) override {
    if (closed_ || close_requested_) return;
    close_requested_ = true;
    ws_.async_close(
        websocket::close_reason(static_cast<websocket::close_code>(code), std::string(reason)),
        [self = shared_from_this()](beast::error_code) { self->finish(); });
  }

 private:
  std::string who() { return open_ ? handler_->describe(id_) : ip_; }

  void on_accept(beast::error_code ec) {
    if (ec) {
      spdlog::debug("{}: WebSocket handshake from {} failed: {}", opts_.name, ip_, ec.message());
      return;
    }
    id_ = handler_->on_open(shared_from_this(), ip_);
    open_ = true;
    do_read();
  }

  void do_read() {
    ws_.async_read_some(
        buffer_, kReadChunk,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    if (buffer_.size() > opts_.max_message_bytes) return refuse_oversized();
    if (!ws_.is_message_done()) {
      quick_ack();
      return do_read();
    }
    handler_->on_frame(id_, buffer_view(buffer_), ws_.got_binary());
    quick_ack();
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > kReadBufferKeep) buffer_ = beast::flat_buffer();
    if (!closed_) do_read();
  }

  // Acknowledges what the last socket read took at once instead of after the delayed-ACK timer
  // (40 ms on Linux). A peer with Nagle's algorithm on (the original's Rust SDK leaves it on)
  // holds its next small frame until the previous one is acknowledged, and the engine rarely has
  // data for that peer to carry the ACK: a worker answering 8 invocations in a row would send
  // the 2nd answer 40 ms late. Linux drops TCP_QUICKACK again by itself, so it is set after
  // every socket read (after the message was handled, so that it does not delay it); a read that
  // Beast served from its own buffer needs none.
  void quick_ack() {
    FrameSocket& s = ws_.next_layer();
    if (s.reads() == acked_reads_ || closed_) return;
    acked_reads_ = s.reads();
    const int one = 1;
    ::setsockopt(s.next_layer().native_handle(), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  }

  // Closes with 1009. Beast's close operation reads (and discards) the rest of the message
  // until the peer's close frame, so the peer sees the close code instead of a reset.
  void refuse_oversized() {
    spdlog::warn(
        "{}: {} sent a message larger than max_message_bytes ({} bytes); closing with code 1009",
        opts_.name, who(), opts_.max_message_bytes);
    buffer_ = beast::flat_buffer();
    close(static_cast<uint16_t>(websocket::close_code::too_big), "message too big");
  }

  void on_read_error(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      spdlog::warn("{}: {} sent nothing for {} ms (no pong to our ping); connection closed",
                   opts_.name, who(), opts_.idle_timeout.count());
    } else if (ec != websocket::error::closed && ec != asio::error::eof &&
               ec != asio::error::operation_aborted && ec != asio::error::connection_reset) {
      spdlog::debug("{}: connection {} ended: {}", opts_.name, who(), ec.message());
    }
    finish();
  }

  void finish() {
    if (closed_) return;
    closed_ = true;
    if (open_) handler_->on_close(id_);
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).close(ignored);  // wakes any pending operation
  }

  websocket::stream<FrameSocket> ws_;
  std::shared_ptr<const SessionOptions> opts_ptr_;  // keeps the options alive past the listener
  const SessionOptions& opts_;
  std::shared_ptr<SessionHandler> handler_;
  std::string ip_;
  uint64_t id_ = 0;
  bool open_ = false;
  beast::flat_buffer buffer_;
  uint64_t acked_reads_ = 0;  // FrameSocket::reads() at the last quick_ack
  bool close_requested_ = false;
  bool closed_ = false;
};

}  // namespace

void run_ws_session(tcp::socket&& socket, HttpRequest&& req, std::string ip,
                    std::shared_ptr<const SessionOptions> opts,
                    std::shared_ptr<SessionHandler> handler, std::string subprotocol) {
  std::make_shared<WsSession>(std::move(socket), std::move(ip), std::move(opts), std::move(handler))
      ->accept(std::move(req), std::move(subprotocol));
}

}  // namespace iii::net
