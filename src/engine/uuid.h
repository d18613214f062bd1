// 128-bit ids: parsing of the UUID forms the protocol accepts, and fast v4 generation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace iii::engine {

struct Uuid {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const Uuid&, const Uuid&) = default;
  std::string str() const;  // lower-case hyphenated form

  static std::optional<Uuid> parse(std::string_view s);  // hyphenated, simple, braced, urn
  static Uuid random_v4();                               // not thread-safe: engine thread only
};

struct UuidHash {
  size_t operator()(const Uuid& u) const noexcept { return u.hi ^ (u.lo * 0x9e3779b97f4a7c15ULL); }
};

}  // namespace iii::engine
