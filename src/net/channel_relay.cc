#include "net/channel_relay.h"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <cstring>
#include <deque>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "net/frame_parser.h"
#include "net/frame_socket.h"
#include "net/ws_frame_header.h"

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

// Frames handed to the reader's socket at a time; whatever is queued goes out in one sendmsg.
constexpr size_t kReaderInFlight = 512 * 1024;
// Bytes of the reader's own frames read at a time (and dropped).
constexpr size_t kReaderReadChunk = 16 * 1024;

template <class NextLayer>
void configure(websocket::stream<NextLayer>& ws, const ListenerOptions& opts, bool pings) {
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(10);
  // A paused writer has no read pending, so only the reader side runs the liveness check.
  const bool idle = pings && opts.idle_timeout.count() > 0;
  t.idle_timeout =
      idle ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(opts.idle_timeout)
           : websocket::stream_base::none();
  t.keep_alive_pings = idle;
  ws.set_option(t);
  ws.read_message_max(0);  // enforced by the writer (see ws_session.cc for why)
  ws.auto_fragment(false);
}

// The writer's socket is read into blocks of this pool. A block stays alive while a frame read
// into it is queued in the channel or being written to the reader, and then comes back for
// another read: no allocation, page fault or zero-fill per frame.
class BlockPool : public std::enable_shared_from_this<BlockPool> {
 public:
  static constexpr size_t kBlockBytes = 256 * 1024;  // about four of the SDKs' 64 KiB frames
  static constexpr size_t kMaxIdle = 8;

  std::shared_ptr<char> get() {
    std::unique_ptr<char[]> block;
    if (idle_.empty()) {
      block = std::make_unique_for_overwrite<char[]>(kBlockBytes);
    } else {
      block = std::move(idle_.back());
      idle_.pop_back();
    }
    return std::shared_ptr<char>(block.release(), [pool = weak_from_this()](char* p) {
      auto self = pool.lock();
      if (self && self->idle_.size() < kMaxIdle)
        self->idle_.emplace_back(p);
      else
        delete[] p;
    });
  }

 private:
  std::vector<std::unique_ptr<char[]>> idle_;
};

// The writer side. Beast answers the upgrade; the frames that follow are read by
// FrameParser straight out of the pool's blocks and unmasked in place, and each piece
// goes into the channel pointing into its block. The reader's socket then sends it from there:
// between the two sockets the bytes are touched once, by the unmasking.
class ChannelWriter : public std::enable_shared_from_this<ChannelWriter> {
 public:
  ChannelWriter(tcp::socket&& s, std::shared_ptr<engine::Channel> ch,
                std::shared_ptr<const ListenerOptions> opts)
      : socket_(std::move(s)),
        ch_(std::move(ch)),
        opts_(std::move(opts)),
        parser_(FrameParser::From::kClient, opts_->max_message_bytes),
        pool_(std::make_shared<BlockPool>()),
        timer_(socket_.get_executor()) {}

  void start(HttpRequest&& req) {
    auto ws = std::make_shared<websocket::stream<tcp::socket>>(std::move(socket_));
    configure(*ws, *opts_, false);
    ws->async_accept(req, [self = shared_from_this(), ws](beast::error_code ec) {
      self->socket_ = std::move(ws->next_layer());
      // The stream goes once its operation has fully returned.
      asio::post(self->socket_.get_executor(), [ws] {});
      if (ec) return self->finish();
      std::weak_ptr<ChannelWriter> weak = self;
      self->ch_->on_space = [weak] {
        if (auto s = weak.lock()) s->resume();
      };
      self->ch_->on_reader_gone = [weak] {
        if (auto s = weak.lock()) s->stop();
      };
      self->read_more();
    });
  }

 private:
  static constexpr size_t kMinRead = 16 * 1024;  // a block with less room left is replaced
  static constexpr size_t kMaxQueuedControl = 16;
  static constexpr auto kCloseTimeout = std::chrono::seconds(5);

  bool low_on_room() const { return BlockPool::kBlockBytes - filled_ < kMinRead; }

