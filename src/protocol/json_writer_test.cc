// The writer's contract is "same bytes as boost::json::serialize", so every test compares
// against Boost rather than against hand-written expectations.
#include "protocol/json_writer.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace iii::protocol {
namespace {

namespace json = boost::json;

std::string boost_string(std::string_view s) { return json::serialize(json::string_view(s)); }

std::string fast(const json::value& v) {
  std::string out;
  append_json(out, v);
  return out;
}

// Checks both string writers (SIMD where available, and the portable one).
void expect_string_matches(std::string_view s) {
  const std::string want = boost_string(s);
  std::string simd;
  append_json_string(simd, s);
  EXPECT_EQ(simd, want) << "input size " << s.size();
  std::string portable;
  detail::append_json_string_portable(portable, s);
  EXPECT_EQ(portable, want) << "input size " << s.size();
  // As a value too, which is the path payloads take.
  EXPECT_EQ(fast(json::value(json::string_view(s))), want);
}

TEST(JsonWriterString, EmptyAndPlain) {
  expect_string_matches("");
  expect_string_matches("a");
  expect_string_matches("hello, world / with a slash and DEL \x7f");
}

TEST(JsonWriterString, EverySingleByte) {
  // Covers all control chars (short escapes and \u00XX), quote, backslash, and every byte
  // >= 0x80 on its own, i.e. invalid UTF-8, which Boost copies through unchanged.
  for (int c = 0; c < 256; ++c) expect_string_matches(std::string(1, static_cast<char>(c)));
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  expect_string_matches(all);
}

TEST(JsonWriterString, EscapeAtEveryOffset) {
  // Each escapable byte at each position relative to the 8- and 16-byte strides, in the
  // scalar tail, and on both sides of the short-string cut-over (32 bytes).
  for (char special : {'"', '\\', '\n', '\x01', '\x1f', '\0'}) {
    for (size_t len = 1; len <= 80; ++len) {
      for (size_t pos = 0; pos < len; ++pos) {
        std::string s(len, 'a');
        s[pos] = special;
        expect_string_matches(s);
      }
    }
  }
  std::string shifted;  // the SDK's original stride test: runs of escapes at shifting offsets
  for (int i = 0; i < 40; ++i) shifted += std::string(i, 'a') + "\"\x02\\";
  expect_string_matches(shifted);
}

TEST(JsonWriterString, Utf8) {
  expect_string_matches("caf\xc3\xa9");                      // 2-byte
  expect_string_matches("\xe2\x82\xac euro");                // 3-byte
  expect_string_matches("\xf0\x9f\x98\x80 emoji");           // 4-byte
  expect_string_matches("line\xe2\x80\xa8sep\xe2\x80\xa9");  // U+2028/9: not escaped by Boost
  // Invalid UTF-8: lone continuation, truncated sequence, overlong, surrogate, 0xff.
  expect_string_matches("\x80");
  expect_string_matches("abc\xe2\x82");
  expect_string_matches("\xc0\xaf");
  expect_string_matches("\xed\xa0\x80");
  expect_string_matches("\xff\xfe padding to pass sixteen bytes \xff");
}

TEST(JsonWriterString, Large) {
  expect_string_matches(std::string(1 << 20, 'x'));
  std::string text;
  while (text.size() < (1 << 20)) text += "some \"quoted\" words,\ta line break\n and \\ more.";
  expect_string_matches(text);
  expect_string_matches(std::string(4096, '\n'));  // every byte escaped
}

TEST(JsonWriterString, RandomBytes) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> len(0, 80);
  std::uniform_int_distribution<int> kind(0, 3);
  for (int i = 0; i < 2000; ++i) {
    std::string s(static_cast<size_t>(len(rng)), ' ');
    for (auto& ch : s) {
      // Mostly printable ASCII so the fast paths engage, with escapes and high bytes mixed in.
      ch = static_cast<char>(kind(rng) == 0 ? byte(rng) : 'a' + byte(rng) % 26);
    }
    expect_string_matches(s);
  }
}

TEST(JsonWriterString, AppendsAfterExistingContent) {
  std::string out = "prefix:";
  append_json_string(out, "a\"b");
  EXPECT_EQ(out, "prefix:" + boost_string("a\"b"));
}

TEST(JsonWriterValue, Scalars) {
  std::vector<json::value> values = {
      nullptr,
      true,
      false,
      0,
      -1,
      42,
      std::numeric_limits<int64_t>::min(),
      std::numeric_limits<int64_t>::max(),
      json::value(uint64_t{0}),
      json::value(std::numeric_limits<uint64_t>::max()),
      0.1,
      1e300,
      -0.0,
      0.0,
      1.5,
      3.0,
      -2.5e-300,
      1e21,
      1e-7,
      123456789.123,
      std::numeric_limits<double>::max(),
      std::numeric_limits<double>::lowest(),
      std::numeric_limits<double>::denorm_min(),
      std::numeric_limits<double>::infinity(),
      -std::numeric_limits<double>::infinity(),
      std::numeric_limits<double>::quiet_NaN(),
  };
  for (const auto& v : values) EXPECT_EQ(fast(v), json::serialize(v)) << json::serialize(v);
}

TEST(JsonWriterValue, Containers) {
  json::value v = {
      {"s", "plain \"quoted\" back\\slash \n\r\t\b\f \x01\x1f del\x7f utf8 \xc3\xa9 / end"},
      {"n", {1, -2, 3.5, 1e300, 0.1, nullptr, true, false}},
      {"u", json::value(std::numeric_limits<uint64_t>::max())},
      {"empty_object", json::object()},
      {"empty_array", json::array()},
      {"k\"ey\n\xe2\x80\xa8", "v"},
      {"", ""},
      {"nested",
       {{"a", json::array{json::array{}, json::object{}, json::array{1, {{"b", 2}}}}},
        {"deep", {{"x", {{"y", {{"z", json::array{nullptr}}}}}}}}}}};
  EXPECT_EQ(fast(v), json::serialize(v));
  EXPECT_EQ(fast(json::object()), "{}");
  EXPECT_EQ(fast(json::array()), "[]");
  EXPECT_EQ(json::parse(fast(v)), v);
}

TEST(JsonWriterValue, ParsedDocumentRoundTrip) {
  // Parse-then-write is what the engine does with a worker's frame.
  const std::string text = R"({"a":[1,2.5,-3e-5,"x\u0001y\"z",{"b":null,"c":[true,false]}],)"
                           R"("big":18446744073709551615,"neg":-9223372036854775808,"f":1E400})";
  json::value v = json::parse(text);
  EXPECT_EQ(fast(v), json::serialize(v));
}

TEST(JsonWriterValue, AppendsAfterExistingContent) {
  std::string out = "[1,";
  append_json(out, json::value{{"k", 2.0}});
  EXPECT_EQ(out, "[1," + json::serialize(json::value{{"k", 2.0}}));
}

TEST(JsonSizeHint, ExactForPlainStringsAndBoundedForTrees) {
  const std::string big(100000, 'x');
  EXPECT_EQ(json_size_hint(json::value(big)), big.size() + 2);
  // A wrapped big string (the common payload shape) is still accounted for.
  EXPECT_GE(json_size_hint(json::value{{"body", big}}), big.size());
  // Wide trees are only sampled: the hint must stay cheap, not exact.
  json::array wide;
  for (int i = 0; i < 100000; ++i) wide.push_back(i);
  EXPECT_LT(json_size_hint(wide), json::serialize(wide).size());
  EXPECT_GT(json_size_hint(wide), 0u);
}

}  // namespace
}  // namespace iii::protocol
