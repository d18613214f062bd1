#include "protocol/json_writer.h"

#include <array>
#include <bit>
#include <boost/json/serializer.hpp>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <optional>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define III_JSON_SSE2 1
#endif

namespace iii::protocol {
namespace {

namespace json = boost::json;

// Boost escapes exactly these bytes (serializer.ipp `esc` table); everything else, including
// DEL and invalid UTF-8, is copied through.
constexpr bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

// SWAR test: does any of the 8 bytes need escaping? Exact as a yes/no answer.
inline bool needs_escape8(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighs = 0x8080808080808080ull;
  const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHighs;
  const uint64_t q = x ^ (kOnes * '"');
  const uint64_t b = x ^ (kOnes * '\\');
  return (below_space | ((q - kOnes) & ~q & kHighs) | ((b - kOnes) & ~b & kHighs)) != 0;
}

// First byte in [p, end) that needs escaping, or end.
const char* find_escape_portable(const char* p, const char* end) {
  while (end - p >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    if (needs_escape8(word)) {
      for (const char* q = p; q < p + 8; ++q)
        if (needs_escape(static_cast<unsigned char>(*q))) return q;
    }
    p += 8;
  }
  for (; p < end; ++p)
    if (needs_escape(static_cast<unsigned char>(*p))) return p;
  return end;
}

#ifdef III_JSON_SSE2
// Bit i is set when byte i of the 16 needs escaping (the test Boost itself uses).
inline unsigned escape_mask16(__m128i v) {
  const __m128i hit = _mm_or_si128(
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
      _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v));  // v <= 0x1f, unsigned
  return static_cast<unsigned>(_mm_movemask_epi8(hit));
}

// Same as find_escape_portable, 16 bytes per step.
const char* find_escape_sse2(const char* p, const char* end) {
  while (end - p >= 16) {
    const unsigned mask = escape_mask16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    if (mask != 0) return p + std::countr_zero(mask);
    p += 16;
  }
  return find_escape_portable(p, end);
}
#endif

constexpr auto kNeedsEscape = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = needs_escape(static_cast<unsigned char>(c));
  return t;
}();

// Writes the escape for `c` (one that needs_escape) at `d`, at most 6 bytes; returns the end.
char* write_escape(char* d, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  *d++ = '\\';
  switch (c) {
    case '"':
      *d++ = '"';
      return d;
    case '\\':
      *d++ = '\\';
      return d;
    case '\b':
      *d++ = 'b';
      return d;
    case '\f':
      *d++ = 'f';
      return d;
    case '\n':
      *d++ = 'n';
      return d;
    case '\r':
      *d++ = 'r';
      return d;
    case '\t':
      *d++ = 't';
      return d;
    default:
      d[0] = 'u';
      d[1] = '0';
      d[2] = '0';
      d[3] = kHex[c >> 4];
      d[4] = kHex[c & 0xF];
      return d + 5;
  }
}

using FindEscape = const char* (*)(const char*, const char*);

#ifdef III_JSON_SSE2
constexpr FindEscape kFindEscape = find_escape_sse2;
#else
constexpr FindEscape kFindEscape = find_escape_portable;
#endif

// Buffers small tokens on the stack and appends them to the string in chunks: std::string's
// push_back/append are out-of-line calls in libstdc++, which made per-node cost dominate for
// trees of small values. Large spans bypass the buffer and are appended in one copy.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void value(const json::value& v);
  void string(std::string_view s, FindEscape find = kFindEscape);
  // Must be called once at the end (not from a destructor: append may throw).
  void flush() {
    out_.append(buf_, static_cast<size_t>(pos_ - buf_));
    pos_ = buf_;
  }

 private:
  static constexpr size_t kBufSize = 2048;
  static constexpr size_t kNumberRoom = 64;  // > any int64/uint64/double rendering
  static constexpr size_t kShortString = 32;

  void put(char c) {
    if (pos_ == end_) flush();
    *pos_++ = c;
  }
  void write(const char* p, size_t n) {
    if (n > static_cast<size_t>(end_ - pos_)) {
      flush();
      if (n >= kBufSize) {
        out_.append(p, n);
        return;
      }
    }
    std::memcpy(pos_, p, n);
    pos_ += n;
  }
  void room(size_t n) {
    if (static_cast<size_t>(end_ - pos_) < n) flush();
  }
  void number(const json::value& v);

  std::string& out_;
  char buf_[kBufSize];
  char* pos_ = buf_;
  char* const end_ = buf_ + kBufSize;
  std::optional<json::serializer> doubles_;  // built on the first double, then reused
};

