#include "protocol/uuid.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
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

// Two hex digits per byte from a table, straight into place: every invocation formats one id,
// and the digit-by-digit loop cost ~900 instructions.
std::string Uuid::str() const {
  static constexpr auto kPairs = [] {
    constexpr char kHex[] = "0123456789abcdef";
    std::array<char, 512> t{};
    for (int b = 0; b < 256; ++b) {
      t[2 * b] = kHex[b >> 4];
      t[2 * b + 1] = kHex[b & 0xf];
    }
    return t;
  }();
  std::string out(36, '-');
  char* d = out.data();
  int pos = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) ++pos;  // the hyphens stay
    const uint64_t half = i < 8 ? hi : lo;
    const unsigned byte = static_cast<unsigned>((half >> ((7 - (i % 8)) * 8)) & 0xff);
    d[pos] = kPairs[2 * byte];
    d[pos + 1] = kPairs[2 * byte + 1];
    pos += 2;
  }
  return out;
}

}  // namespace iii::protocol
