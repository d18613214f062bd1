// The layer under each engine-side WebSocket stream (`websocket::stream<FrameSocket>`): a TCP
// socket whose writes all go through one FIFO queue. Two kinds of write enter it:
//
//  * the session's outgoing messages, given as a payload; the layer puts the (unmasked,
//    server-side) frame header in front of it, and
//  * Beast's own writes: the upgrade response, Ping, Pong and Close.
//
// Whatever is queued when the socket can take more goes out in one gather `sendmsg`: a burst
// of messages to one connection costs one syscall, and a 64 KiB message is no longer split in
// two by `asio::async_write`'s 64 KiB-per-call cap, which Beast's own message writes are
// subject to. Beast's writes are reported complete only when every byte of them is on the
// socket, so a session frame can never land inside one of Beast's frames. Internal to src/net;
// everything runs on the connection's (single) engine thread.
#pragma once

#include <array>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "net/ws_frame_header.h"

namespace iii::net {

class FrameSocket {
 public:
  using tcp = boost::asio::ip::tcp;
  using executor_type = tcp::socket::executor_type;
  using next_layer_type = tcp::socket;
  using Payload = std::shared_ptr<const std::string>;

  // The socket is put in non-blocking mode for send_frame's direct writes (Asio's asynchronous
  // operations work the same either way).
  explicit FrameSocket(tcp::socket&& socket) : socket_(std::move(socket)) {
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored);
  }
  FrameSocket(const FrameSocket&) = delete;
  FrameSocket& operator=(const FrameSocket&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  tcp::socket& next_layer() noexcept { return socket_; }

  template <class MutableBufferSequence, class ReadHandler>
  auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
    ++reads_;
    return socket_.async_read_some(buffers, std::forward<ReadHandler>(handler));
  }

  // Socket reads started so far (Beast may complete a read from its own buffer without one).
  uint64_t reads() const { return reads_; }

  // Beast's writes (see the file comment).
  template <class ConstBufferSequence, class WriteHandler>
  auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
    return boost::asio::async_initiate<WriteHandler, void(boost::system::error_code, size_t)>(
        [this](auto&& h, const ConstBufferSequence& bufs) {
          Entry e;
          for (boost::asio::const_buffer b : boost::beast::buffers_range_ref(bufs))
            if (b.size() > 0) e.beast.push_back(b);
          e.bytes = boost::asio::buffer_size(bufs);
          using H = std::decay_t<decltype(h)>;
          auto held = std::make_shared<H>(std::move(h));
          auto ex = boost::asio::get_associated_executor(*held, socket_.get_executor());
          e.done = [held, ex](boost::system::error_code ec, size_t n) {
            boost::asio::dispatch(ex, [held, ec, n] { (*held)(ec, n); });
          };
          push_beast(std::move(e));
        },
        handler, buffers);
  }

  // Queues one complete message as a single unmasked frame. Callers check
  // `websocket::stream::is_open()` first: nothing may follow a Close frame.
  void send_frame(bool binary, Payload payload);

  // Queues one data frame of [data, data + size), which `owner` keeps alive until it is
  // written: a whole message (`first` and `last`), or one fragment of one (RFC 6455 §5.4).
  // Fragments of one message must not be interleaved with other messages.
  void send_fragment(bool binary, bool first, bool last, std::shared_ptr<const void> owner,
                     const char* data, size_t size);

  // Between hold() and release(), frames are only queued; release() writes them together in
  // one gather sendmsg (what the socket does not take goes on asynchronously).
  void hold() { held_ = true; }
  void release();

  // Bytes queued or being written (session frames and Beast's writes).
  size_t queued_bytes() const { return queued_bytes_; }
  // The object that owns this socket; a write in progress keeps it alive until it completes.
  void set_owner(std::weak_ptr<void> owner) { owner_ = std::move(owner); }
  // Called after each completed write while the socket is healthy (e.g. to refill the queue).
  std::function<void()> on_written;

 private:
  struct Entry {
    std::array<unsigned char, kMaxServerFrameHeader> header{};
    uint8_t header_size = 0;
    bool frame = false;                            // a session frame, or
    std::vector<boost::asio::const_buffer> beast;  // one of Beast's writes
    std::shared_ptr<const void> owner;             // keeps a session frame's bytes alive
    const char* data = nullptr;
    size_t size = 0;
    size_t bytes = 0;  // header + payload, or Beast's bytes
    size_t skip = 0;   // bytes of a session frame already written by the direct write
    std::function<void(boost::system::error_code, size_t)> done;  // Beast's handler
  };

  void push_beast(Entry e);
  void push(Entry e);
  void fail();
  void start_write();
  void append_gather(const Entry& e);
  void on_write(boost::system::error_code ec);

  tcp::socket socket_;
  std::weak_ptr<void> owner_;
  std::deque<Entry> queue_;
  std::vector<Entry> in_flight_;
  std::vector<boost::asio::const_buffer> gather_;
  size_t queued_bytes_ = 0;
  uint64_t reads_ = 0;
  bool writing_ = false;
  bool held_ = false;
  bool completing_beast_ = false;  // inside one of Beast's handlers (see push_beast)
  bool failed_ = false;
};

// Beast closes a stream through teardown() on its next layer, found by argument-dependent
// lookup: forward to the TCP socket's.
inline void teardown(boost::beast::role_type role, FrameSocket& s, boost::system::error_code& ec) {
  boost::beast::websocket::teardown(role, s.next_layer(), ec);
}

template <class TeardownHandler>
void async_teardown(boost::beast::role_type role, FrameSocket& s, TeardownHandler&& handler) {
  boost::beast::websocket::async_teardown(role, s.next_layer(),
                                          std::forward<TeardownHandler>(handler));
}

}  // namespace iii::net
