#include "net/channel_relay.h"

#include <spdlog/spdlog.h>

#include <boost/asio/buffered_read_stream.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include "engine/engine.h"
#include "net/frame_socket.h"

// Beast closes a WebSocket through teardown() on its next layer, found by argument-dependent
// lookup, so the overloads for the buffered socket below live in Asio's namespace.
namespace boost::asio {
using BufferedSocket = buffered_read_stream<ip::tcp::socket>;

inline void teardown(beast::role_type role, BufferedSocket& s, beast::error_code& ec) {
  beast::websocket::teardown(role, s.next_layer(), ec);
}

template <class TeardownHandler>
void async_teardown(beast::role_type role, BufferedSocket& s, TeardownHandler&& handler) {
  beast::websocket::async_teardown(role, s.next_layer(), std::forward<TeardownHandler>(handler));
}
}  // namespace boost::asio

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kFrameReserve = 64 * 1024;  // the SDKs send 64 KiB binary frames
// The writer's socket is read through a buffer that holds several such frames: one recvmsg
// then serves several frames instead of each frame costing two (header, then payload).
constexpr size_t kWriterReadBuffer = 256 * 1024;
// Frames handed to the reader's socket at a time; whatever is queued goes out in one sendmsg.
constexpr size_t kReaderInFlight = 512 * 1024;

template <class NextLayer>
void configure(websocket::stream<NextLayer>& ws, const ListenerOptions& opts, bool pings) {
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(10);
  // A paused writer has no read pending, so only the reader side runs the liveness check.
  const bool idle = pings && opts.idle_timeout.count() > 0;
  t.idle_timeout = idle ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              opts.idle_timeout)
                        : websocket::stream_base::none();
  t.keep_alive_pings = idle;
  ws.set_option(t);
  ws.read_message_max(0);  // enforced by the writer (see ws_session.cc for why)
  ws.auto_fragment(false);
}

class ChannelWriter : public std::enable_shared_from_this<ChannelWriter> {
 public:
  ChannelWriter(tcp::socket&& s, std::shared_ptr<engine::Channel> ch, engine::Engine& eng,
                std::shared_ptr<const ListenerOptions> opts)
      : executor_(s.get_executor()),
        ws_(executor_, kWriterReadBuffer),  // buffered_read_stream takes its argument by lvalue
        ch_(std::move(ch)),
        engine_(eng),
        opts_(std::move(opts)) {
    ws_.next_layer().next_layer() = std::move(s);
  }

  void start(http::request<http::empty_body>&& req) {
    configure(ws_, *opts_, false);
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return self->finish();
      std::weak_ptr<ChannelWriter> weak = self;
      self->ch_->on_space = [weak] {
        if (auto s = weak.lock()) s->resume();
      };
      self->ch_->on_reader_gone = [weak] {
        if (auto s = weak.lock()) s->stop();
      };
      self->do_read();
    });
  }

 private:
  void do_read() {
    buf_.clear();
    buf_.reserve(kFrameReserve);
    dyn_.emplace(buf_);  // reads straight into the string that is then moved into the channel
    read_more();
  }

  void read_more() {
    ws_.async_read_some(*dyn_, kFrameReserve, [self = shared_from_this()](beast::error_code ec,
                                                                          size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec) return finish();
    if (buf_.size() > opts_->max_message_bytes) {
      spdlog::warn("channel {}: writer sent a message larger than max_message_bytes ({} bytes); "
                   "closing with code 1009", ch_->id(), opts_->max_message_bytes);
      dyn_.reset();
      buf_ = std::string();
      ws_.async_close(websocket::close_code::too_big,
                      [self = shared_from_this()](beast::error_code) { self->finish(); });
      return;
    }
    if (!ws_.is_message_done()) return read_more();
    dyn_.reset();
    // Do not let a small frame pin the 64 KiB reserved for reading it while it is buffered.
    if (buf_.capacity() - buf_.size() > 4096) buf_.shrink_to_fit();
    const bool room = ch_->push(engine::ChannelFrame{std::move(buf_), ws_.got_binary()});
    buf_ = std::string();
    if (ch_->reader_gone) return stop();
    if (room) return do_read();
    // Paused until on_space: no operation is pending, so hold ourselves alive meanwhile.
    paused_ = true;
    self_ = shared_from_this();
  }

  void resume() {
    if (!paused_ || done_) return;
    paused_ = false;
    auto keep = std::move(self_);
    do_read();
  }

  // The reader left: nothing more will be delivered, so the writer is told to stop.
  void stop() {
    if (done_) return;
    paused_ = false;
    ws_.async_close(websocket::close_code::going_away,
                    [self = shared_from_this()](beast::error_code) { self->finish(); });
    self_.reset();
  }

  void finish() {
    if (done_) return;
    done_ = true;
    auto keep = std::move(self_);
    ch_->on_space = nullptr;
    ch_->on_reader_gone = nullptr;
    ch_->close_writer();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).close(ignored);
  }

  asio::any_io_executor executor_;
  websocket::stream<asio::BufferedSocket> ws_;
  std::shared_ptr<engine::Channel> ch_;
  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_;
  std::string buf_;
  std::optional<asio::dynamic_string_buffer<char, std::char_traits<char>, std::allocator<char>>>
      dyn_;
  bool paused_ = false;
  bool done_ = false;
  std::shared_ptr<ChannelWriter> self_;  // set only while paused
};