  void read_more() {
    if (!block_ || low_on_room()) next_block();
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(block_.get() + filled_, BlockPool::kBlockBytes - filled_),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read(ec, n); });
  }

  // Moves what the parser has not taken yet (at most a partial header or control frame: a
  // block low on room is always flushed first) to the start of a fresh block.
  void next_block() {
    auto next = pool_->get();
    const size_t pending = filled_ - parsed_;
    BOOST_ASSERT(pending <= FrameParser::kMaxPending);
    if (pending > 0) std::memcpy(next.get(), block_.get() + parsed_, pending);
    block_ = std::move(next);
    filled_ = pending;
    parsed_ = 0;
  }

  void on_read(beast::error_code ec, size_t n) {
    reading_ = false;
    if (closing_) return drain(ec);
    if (ec) return finish();  // gone without a Close: whatever it sent is delivered, then EOF
    filled_ += n;
    parse();
  }

  void parse() {
    const bool flush = low_on_room();
    // The reader is woken once, for all that this pass pushes (see Channel::publish).
    struct Publish {
      engine::Channel& ch;
      ~Publish() { ch.publish(); }
    } publish{*ch_};
    for (;;) {
      if (closing_ || done_) return;
      if (ch_->reader_gone) return stop();
      if (ch_->full()) return pause();
      const FrameParser::Item it =
          parser_.next(block_.get() + parsed_, block_.get() + filled_, flush);
      parsed_ += it.consumed;
      switch (it.kind) {
        case FrameParser::Kind::kNeedMore:
          return read_more();
        case FrameParser::Kind::kData: {
          engine::ChannelFrame f;
          f.owner = block_;
          f.data = it.data;
          f.size = it.size;
          f.binary = !it.text;
          f.first = it.first;
          f.last = it.last;
          ch_->push(std::move(f));
          break;
        }
        case FrameParser::Kind::kPing:
          send_control(0xA, std::string_view(it.data, it.size));
          break;
        case FrameParser::Kind::kPong:
          break;
        case FrameParser::Kind::kClose:  // answered with the same code (1000 for none)
          // A Close in the middle of a message leaves the reader an incomplete message.
          return close(it.code == 1005 ? 1000 : it.code,
                       parser_.in_message() ? engine::Channel::WriterEnd::kBrokenOff
                                            : engine::Channel::WriterEnd::kFinished);
        case FrameParser::Kind::kError:
          spdlog::warn("channel {}: writer sent {}; closing with code {}", ch_->id(), it.error,
                       it.code);
          return close(it.code, engine::Channel::WriterEnd::kBrokenOff);
      }
    }
  }

  // The channel is full: nothing is read until on_space. No operation is pending meanwhile, so
  // the writer holds itself alive.
  void pause() {
    paused_ = true;
    self_ = shared_from_this();
  }

  // on_space comes from inside the reader's pump; parsing from a fresh handler keeps the
  // frames pushed now behind the one the reader is sending.
  void resume() {
    if (!paused_ || done_) return;
    paused_ = false;
    asio::post(socket_.get_executor(), [self = std::move(self_)] { self->parse(); });
  }

  // The reader left: nothing more will be delivered, so the writer is told to stop.
  void stop() { close(1001, engine::Channel::WriterEnd::kBrokenOff); }

  void send_control(uint8_t opcode, std::string_view payload) {
    if (close_queued_) return;  // nothing follows our Close
    if (opcode != 0x8 && control_out_.size() >= kMaxQueuedControl) return;  // not reading
    unsigned char header[kMaxServerFrameHeader];
    const size_t h = write_frame_header(header, opcode, true, payload.size());
    std::string frame(reinterpret_cast<const char*>(header), h);
    frame.append(payload);
    control_out_.push_back(std::move(frame));
    close_queued_ = opcode == 0x8;
    if (!writing_) write_control();
  }

  void write_control() {
    writing_ = true;
    asio::async_write(socket_, asio::buffer(control_out_.front()),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        const bool close_sent =
                            self->control_out_.front()[0] == static_cast<char>(0x88);
                        self->control_out_.pop_front();
                        if (self->done_) return;
                        if (ec) {  // the pending read sees the broken connection too
                          if (self->closing_) self->finish();
                          return;
                        }
                        if (close_sent) {
                          beast::error_code ignored;
                          self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        if (!self->control_out_.empty()) self->write_control();
                      });
  }

  // Ends the writer's side with a Close frame (after any Pong queued before it). The TCP
  // connection is then shut down for sending and read to its end, everything read discarded,
  // until the client closes it or kCloseTimeout passes.
  void close(uint16_t code, engine::Channel::WriterEnd how) {
    if (closing_ || done_) return;
    closing_ = true;
    paused_ = false;
    auto keep = std::move(self_);
    release_channel(how);
    send_control(0x8, close_payload(code));
    timer_.expires_after(kCloseTimeout);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->finish();
    });
    if (!reading_) drain({});
  }

  void drain(beast::error_code ec) {
    if (ec || done_) return finish();
    reading_ = true;
    socket_.async_read_some(
        asio::buffer(discard_),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec, 0); });
  }

  // No more frames will come: the reader gets what is queued, then its Close.
  void release_channel(engine::Channel::WriterEnd how) {
    ch_->on_space = nullptr;
    ch_->on_reader_gone = nullptr;
    ch_->close_writer(how);
  }

  void finish() {
    if (done_) return;
    done_ = true;
    auto keep = std::move(self_);
    // Without our Close exchange first, the writer broke off (a no-op after close()).
    release_channel(engine::Channel::WriterEnd::kBrokenOff);
    beast::error_code ignored;
    timer_.cancel();
    socket_.close(ignored);
  }

  tcp::socket socket_;
  std::shared_ptr<engine::Channel> ch_;
  std::shared_ptr<const ListenerOptions> opts_;
  FrameParser parser_;
  std::shared_ptr<BlockPool> pool_;
  std::shared_ptr<char> block_;          // being read into
  size_t filled_ = 0;                    // bytes of block_ read from the socket
  size_t parsed_ = 0;                    // bytes of block_ taken by the parser
  std::deque<std::string> control_out_;  // Pongs and our Close, one write at a time
  std::array<char, 4096> discard_{};
  asio::steady_timer timer_;
  bool reading_ = false;
  bool writing_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool close_queued_ = false;
  bool done_ = false;
  std::shared_ptr<ChannelWriter> self_;  // set only while paused
};

