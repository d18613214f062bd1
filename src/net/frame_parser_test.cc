// FrameParser on hand-built client frames: every length encoding, input split at every
// byte, pieces reported early (flush) with the mask carried across them, control frames inside
// fragmented messages, and each protocol violation with the close code it answers with; and on
// server frames, which are not masked.
#include "net/frame_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net/ws_frame_header.h"

namespace iii::net {
namespace {

using Kind = FrameParser::Kind;

// A masked client frame. `len_bytes` forces a length encoding (0, 2 or 8 extra bytes).
std::string client_frame(uint8_t opcode, bool fin, const std::string& payload,
                         std::array<uint8_t, 4> key = {0x37, 0xfa, 0x21, 0x3d}, int len_bytes = -1,
                         bool masked = true, uint8_t rsv = 0) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | rsv | opcode));
  const uint64_t n = payload.size();
  if (len_bytes < 0) len_bytes = n < 126 ? 0 : n <= 0xFFFF ? 2 : 8;
  const char mask_bit = masked ? static_cast<char>(0x80) : 0;
  if (len_bytes == 0) {
    f.push_back(static_cast<char>(mask_bit | n));
  } else if (len_bytes == 2) {
    f.push_back(static_cast<char>(mask_bit | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n));
  } else {
    f.push_back(static_cast<char>(mask_bit | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(n >> (8 * i)));
  }
  if (masked) f.append(reinterpret_cast<const char*>(key.data()), 4);
  for (size_t i = 0; i < n; ++i)
    f.push_back(static_cast<char>(payload[i] ^ (masked ? key[i % 4] : 0)));
  return f;
}

std::string pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((seed * 31 + i * 7) % 251);
  return s;
}

struct Received {
  std::vector<std::pair<bool, std::string>> messages;  // (text, bytes), reassembled
  std::vector<std::string> pings, pongs;
  int pieces = 0;
  bool closed = false;
  uint16_t code = 0;  // of the Close or the error
  std::string close_reason;
  bool error = false;
};

// Feeds `wire` the way the relay does: `step` bytes at a time into one buffer, parsing after
// each read; with `flush`, a frame cut off by the end of the input is reported at once.
Received feed(const std::string& wire, size_t step, bool flush, uint64_t max = 0,
              FrameParser::From from = FrameParser::From::kClient) {
  FrameParser parser(from, max);
  std::vector<char> buf(wire.begin(), wire.end());
  Received r;
  std::string current;
  bool in_message = false;
  size_t filled = 0, parsed = 0;
  while (!r.closed && !r.error) {
    if (filled == buf.size()) break;
    filled = std::min(buf.size(), filled + step);
    for (;;) {
      auto it = parser.next(buf.data() + parsed, buf.data() + filled, flush);
      parsed += it.consumed;
      if (it.kind == Kind::kNeedMore) break;
      if (it.kind == Kind::kData) {
        ++r.pieces;
        EXPECT_EQ(it.first, !in_message);
        in_message = true;
        current.append(it.data, it.size);
        if (it.last) {
          r.messages.emplace_back(it.text, std::move(current));
          current.clear();
          in_message = false;
        }
      } else if (it.kind == Kind::kPing) {
        r.pings.emplace_back(it.data, it.size);
      } else if (it.kind == Kind::kPong) {
        r.pongs.emplace_back(it.data, it.size);
      } else if (it.kind == Kind::kClose) {
        r.closed = true;
        r.code = it.code;
        r.close_reason.assign(it.data ? it.data : "", it.size);
        break;
      } else {
        EXPECT_NE(it.error, nullptr);
        r.error = true;
        r.code = it.code;
        break;
      }
    }
  }
  return r;
}

TEST(FrameParser, ReadsEveryLengthEncodingWhole) {
  for (size_t n : {0, 1, 125, 126, 127, 65535, 65536, 70000}) {
    const std::string payload = pattern(n, static_cast<int>(n));
    const std::string wire = client_frame(0x2, true, payload);
    FrameParser parser(FrameParser::From::kClient, 0);
    std::vector<char> buf(wire.begin(), wire.end());
    auto it = parser.next(buf.data(), buf.data() + buf.size(), false);
    ASSERT_EQ(it.kind, Kind::kData) << n;
    EXPECT_EQ(it.consumed, wire.size());
    EXPECT_TRUE(it.first && it.last && !it.text);
    EXPECT_EQ(std::string(it.data, it.size), payload) << n;
  }
}

