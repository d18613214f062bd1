#include "net/frame_parser.h"

#include <algorithm>
#include <boost/beast/websocket/detail/frame.hpp>
#include <cstring>

#include "net/ws_mask.h"

namespace iii::net {

namespace wsd = boost::beast::websocket::detail;

namespace {

constexpr uint8_t kContinuation = 0x0, kText = 0x1, kBinary = 0x2;
constexpr uint8_t kClose = 0x8, kPing = 0x9, kPong = 0xA;
constexpr uint16_t kProtocolError = 1002, kBadPayload = 1007, kTooBig = 1009, kNoStatus = 1005;

void unmask(char* p, size_t n, MaskKey& key) {
  if (n > 0) mask_inplace(p, n, key);
}

}  // namespace

FrameParser::Item FrameParser::fail(uint16_t code, const char* why) {
  Item it;
  it.kind = Kind::kError;
  it.code = code;
  it.error = why;
  return it;
}

FrameParser::Item FrameParser::next(char* begin, char* end, bool flush) {
  size_t used = 0;
  for (;;) {
    if (in_payload_) {
      Item it = data_piece(begin + used, end, flush, used);
      if (it.kind == Kind::kNeedMore && !in_payload_) {
        used = it.consumed;  // an empty non-final frame: go on with the next header
        continue;
      }
      return it;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(begin + used);
    const size_t avail = static_cast<size_t>(end - (begin + used));
    Item more;
    more.consumed = used;
    if (avail < 2) return more;
    const bool fin = p[0] & 0x80;
    const uint8_t opcode = p[0] & 0x0F;
    const bool masked = p[1] & 0x80;
    const uint8_t len7 = p[1] & 0x7F;
    if (p[0] & 0x70) return fail(kProtocolError, "reserved bits set (no extension is in use)");
    if (masked != from_client_)
      return fail(kProtocolError,
                  from_client_ ? "a client frame is not masked" : "a server frame is masked");
    const bool control = opcode & 0x8;
    if (control) {
      if (opcode != kClose && opcode != kPing && opcode != kPong)
        return fail(kProtocolError, "unknown control opcode");
      if (!fin) return fail(kProtocolError, "a fragmented control frame");
      if (len7 > 125) return fail(kProtocolError, "a control frame longer than 125 bytes");
    } else {
      if (opcode != kContinuation && opcode != kText && opcode != kBinary)
        return fail(kProtocolError, "unknown data opcode");
      if (opcode == kContinuation && !in_message_)
        return fail(kProtocolError, "a continuation frame with no message to continue");
      if (opcode != kContinuation && in_message_)
        return fail(kProtocolError, "a new message inside a fragmented one");
    }
    const size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    const size_t header = 2 + ext + (masked ? 4 : 0);
    if (avail < header) return more;
    uint64_t len = len7;
    if (ext > 0) {
      len = 0;
      for (size_t i = 0; i < ext; ++i) len = (len << 8) | p[2 + i];
      // RFC 6455 §5.2: the minimal number of bytes must be used, and the top bit must be 0.
      if ((ext == 2 && len < 126) || (ext == 8 && (len <= 0xFFFF || (len >> 63) != 0)))
        return fail(kProtocolError, "a frame length that is not minimally encoded");
    }
    std::array<unsigned char, 4> key{};
    if (masked) std::memcpy(key.data(), p + 2 + ext, 4);

    if (control) {
      if (avail < header + len) return more;  // control frames are taken whole
      char* payload = begin + used + header;
      if (masked) unmask(payload, len, key);
      Item it;
      it.consumed = used + header + len;
      if (opcode != kClose) {
        it.kind = opcode == kPing ? Kind::kPing : Kind::kPong;
        it.data = payload;
        it.size = len;
        return it;
      }
      it.kind = Kind::kClose;
      it.code = kNoStatus;
      if (len == 1) return fail(kProtocolError, "a close frame with a 1-byte payload");
      if (len >= 2) {
        const auto* c = reinterpret_cast<const unsigned char*>(payload);
        it.code = static_cast<uint16_t>((c[0] << 8) | c[1]);
        if (!wsd::is_valid_close_code(it.code))
          return fail(kProtocolError, "an invalid close code");
        it.data = payload + 2;
        it.size = len - 2;
        wsd::utf8_checker reason;
        if (!reason.write(reinterpret_cast<const uint8_t*>(it.data), it.size) || !reason.finish())
          return fail(kBadPayload, "a close reason that is not UTF-8");
      }
      return it;
    }

    const uint64_t before = opcode == kContinuation ? message_bytes_ : 0;
    if (max_message_ > 0 && (len > max_message_ || before > max_message_ - len))
      return fail(kTooBig, "a message larger than max_message_bytes");
    if (opcode != kContinuation) {
      in_message_ = true;
      text_ = opcode == kText;
      reported_ = false;
      utf8_.reset();
    }
    message_bytes_ = before + len;
    fin_ = fin;
    remaining_ = len;
    masked_ = masked;
    key_ = key;
    in_payload_ = true;
    used += header;
  }
}

// The payload bytes of the current data frame available at `p`, as one piece. `used` bytes
// before `p` were taken by this call already (headers).
FrameParser::Item FrameParser::data_piece(char* p, char* end, bool flush, size_t used) {
  const uint64_t avail = static_cast<uint64_t>(end - p);
  const size_t take = static_cast<size_t>(std::min(avail, remaining_));
  Item it;
  it.consumed = used;
  if (take < remaining_ && (!flush || take == 0)) return it;  // wait for the rest
  if (masked_) unmask(p, take, key_);
  remaining_ -= take;
  const bool last = remaining_ == 0 && fin_;
  if (remaining_ == 0) in_payload_ = false;
  it.consumed = used + take;
  if (take == 0 && !last) return it;  // an empty non-final frame carries nothing to forward
  if (text_ &&
      (!utf8_.write(reinterpret_cast<const uint8_t*>(p), take) || (last && !utf8_.finish())))
    return fail(kBadPayload, "a text message that is not UTF-8");
  it.kind = Kind::kData;
  it.data = p;
  it.size = take;
  it.text = text_;
  it.first = !reported_;
  it.last = last;
  reported_ = true;
  if (last) in_message_ = false;
  return it;
}

}  // namespace iii::net