// The reader's Close says whether it got everything (the official SDKs end the stream on any
// Close; the original sends one without a code in every case).
websocket::close_reason reader_close(engine::Channel::WriterEnd how) {
  switch (how) {
    case engine::Channel::WriterEnd::kFinished:
      return websocket::close_reason(websocket::close_code::normal);
    case engine::Channel::WriterEnd::kShutdown:
      return websocket::close_reason(websocket::close_code::going_away, "engine shutting down");
    case engine::Channel::WriterEnd::kBrokenOff:
      break;
  }
  return websocket::close_reason(websocket::close_code::internal_error,
                                 "the writer ended without finishing");
}

class ChannelReader : public std::enable_shared_from_this<ChannelReader> {
 public:
  ChannelReader(tcp::socket&& s, std::shared_ptr<engine::Channel> ch, engine::Engine& eng,
                std::shared_ptr<const ListenerOptions> opts)
      : ws_(std::move(s)), ch_(std::move(ch)), engine_(eng), opts_(std::move(opts)) {}

  void start(HttpRequest&& req) {
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
  // What it sends is dropped as it arrives, and a message longer than max_message_bytes (no
  // reader needs to send one) ends the reader with 1009, as for the writer.
  void do_read() {
    ws_.async_read_some(ignored_, kReaderReadChunk,
                        [self = shared_from_this()](beast::error_code ec, size_t n) {
                          if (ec) return self->gone();
                          self->ignored_.consume(self->ignored_.size());
                          self->message_bytes_ += n;
                          if (self->message_bytes_ > self->opts_->max_message_bytes)
                            return self->refuse_oversized();
                          if (self->ws_.is_message_done()) self->message_bytes_ = 0;
                          self->do_read();
                        });
  }

  // Closes with 1009; Beast's close discards the rest of the message until the client's Close.
  void refuse_oversized() {
    spdlog::warn(
        "channel {}: reader sent a message larger than max_message_bytes ({} bytes); closing "
        "with code 1009",
        ch_->id(), opts_->max_message_bytes);
    ignored_ = beast::flat_buffer();
    if (done_) return;  // already closing
    done_ = true;
    ch_->drop_reader();
    engine_.channels().remove(ch_->id());
    ch_->on_data = nullptr;
    ws_.async_close(websocket::close_reason(websocket::close_code::too_big, "message too big"),
                    [self = shared_from_this()](beast::error_code) { self->shutdown(); });
  }

  // Moves frames from the channel to the socket, at most kReaderInFlight bytes ahead of what
  // the reader has taken; FrameSocket::on_written calls back here as the socket drains.
  void pump() {
    if (done_ || !ws_.is_open()) return;
    FrameSocket& out = ws_.next_layer();
    for (;;) {
      out.hold();  // what is taken here leaves in one sendmsg
      while (!ch_->empty() && out.queued_bytes() < kReaderInFlight) {
        engine::ChannelFrame f = ch_->pop();
        out.send_fragment(f.binary, f.first, f.last, std::move(f.owner), f.data, f.size);
      }
      const bool bounded = !ch_->empty();
      out.release();
      // Stopped at the bound: if the socket took it all at once there is no write to call back
      // when it completes, so take more now; otherwise on_written will.
      if (!bounded || out.queued_bytes() >= kReaderInFlight) break;
    }
    if (ch_->empty() && ch_->writer_closed()) {  // the Close frame queues behind the data
      done_ = true;
      engine_.channels().remove(ch_->id());
      ws_.async_close(reader_close(ch_->writer_end()),
                      [self = shared_from_this()](beast::error_code) { self->shutdown(); });
    }
  }

  void gone() {
    if (!done_) {
      done_ = true;
      ch_->drop_reader();
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
  size_t message_bytes_ = 0;  // of the message the reader is sending
  bool done_ = false;
};

}  // namespace

void start_channel_relay(tcp::socket&& socket, HttpRequest&& req,
                         std::shared_ptr<engine::Channel> channel, bool writer,
                         engine::Engine& engine, std::shared_ptr<const ListenerOptions> opts) {
  if (writer) {
    channel->writer_taken = true;
    std::make_shared<ChannelWriter>(std::move(socket), std::move(channel), std::move(opts))
        ->start(std::move(req));
  } else {
    channel->reader_taken = true;
    std::make_shared<ChannelReader>(std::move(socket), std::move(channel), engine, std::move(opts))
        ->start(std::move(req));
  }
}

}  // namespace iii::net