TEST(FrameParser, WaitsForAWholeFrameUnlessFlushed) {
  const std::string payload = pattern(1000, 3);
  const std::string wire = client_frame(0x2, true, payload);
  std::vector<char> buf(wire.begin(), wire.end());
  FrameParser parser(FrameParser::From::kClient, 0);
  // The header is taken; the partial payload waits.
  auto it = parser.next(buf.data(), buf.data() + 500, false);
  EXPECT_EQ(it.kind, Kind::kNeedMore);
  EXPECT_EQ(it.consumed, 8u);  // 2 + 2 length bytes + 4 mask bytes
  // Flushed: the 492 bytes there are reported as the first piece of the message.
  it = parser.next(buf.data() + 8, buf.data() + 500, true);
  ASSERT_EQ(it.kind, Kind::kData);
  EXPECT_TRUE(it.first);
  EXPECT_FALSE(it.last);
  EXPECT_EQ(std::string(it.data, it.size), payload.substr(0, 492));
  it = parser.next(buf.data() + 500, buf.data() + buf.size(), false);
  ASSERT_EQ(it.kind, Kind::kData);
  EXPECT_FALSE(it.first);
  EXPECT_TRUE(it.last);
  EXPECT_EQ(std::string(it.data, it.size), payload.substr(492));
}

// A text message in three fragments with a Ping between them, a binary message, an empty text
// message, an empty non-final frame, a Pong and a Close: the same result however the input is
// cut, with and without early pieces (which unmask across cuts at any offset of the key).
TEST(FrameParser, SameMessagesWhereverTheInputIsCut) {
  const std::string part1 = "h\xC3\xA9llo ", part2 = "w\xC3", part3 = "\xB6rld";  // ö split
  std::string wire = client_frame(0x1, false, part1) + client_frame(0x9, true, "ping!") +
                     client_frame(0x0, false, part2, {9, 8, 7, 6}) +
                     client_frame(0x0, true, part3, {1, 2, 3, 4});
  const std::string big = pattern(300, 1);
  wire += client_frame(0x2, true, big, {0xde, 0xad, 0xbe, 0xef});
  wire += client_frame(0x1, true, "");
  wire += client_frame(0x2, false, "") + client_frame(0x0, true, "tail");
  wire += client_frame(0xA, true, "pong") + client_frame(0x8, true, close_payload(1000, "bye"));
  for (size_t step = 1; step <= wire.size(); ++step) {
    for (bool flush : {false, true}) {
      SCOPED_TRACE("step " + std::to_string(step) + (flush ? " flush" : ""));
      Received r = feed(wire, step, flush);
      ASSERT_FALSE(r.error);
      ASSERT_TRUE(r.closed);
      EXPECT_EQ(r.code, 1000);
      EXPECT_EQ(r.close_reason, "bye");
      ASSERT_EQ(r.messages.size(), 4u);
      EXPECT_EQ(r.messages[0], std::make_pair(true, part1 + part2 + part3));
      EXPECT_EQ(r.messages[1], std::make_pair(false, big));
      EXPECT_EQ(r.messages[2], std::make_pair(true, std::string()));
      EXPECT_EQ(r.messages[3], std::make_pair(false, std::string("tail")));
      EXPECT_EQ(r.pings, std::vector<std::string>{"ping!"});
      EXPECT_EQ(r.pongs, std::vector<std::string>{"pong"});
      if (!flush) {
        EXPECT_EQ(r.pieces, 6);  // one per frame that carries bytes or a FIN
      }
    }
  }
}