void Writer::string(std::string_view s, FindEscape find) {
  if (s.size() <= kShortString) {
    // Keys and small values: a byte loop straight into the buffer beats the bulk scan's
    // call and copy overhead. Worst case every byte becomes a 6-byte \u00XX escape. The
    // cursor is a local because stores through char* could alias pos_ itself.
    room(2 + 6 * kShortString);
    char* d = pos_;
    *d++ = '"';
    const char* p = s.data();
    const char* const end = p + s.size();
#ifdef III_JSON_SSE2
    // Whole 16-byte blocks without escapes are copied as blocks (ids, times, names).
    while (end - p >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if (escape_mask16(v) != 0) break;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d), v);
      d += 16;
      p += 16;
    }
#endif
    for (; p < end; ++p) {
      const auto c = static_cast<unsigned char>(*p);
      if (kNeedsEscape[c]) [[unlikely]]
        d = write_escape(d, c);
      else
        *d++ = static_cast<char>(c);
    }
    *d++ = '"';
    pos_ = d;
    return;
  }
  if (s.size() >= kBufSize) {
    // One allocation for the whole string (reserve grows geometrically, so repeated calls
    // stay amortised).
    flush();
    if (out_.capacity() - out_.size() < s.size() + 2) out_.reserve(out_.size() + s.size() + 2);
  }
  put('"');
  const char* p = s.data();
  const char* const end = p + s.size();
  for (;;) {
    const char* hit = find(p, end);
    write(p, static_cast<size_t>(hit - p));
    if (hit == end) break;
    room(6);
    pos_ = write_escape(pos_, static_cast<unsigned char>(*hit));
    p = hit + 1;
  }
  put('"');
}

void Writer::number(const json::value& v) {
  room(kNumberRoom);
  switch (v.kind()) {
    case json::kind::int64:
      pos_ = std::to_chars(pos_, end_, v.get_int64()).ptr;
      return;
    case json::kind::uint64:
      pos_ = std::to_chars(pos_, end_, v.get_uint64()).ptr;
      return;
    default: {
      // Boost's own formatter ("3E0", "1E-1", "-0E0", Infinity/NaN handling) keeps doubles
      // byte-identical; the serializer writes straight into our buffer.
      if (!doubles_) doubles_.emplace();
      doubles_->reset(&v);
      while (!doubles_->done()) {
        room(kNumberRoom);
        pos_ += doubles_->read(pos_, static_cast<size_t>(end_ - pos_)).size();
      }
    }
  }
}

void Writer::value(const json::value& v) {
  switch (v.kind()) {
    case json::kind::string: {
      const auto& s = v.get_string();
      string(std::string_view(s.data(), s.size()));
      return;
    }
    case json::kind::object: {
      put('{');
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) put(',');
        first = false;
        string(std::string_view(kv.key().data(), kv.key().size()));
        put(':');
        value(kv.value());
      }
      put('}');
      return;
    }
    case json::kind::array: {
      put('[');
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) put(',');
        first = false;
        value(e);
      }
      put(']');
      return;
    }
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      number(v);
      return;
    case json::kind::bool_:
      if (v.get_bool())
        write("true", 4);
      else
        write("false", 5);
      return;
    case json::kind::null:
      write("null", 4);
      return;
  }
}

std::size_t size_hint(const json::value& v, int& budget) {
  if (--budget < 0) return 0;
  switch (v.kind()) {
    case json::kind::string:
      return v.get_string().size() + 2;
    case json::kind::object: {
      std::size_t n = 2;
      for (const auto& kv : v.get_object()) {
        if (budget <= 0) break;
        n += kv.key().size() + 4 + size_hint(kv.value(), budget);
      }
      return n;
    }
    case json::kind::array: {
      std::size_t n = 2;
      for (const auto& e : v.get_array()) {
        if (budget <= 0) break;
        n += 1 + size_hint(e, budget);
      }
      return n;
    }
    default:
      return 8;
  }
}

}  // namespace

namespace detail {
void append_json_string_portable(std::string& out, std::string_view s) {
  Writer w(out);
  w.string(s, find_escape_portable);
  w.flush();
}
}  // namespace detail

void append_json_string(std::string& out, std::string_view s) {
  Writer w(out);
  w.string(s);
  w.flush();
}

void append_json(std::string& out, const json::value& v) {
  Writer w(out);
  w.value(v);
  w.flush();
}

std::size_t json_size_hint(const json::value& v) {
  int budget = 64;  // bounds the walk: the hint is for reserve(), not an exact size
  return size_hint(v, budget);
}

}  // namespace iii::protocol
