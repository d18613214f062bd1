#include "protocol/uuid.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace iii::protocol {
namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<Uuid> Uuid::parse(std::string_view s) {
  if (s.size() == 45 && (s.substr(0, 9) == "urn:uuid:" || s.substr(0, 9) == "URN:UUID:"))
    s.remove_prefix(9);
  if (s.size() == 38 && s.front() == '{' && s.back() == '}') s = s.substr(1, 36);
  const bool hyphenated = s.size() == 36;
  if (!hyphenated && s.size() != 32) return std::nullopt;
  Uuid u;
  int digits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (hyphenated && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (s[i] != '-') return std::nullopt;
      continue;
    }
    int v = hex_value(s[i]);
    if (v < 0) return std::nullopt;
    uint64_t& half = digits < 16 ? u.hi : u.lo;
    half = (half << 4) | static_cast<uint64_t>(v);
    ++digits;
  }
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

std::string Uuid::str() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  int pos = 0;
  for (int i = 0; i < 32; ++i) {
    if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
    const uint64_t half = i < 16 ? hi : lo;
    const int shift = (15 - (i % 16)) * 4;
    out[pos++] = kHex[(half >> shift) & 0xf];
  }
  return out;
}

}  // namespace iii::protocol
