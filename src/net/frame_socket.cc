#include "net/frame_socket.h"

namespace iii::net {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr size_t kMaxBatchBuffers = 64;         // Asio gathers at most 64 buffers per sendmsg
constexpr size_t kMaxBatchBytes = 1024 * 1024;  // bytes handed to one write
constexpr size_t kAsioWriteCap = 65536;         // asio::transfer_all's bytes per write_some

// Every byte, with no 64 KiB limit per sendmsg (asio::transfer_all has one).
struct TransferAllUnbounded {
  size_t operator()(const error_code& ec, size_t) const {
    return ec ? 0 : std::numeric_limits<size_t>::max();
  }
};

}  // namespace

void FrameSocket::send_frame(bool binary, Payload payload) {
  const char* data = payload->data();
  const size_t size = payload->size();
  send_fragment(binary, true, true, std::move(payload), data, size);
}

void FrameSocket::send_fragment(bool binary, bool first, bool last,
                                std::shared_ptr<const void> owner, const char* data, size_t size) {
  if (failed_) return;
  Entry e;
  const unsigned opcode = first ? (binary ? 0x2 : 0x1) : 0x0;  // else a continuation
  e.header_size = static_cast<uint8_t>(write_frame_header(e.header.data(), opcode, last, size));
  e.bytes = e.header_size + size;
  e.frame = true;
  e.owner = std::move(owner);
  e.data = data;
  e.size = size;
  if (!writing_ && !held_ && queue_.empty()) {
    // Nothing is ahead of this frame: write it now, without an asynchronous operation and its
    // completion (most frames go out like this); only what the socket does not take is queued.
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(e.header.data(), e.header_size),
                                                 asio::buffer(e.data, e.size)};
    error_code ec;
    const size_t written = socket_.write_some(bufs, ec);
    if (!ec && written == e.bytes) return;
    if (ec && ec != asio::error::would_block && ec != asio::error::try_again) return fail();
    e.skip = ec ? 0 : written;
  }
  push(std::move(e));
}

void FrameSocket::push_beast(Entry e) {
  if (failed_) {  // completes later: never from inside the initiating call
    asio::post(socket_.get_executor(),
               [done = std::move(e.done)] { done(asio::error::broken_pipe, 0); });
    return;
  }
  if (completing_beast_) {
    // asio::async_write hands over at most 64 KiB per call and asks for the rest from inside
    // the handler of the part just written. That continuation of Beast's frame goes first,
    // ahead of session frames queued meanwhile; on_write starts the next write. (Beast's
    // frames here are control frames and the upgrade response, far below 64 KiB.)
    queued_bytes_ += e.bytes;
    queue_.push_front(std::move(e));
    return;
  }
  push(std::move(e));
}

// The connection is unusable: drop what is queued and close the socket, which ends the
// session's pending read, and the session cleans up from there.
void FrameSocket::fail() {
  failed_ = true;
  queued_bytes_ = 0;
  error_code ignored;
  socket_.close(ignored);
}

void FrameSocket::push(Entry e) {
  queued_bytes_ += e.bytes - e.skip;
  queue_.push_back(std::move(e));
  if (!held_) start_write();
}

void FrameSocket::release() {
  held_ = false;
  if (writing_ || failed_ || queue_.empty()) return;
  // The frames at the front leave now in one non-blocking gather write, as a single frame
  // does in send_fragment; the rest (and any of Beast's writes) go through start_write.
  gather_.clear();
  for (const Entry& e : queue_) {
    if (!e.frame || gather_.size() + 2 > kMaxBatchBuffers) break;
    append_gather(e);
  }
  if (!gather_.empty()) {
    error_code ec;
    size_t written = socket_.write_some(gather_, ec);
    if (ec) written = 0;  // a real error is met again, and handled, by start_write's write
    queued_bytes_ -= written;
    while (written > 0) {
      Entry& e = queue_.front();
      const size_t left = e.bytes - e.skip;
      if (written < left) {
        e.skip += written;
        break;
      }
      written -= left;
      queue_.pop_front();
    }
  }
  start_write();
}

void FrameSocket::append_gather(const Entry& e) {
  if (e.frame) {
    // `skip` bytes of it went out in a direct write already.
    if (e.skip < e.header_size)
      gather_.emplace_back(e.header.data() + e.skip, e.header_size - e.skip);
    const size_t from = e.skip > e.header_size ? e.skip - e.header_size : 0;
    if (from < e.size) gather_.emplace_back(e.data + from, e.size - from);
  } else {
    gather_.insert(gather_.end(), e.beast.begin(), e.beast.end());
  }
}

void FrameSocket::start_write() {
  if (writing_ || failed_ || queue_.empty()) return;
  writing_ = true;
  in_flight_.clear();
  size_t buffers = 0, bytes = 0;
  while (!queue_.empty()) {
    const Entry& e = queue_.front();
    const size_t n = e.frame ? 2 : e.beast.size();
    if (!in_flight_.empty() && (buffers + n > kMaxBatchBuffers || bytes + e.bytes > kMaxBatchBytes))
      break;
    buffers += n;
    bytes += e.bytes - e.skip;
    in_flight_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  // The buffers point into the entries, so they are taken once in_flight_ stops moving.
  gather_.clear();
  for (const Entry& e : in_flight_) append_gather(e);
  asio::async_write(socket_, gather_, TransferAllUnbounded{},
                    [this, keep = owner_.lock()](error_code ec, size_t) { on_write(ec); });
}

void FrameSocket::on_write(error_code ec) {
  writing_ = false;
  std::vector<Entry> done = std::move(in_flight_);
  in_flight_.clear();
  for (const Entry& e : done) queued_bytes_ -= e.bytes - e.skip;
  if (ec) {
    for (Entry& e : queue_) done.push_back(std::move(e));
    queue_.clear();
    fail();
  }
  for (Entry& e : done) {
    if (!e.done) continue;
    completing_beast_ = !ec && e.bytes >= kAsioWriteCap;  // only such a write can continue
    e.done(ec, ec ? 0 : e.bytes);
    completing_beast_ = false;
  }
  if (failed_) return;
  start_write();
  if (on_written) on_written();
}

}  // namespace iii::net
