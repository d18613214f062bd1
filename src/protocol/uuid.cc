#include "protocol/uuid.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace iii::protocol {
namespace {
// Hex digit values, 0xff for anything else: one load per character (ids are parsed on every
// result and decoded frame).
constexpr std::array<uint8_t, 256> kHexValue = [] {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 0xff;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<size_t>(c)] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[static_cast<size_t>(c)] = static_cast<uint8_t>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c) t[static_cast<size_t>(c)] = static_cast<uint8_t>(c - 'A' + 10);
  return t;
}();

// Reads 16 hex digits at p (skipping the hyphens at the given offsets); false on a non-digit.
inline bool read_half(const char* p, const uint8_t* offsets, uint64_t& out) {
  uint64_t v = 0;
  uint8_t bad = 0;
  for (int i = 0; i < 16; ++i) {
    const uint8_t d = kHexValue[static_cast<unsigned char>(p[offsets[i]])];
    bad |= d;
    v = (v << 4) | (d & 0xf);
  }
  out = v;
  return !(bad & 0xf0);
}
}  // namespace

std::optional<Uuid> Uuid::parse(std::string_view s) {
  if (s.size() == 45 && (s.substr(0, 9) == "urn:uuid:" || s.substr(0, 9) == "URN:UUID:"))
    s.remove_prefix(9);
  if (s.size() == 38 && s.front() == '{' && s.back() == '}') s = s.substr(1, 36);
  // Character offsets of the 32 digits: 8-4-4-4-12 with hyphens, or plain.
  static constexpr uint8_t kHyphenated[32] = {0,  1,  2,  3,  4,  5,  6,  7,  9,  10, 11,
                                              12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25,
                                              26, 27, 28, 29, 30, 31, 32, 33, 34, 35};
  static constexpr uint8_t kPlain[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                         11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                         22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  const uint8_t* offsets;
  if (s.size() == 36) {
    if (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return std::nullopt;
    offsets = kHyphenated;
  } else if (s.size() == 32) {
    offsets = kPlain;
  } else {
    return std::nullopt;
  }
  Uuid u;
  if (!read_half(s.data(), offsets, u.hi) || !read_half(s.data(), offsets + 16, u.lo))
    return std::nullopt;
  return u;
}

Uuid Uuid::random_v4() {
  // Random bytes are drawn in blocks: one RAND_bytes call per 16 ids keeps generation off the
  // profile of the invocation path.
  struct Block {
    unsigned char bytes[256];
    size_t used = sizeof(bytes);
  };
  thread_local Block block;
  if (block.used == sizeof(block.bytes)) {
    if (RAND_bytes(block.bytes, sizeof(block.bytes)) != 1) {
      std::fputs("fatal: the OS random number generator failed\n", stderr);
      std::abort();
    }
    block.used = 0;
  }
  Uuid u;
  std::memcpy(&u.hi, block.bytes + block.used, 8);
  std::memcpy(&u.lo, block.bytes + block.used + 8, 8);
  OPENSSL_cleanse(block.bytes + block.used, 16);  // a used id is not left lying in memory
  block.used += 16;
  u.hi = (u.hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  u.lo = (u.lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  return u;
}

bool secrets_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {
// Two hex digits per byte from a table, straight into place: every invocation formats one id
// (and, traced, a traceparent), and the digit-by-digit loop cost ~900 instructions.
constexpr auto kHexPairs = [] {
  constexpr char kHex[] = "0123456789abcdef";
  std::array<char, 512> t{};
  for (int b = 0; b < 256; ++b) {
    t[2 * b] = kHex[b >> 4];
    t[2 * b + 1] = kHex[b & 0xf];
  }
  return t;
}();
}  // namespace

void write_hex64(char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) {
    const unsigned byte = static_cast<unsigned>(v & 0xff);
    out[2 * i] = kHexPairs[2 * byte];
    out[2 * i + 1] = kHexPairs[2 * byte + 1];
  }
}

std::string Uuid::str() const {
  std::string out(36, '-');
  char* d = out.data();
  int pos = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) ++pos;  // the hyphens stay
    const uint64_t half = i < 8 ? hi : lo;
    const unsigned byte = static_cast<unsigned>((half >> ((7 - (i % 8)) * 8)) & 0xff);
    d[pos] = kHexPairs[2 * byte];
    d[pos + 1] = kHexPairs[2 * byte + 1];
    pos += 2;
  }
  return out;
}

}  // namespace iii::protocol
