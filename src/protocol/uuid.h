// 128-bit ids: parsing of the UUID forms the protocol accepts, and v4 generation from the OS
// CSPRNG. The one UUID implementation of the engine and the C++ SDK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iii::protocol {

struct Uuid {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const Uuid&, const Uuid&) = default;
  std::string str() const;  // lower-case hyphenated form

  static std::optional<Uuid> parse(std::string_view s);  // hyphenated, simple, braced, urn
  // Version 4 from OpenSSL's CSPRNG (seeded by the OS, reseeded after fork). Every id the
  // engine hands out (workers, invocations, channels and their access keys) comes from here,
  // so seeing one id tells nothing about another. Thread-safe. Aborts if the CSPRNG fails,
  // which OpenSSL only reports when the OS has no entropy source at all.
  static Uuid random_v4();
};

struct UuidHash {
  size_t operator()(const Uuid& u) const noexcept { return u.hi ^ (u.lo * 0x9e3779b97f4a7c15ULL); }
};

// Writes `v` as 16 lower-case hex digits at `out` (W3C trace and span ids, UUID halves).
void write_hex64(char* out, uint64_t v);

// Compares two secrets (e.g. channel access keys) in time that depends only on their lengths.
bool secrets_equal(std::string_view a, std::string_view b);

}  // namespace iii::protocol