class ChannelReader : public std::enable_shared_from_this<ChannelReader> {
 public:
  ChannelReader(tcp::socket&& s, std::shared_ptr<engine::Channel> ch, engine::Engine& eng,
                std::shared_ptr<const ListenerOptions> opts)
      : ws_(std::move(s)), ch_(std::move(ch)), engine_(eng), opts_(std::move(opts)) {}

  void start(http::request<http::empty_body>&& req) {
    configure(ws_, *opts_, true);
    ws_.next_layer().set_owner(weak_from_this());
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return self->gone();
      std::weak_ptr<ChannelReader> weak = self;
      self->ch_->on_data = [weak] {
        if (auto s = weak.lock()) s->pump();
      };
      self->ws_.next_layer().on_written = [weak] {
        if (auto s = weak.lock()) s->pump();
      };
      self->do_read();
      self->pump();
    });
  }

 private:
  // The reader's own frames are ignored, but a read must be pending to see Close and Pings.
  void do_read() {
    ws_.async_read(ignored_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->gone();
      self->ignored_.consume(self->ignored_.size());
      self->do_read();
    });
  }

  // Moves frames from the channel to the socket, at most kReaderInFlight bytes ahead of what
  // the reader has taken; FrameSocket::on_written calls back here as the socket drains.
  void pump() {
    if (done_ || !ws_.is_open()) return;
    FrameSocket& out = ws_.next_layer();
    while (!ch_->empty() && out.queued_bytes() < kReaderInFlight) {
      engine::ChannelFrame f = ch_->pop();
      out.send_frame(f.binary, std::make_shared<const std::string>(std::move(f.data)));
    }
    if (ch_->empty() && ch_->writer_closed()) {  // the Close frame queues behind the data
      done_ = true;
      engine_.channels().remove(ch_->id());
      ws_.async_close(websocket::close_code::normal,
                      [self = shared_from_this()](beast::error_code) { self->shutdown(); });
    }
  }

  void gone() {
    if (!done_) {
      done_ = true;
      ch_->reader_gone = true;
      if (ch_->on_reader_gone) ch_->on_reader_gone();
      engine_.channels().remove(ch_->id());
    }
    shutdown();
  }

  void shutdown() {
    ch_->on_data = nullptr;
    ws_.next_layer().on_written = nullptr;
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).close(ignored);
  }

  websocket::stream<FrameSocket> ws_;
  std::shared_ptr<engine::Channel> ch_;
  engine::Engine& engine_;
  std::shared_ptr<const ListenerOptions> opts_;
  beast::flat_buffer ignored_;
  bool done_ = false;
};

}  // namespace

void start_channel_relay(tcp::socket&& socket, http::request<http::empty_body>&& req,
                         std::shared_ptr<engine::Channel> channel, bool writer,
                         engine::Engine& engine, std::shared_ptr<const ListenerOptions> opts) {
  if (writer) {
    channel->writer_taken = true;
    std::make_shared<ChannelWriter>(std::move(socket), std::move(channel), engine, std::move(opts))
        ->start(std::move(req));
  } else {
    channel->reader_taken = true;
    std::make_shared<ChannelReader>(std::move(socket), std::move(channel), engine, std::move(opts))
        ->start(std::move(req));
  }
}

}  // namespace iii::net
