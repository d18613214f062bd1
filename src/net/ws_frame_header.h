// RFC 6455 §5.2 frame headers and §5.5.1 Close payloads, for the few places that write frames
// themselves: FrameSocket (the engine's unmasked server frames), the channel writer relay's
// Pong and Close, and the C++ SDK's channel ends (masked client frames). Header-only, so the
// SDK can use it too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace iii::net {

constexpr size_t kMaxServerFrameHeader = 10;
constexpr size_t kMaxClientFrameHeader = 14;

// Writes the header of one frame with `size` payload bytes to `out` and returns its length.
// With `mask_key` (4 bytes) the frame is marked masked and the key follows the length.
inline size_t write_frame_header(unsigned char* out, unsigned opcode, bool fin, uint64_t size,
                                 const unsigned char* mask_key = nullptr) {
  size_t h = 0;
  out[h++] = static_cast<unsigned char>((fin ? 0x80 : 0x00) | opcode);
  const unsigned char masked = mask_key ? 0x80 : 0x00;
  if (size < 126) {
    out[h++] = static_cast<unsigned char>(masked | size);
  } else if (size <= 0xFFFF) {
    out[h++] = masked | 126;
    out[h++] = static_cast<unsigned char>(size >> 8);
    out[h++] = static_cast<unsigned char>(size);
  } else {
    out[h++] = masked | 127;
    for (int i = 7; i >= 0; --i) out[h++] = static_cast<unsigned char>(size >> (8 * i));
  }
  if (mask_key) {
    std::memcpy(out + h, mask_key, 4);
    h += 4;
  }
  return h;
}

// The payload of a Close frame: the status code (big-endian), then the UTF-8 reason.
inline std::string close_payload(uint16_t code, std::string_view reason = {}) {
  std::string p;
  p.reserve(2 + reason.size());
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p.append(reason);
  return p;
}

}  // namespace iii::net