// A server's frames carry no mask: the same messages, whole and cut at every byte; a masked
// server frame, or an unmasked one where a client's is expected, is a protocol error.
TEST(FrameParser, ReadsUnmaskedServerFrames) {
  const auto server_frame = [](uint8_t opcode, bool fin, const std::string& payload) {
    return client_frame(opcode, fin, payload, {}, -1, /*masked=*/false);
  };
  const std::string big = pattern(70000, 5);
  const std::string wire =
      server_frame(0x2, false, big.substr(0, 40000)) + server_frame(0x9, true, "hb") +
      server_frame(0x0, true, big.substr(40000)) + server_frame(0x1, true, "caf\xC3\xA9") +
      server_frame(0x8, true, close_payload(1011, "cut"));
  for (size_t step : {size_t{1}, size_t{7}, size_t{4096}, wire.size()}) {
    for (bool flush : {false, true}) {
      SCOPED_TRACE("step " + std::to_string(step) + (flush ? " flush" : ""));
      Received r = feed(wire, step, flush, 0, FrameParser::From::kServer);
      ASSERT_FALSE(r.error);
      ASSERT_TRUE(r.closed);
      EXPECT_EQ(r.code, 1011);
      EXPECT_EQ(r.close_reason, "cut");
      ASSERT_EQ(r.messages.size(), 2u);
      EXPECT_EQ(r.messages[0], std::make_pair(false, big));
      EXPECT_EQ(r.messages[1], std::make_pair(true, std::string("caf\xC3\xA9")));
      EXPECT_EQ(r.pings, std::vector<std::string>{"hb"});
    }
  }
  const std::string masked = client_frame(0x2, true, "x");
  Received r = feed(masked, masked.size(), false, 0, FrameParser::From::kServer);
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.code, 1002);
  r = feed(server_frame(0x2, true, "x"), 3, false, 0, FrameParser::From::kClient);
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.code, 1002);
}

TEST(FrameParser, CloseWithoutACodeReportsNoStatus) {
  Received r = feed(client_frame(0x8, true, ""), 64, false);
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.code, 1005);
}

struct BadInput {
  const char* name;
  std::string wire;
  uint16_t code;
};

TEST(FrameParser, RefusesEachProtocolViolationWithItsCloseCode) {
  const std::string start = client_frame(0x1, false, "abc");
  const std::vector<BadInput> cases = {
      {"unmasked", client_frame(0x2, true, "x", {}, -1, false), 1002},
      {"reserved bit", client_frame(0x2, true, "x", {1, 2, 3, 4}, -1, true, 0x40), 1002},
      {"data opcode 3", client_frame(0x3, true, "x"), 1002},
      {"control opcode 0xB", client_frame(0xB, true, "x"), 1002},
      {"fragmented ping", client_frame(0x9, false, "x"), 1002},
      {"126-byte ping", client_frame(0x9, true, std::string(126, 'p')), 1002},
      {"continuation first", client_frame(0x0, true, "x"), 1002},
      {"text inside a fragmented text", start + client_frame(0x1, true, "x"), 1002},
      {"16-bit length for 100 bytes", client_frame(0x2, true, std::string(100, 'x'), {}, 2), 1002},
      {"64-bit length for 1000 bytes", client_frame(0x2, true, std::string(1000, 'x'), {}, 8),
       1002},
      {"1-byte close", client_frame(0x8, true, "x"), 1002},
      {"close code 1005", client_frame(0x8, true, close_payload(1005)), 1002},
      {"close code 999", client_frame(0x8, true, close_payload(999)), 1002},
      {"close reason not UTF-8", client_frame(0x8, true, close_payload(1000, "\xff")), 1007},
      {"text not UTF-8", client_frame(0x1, true, "ab\xc3"), 1007},
      {"fragmented text not UTF-8", start + client_frame(0x0, true, "\x80"), 1007},
  };
  for (const auto& c : cases) {
    for (bool flush : {false, true}) {
      Received r = feed(c.wire, c.wire.size(), flush);
      EXPECT_TRUE(r.error) << c.name;
      EXPECT_EQ(r.code, c.code) << c.name;
    }
  }
  // The top bit of a 64-bit length must be clear.
  std::string huge = client_frame(0x2, true, std::string(70000, 'x'));
  huge[2] = static_cast<char>(0x80);
  Received r = feed(huge, huge.size(), false);
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.code, 1002);
}

TEST(FrameParser, BoundsWholeMessagesNotFrames) {
  // 60 + 60 bytes in two fragments exceed 100 at the second header, before its payload.
  const std::string wire = client_frame(0x2, false, std::string(60, 'a')) +
                           client_frame(0x0, true, std::string(60, 'b'));
  Received r = feed(wire, wire.size() - 60, false, 100);
  EXPECT_TRUE(r.error);
  EXPECT_EQ(r.code, 1009);
  EXPECT_EQ(r.pieces, 1);
  // Exactly at the limit is fine; the count starts again with the next message.
  const std::string ok = client_frame(0x2, false, std::string(50, 'a')) +
                         client_frame(0x0, true, std::string(50, 'b')) +
                         client_frame(0x1, true, std::string(100, 'c'));
  r = feed(ok, ok.size(), false, 100);
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.messages.size(), 2u);
}

}  // namespace
}  // namespace iii::net
