// Fuzzes net::FrameParser, in both modes (a client's masked frames, a server's unmasked
// ones), differentially: the same bytes are parsed once from one buffer holding all of them
// and once the way the channel relay reads a socket (a bounded buffer filled a few bytes at a
// time, pieces flushed when it runs low on room, the unparsed rest moved to a fresh buffer).
// Both must report the same messages, control frames and outcome, every item must stay inside
// the bytes it was given, and a flushed kNeedMore must leave at most kMaxPending bytes.
//
// Input: byte 0 picks the mode (bit 0) and max_message_bytes (bits 1-2), byte 1 the buffer
// size, byte 2 the read size; the rest is the wire.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "net/frame_parser.h"

// Beast's UTF-8 checker is compiled in beast_impl.cc in the engine; the fuzz build has only
// this one piece of Beast's compiled code.
#include <boost/beast/websocket/detail/utf8_checker.ipp>

namespace {

using iii::net::FrameParser;
using Kind = FrameParser::Kind;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "frame_parser_fuzz: %s\n", what);
  std::abort();
}

struct Events {
  std::vector<std::string> log;  // completed messages and control frames, in order
  std::string partial;           // the message being reassembled
  bool in_message = false;
  bool text = false;
  Kind end = Kind::kNeedMore;  // kNeedMore (input ran out), kClose or kError
  uint16_t code = 0;
};

// Records one item; false when parsing must stop. [begin, end) is what next() was given.
bool record(Events& ev, const FrameParser::Item& it, const char* begin, const char* end) {
  if (it.consumed > static_cast<size_t>(end - begin)) fail("consumed more than it was given");
  if (it.data && (it.data < begin || it.data + it.size > end)) fail("an item outside its input");
  switch (it.kind) {
    case Kind::kNeedMore:
      return false;
    case Kind::kData:
      if (it.first == ev.in_message) fail("`first` does not match the message state");
      if (it.first) {
        ev.in_message = true;
        ev.text = it.text;
        ev.partial.clear();
      } else if (it.text != ev.text) {
        fail("a piece changed the message's type");
      }
      ev.partial.append(it.data, it.size);
      if (it.last) {
        ev.log.push_back((ev.text ? "text:" : "binary:") + ev.partial);
        ev.in_message = false;
      }
      return true;
    case Kind::kPing:
    case Kind::kPong:
      if (it.size > 125) fail("a control payload over 125 bytes");
      ev.log.push_back((it.kind == Kind::kPing ? "ping:" : "pong:") +
                       std::string(it.data, it.size));
      return true;
    case Kind::kClose:
    case Kind::kError:
      ev.end = it.kind;
      ev.code = it.code;
      if (it.kind == Kind::kClose)
        ev.log.push_back("close:" + std::to_string(it.code) + ":" +
                         (it.data ? std::string(it.data, it.size) : std::string()));
      else if (!it.error || it.code == 0)
        fail("an error without a reason or a code");
      return false;
  }
  return false;
}

Events parse_whole(FrameParser::From from, uint64_t max, std::string wire) {
  FrameParser p(from, max);
  Events ev;
  char* b = wire.data();
  char* e = b + wire.size();
  for (;;) {
    const FrameParser::Item it = p.next(b, e, false);
    if (!record(ev, it, b, e)) break;
    b += it.consumed;
  }
  return ev;
}

Events parse_chunked(FrameParser::From from, uint64_t max, const std::string& wire, size_t capacity,
                     size_t step) {
  FrameParser p(from, max);
  Events ev;
  std::vector<char> block(capacity);
  size_t filled = 0, parsed = 0, offset = 0;
  for (;;) {
    const bool low_on_room = capacity - filled <= FrameParser::kMaxPending;
    const FrameParser::Item it = p.next(block.data() + parsed, block.data() + filled, low_on_room);
    const char* b = block.data() + parsed;
    if (!record(ev, it, b, block.data() + filled)) {
      if (it.kind != Kind::kNeedMore) break;
      parsed += it.consumed;
      if (low_on_room) {
        const size_t pending = filled - parsed;
        if (pending > FrameParser::kMaxPending) fail("a flushed kNeedMore left too much");
        std::vector<char> next(capacity);  // a fresh buffer, as the relay takes one
        std::memcpy(next.data(), block.data() + parsed, pending);
        block.swap(next);
        filled = pending;
        parsed = 0;
      }
      if (offset == wire.size()) break;
      const size_t n = std::min({step, capacity - filled, wire.size() - offset});
      std::memcpy(block.data() + filled, wire.data() + offset, n);
      filled += n;
      offset += n;
      continue;
    }
    parsed += it.consumed;
  }
  return ev;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const auto from = (data[0] & 1) ? FrameParser::From::kServer : FrameParser::From::kClient;
  static constexpr uint64_t kMax[] = {0, 16, 300, 1 << 20};
  const uint64_t max = kMax[(data[0] >> 1) & 3];
  const size_t capacity = FrameParser::kMaxPending + 1 + data[1] * 2u;
  const size_t step = 1 + data[2];
  const std::string wire(reinterpret_cast<const char*>(data) + 3, size - 3);

  const Events whole = parse_whole(from, max, wire);
  const Events chunked = parse_chunked(from, max, wire, capacity, step);

  if (whole.end == chunked.end && whole.code == chunked.code) {
    if (whole.log != chunked.log) fail("the same outcome with different messages");
    return 0;
  }
  // Flushed pieces are checked for UTF-8 as they come, so a text frame cut off by the end of
  // the input can fail in pieces while the whole-buffer parse still waits for the rest of it.
  if (whole.end == Kind::kNeedMore && chunked.end == Kind::kError && chunked.code == 1007) {
    if (whole.log != chunked.log) fail("an early UTF-8 error with different messages");
    return 0;
  }
  fail("different outcomes");
}
