// Reads WebSocket frames (RFC 6455 §5) straight out of the caller's own read buffer, and
// unmasks each payload where it lies, so the bytes can be used or sent on without being copied.
// A pure state machine: the caller does the I/O and feeds it whatever the socket gave. The
// engine's channel relay parses its writers' (client) frames with it, and the C++ SDK's channel
// ends parse the engine's (server) frames: a client's frames must be masked, a server's must not.
//
// Data frames are reported as pieces of their message. A piece is a whole frame when the
// buffer holds one; when the caller asks to flush (its buffer is full) the part of a frame that
// is there is reported at once. A relay forwards each piece as one frame of a fragmented
// message, which RFC 6455 §5.4 allows an intermediary to do when no extension is in use (none
// is ever negotiated here). Control frames are reported whole. Every protocol violation is an
// error carrying the close code to answer with. UTF-8 checking is Beast's; unmasking is
// net/ws_mask.h's.
#pragma once

#include <array>
#include <boost/beast/websocket/detail/utf8_checker.hpp>
#include <cstddef>
#include <cstdint>

namespace iii::net {

class FrameParser {
 public:
  enum class Kind : uint8_t { kNeedMore, kData, kPing, kPong, kClose, kError };

  struct Item {
    Kind kind = Kind::kNeedMore;
    size_t consumed = 0;   // bytes of the input used (also for kNeedMore: a header taken)
    char* data = nullptr;  // kData/kPing/kPong: the payload, unmasked; kClose: the reason
    size_t size = 0;
    bool text = false;            // kData: the message is text (else binary)
    bool first = false;           // kData: the first piece of its message
    bool last = false;            // kData: the last piece of its message
    uint16_t code = 0;            // kClose: the peer's code (1005 when it sent none); kError: ours
    const char* error = nullptr;  // kError: what was wrong, for the log
  };

  // Whose frames are parsed.
  enum class From : uint8_t { kClient, kServer };

  // `max_message_bytes` bounds a whole message (0: no bound).
  FrameParser(From from, uint64_t max_message_bytes)
      : from_client_(from == From::kClient), max_message_(max_message_bytes) {}

  // The next item in [begin, end). With `flush`, a data frame whose payload is cut off by `end`
  // is reported up to `end` instead of waiting for the rest. After kError or kClose the parser
  // must not be called again.
  Item next(char* begin, char* end, bool flush);

  // A data message has begun and its last frame has not been read yet.
  bool in_message() const { return in_message_; }

  // The largest number of bytes a kNeedMore can leave unconsumed: a full control frame.
  static constexpr size_t kMaxPending = 14 + 125;

 private:
  Item data_piece(char* begin, char* end, bool flush, size_t header);
  Item fail(uint16_t code, const char* why);

  bool from_client_;
  uint64_t max_message_;
  // The data frame being read.
  bool in_payload_ = false;
  bool fin_ = false;
  bool masked_ = false;
  uint64_t remaining_ = 0;
  std::array<unsigned char, 4> key_{};  // rotated as bytes are unmasked
  // The message being read.
  bool in_message_ = false;
  bool text_ = false;
  bool reported_ = false;  // a piece of this message has been reported
  uint64_t message_bytes_ = 0;
  boost::beast::websocket::detail::utf8_checker utf8_;
};

}  // namespace iii::net
