#include "protocol/uuid.h"

#include <gtest/gtest.h>
#include <openssl/rand.h>

#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace iii::protocol {
namespace {

TEST(Uuid, ParsesEveryAcceptedForm) {
  const auto a = Uuid::parse("6f1c2a9e-1b2c-4d3e-8f40-123456789abc");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->str(), "6f1c2a9e-1b2c-4d3e-8f40-123456789abc");
  EXPECT_EQ(Uuid::parse("6F1C2A9E1B2C4D3E8F40123456789ABC"), a);
  EXPECT_EQ(Uuid::parse("{6f1c2a9e-1b2c-4d3e-8f40-123456789abc}"), a);
  EXPECT_EQ(Uuid::parse("urn:uuid:6f1c2a9e-1b2c-4d3e-8f40-123456789abc"), a);
  EXPECT_FALSE(Uuid::parse("6f1c2a9e-1b2c-4d3e-8f40-123456789abz"));
  EXPECT_FALSE(Uuid::parse("6f1c2a9e+1b2c-4d3e-8f40-123456789abc"));
  EXPECT_FALSE(Uuid::parse(""));
  // Any one character that is not a hex digit (or a hyphen out of place) is refused.
  const std::string good = "6f1c2a9e-1b2c-4d3e-8f40-123456789abc";
  for (size_t i = 0; i < good.size(); ++i) {
    for (char bad : {'g', 'G', '-', ' ', '\0', static_cast<char>(0xff), static_cast<char>(0x80)}) {
      if (bad == good[i]) continue;
      std::string s = good;
      s[i] = bad;
      EXPECT_FALSE(Uuid::parse(s)) << "position " << i << " byte " << int(bad);
      std::string plain = "6f1c2a9e1b2c4d3e8f40123456789abc";
      if (i < plain.size()) {
        plain[i] = bad;
        EXPECT_FALSE(Uuid::parse(plain)) << "plain position " << i << " byte " << int(bad);
      }
    }
  }
  EXPECT_FALSE(Uuid::parse(good.substr(1)));
  EXPECT_FALSE(Uuid::parse(good + "0"));
  for (int i = 0; i < 100; ++i) {
    const Uuid u = Uuid::random_v4();
    EXPECT_EQ(Uuid::parse(u.str()), u);
  }
}

TEST(Uuid, WriteHex64) {
  char buf[17] = {};
  write_hex64(buf, 0);
  EXPECT_STREQ(buf, "0000000000000000");
  write_hex64(buf, 0x0123456789abcdefULL);
  EXPECT_STREQ(buf, "0123456789abcdef");
  write_hex64(buf, ~0ULL);
  EXPECT_STREQ(buf, "ffffffffffffffff");
}

TEST(Uuid, RandomIdsAreVersion4AndDistinct) {
  std::unordered_set<Uuid, UuidHash> seen;
  for (int i = 0; i < 100000; ++i) {
    const Uuid u = Uuid::random_v4();
    const std::string s = u.str();
    ASSERT_EQ(s[14], '4') << s;
    ASSERT_NE(std::string_view("89ab").find(s[19]), std::string_view::npos) << s;
    ASSERT_TRUE(seen.insert(u).second) << "duplicate " << s;
  }
}

TEST(Uuid, RandomIdsAreDistinctAcrossThreads) {
  std::vector<std::vector<Uuid>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& out : per_thread)
    threads.emplace_back([&out] {
      for (int i = 0; i < 5000; ++i) out.push_back(Uuid::random_v4());
    });
  for (auto& t : threads) t.join();
  std::unordered_set<Uuid, UuidHash> all;
  for (const auto& v : per_thread)
    for (const auto& u : v) ASSERT_TRUE(all.insert(u).second);
}

// The bytes must come from OpenSSL's CSPRNG (seeded by the OS), not from a generator whose
// state can be recovered from the ids it printed: replace OpenSSL's source with a marked one
// and check that the ids are made of its bytes.
int g_marked_calls = 0;
int marked_bytes(unsigned char* buf, int num) {
  ++g_marked_calls;
  std::memset(buf, 0x5a, static_cast<size_t>(num));
  return 1;
}
int marked_status() { return 1; }

TEST(Uuid, RandomBytesComeFromOpenSslsCsprng) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  const RAND_METHOD* saved = RAND_get_rand_method();
  static RAND_METHOD marked{nullptr, marked_bytes, nullptr, nullptr, marked_bytes, marked_status};
  ASSERT_EQ(RAND_set_rand_method(&marked), 1);
  std::vector<Uuid> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(Uuid::random_v4());  // past any buffered block
  RAND_set_rand_method(saved);
#pragma GCC diagnostic pop
  EXPECT_GT(g_marked_calls, 0);
  EXPECT_EQ(ids.back().str(), "5a5a5a5a-5a5a-4a5a-9a5a-5a5a5a5a5a5a");
  Uuid after;
  for (int i = 0; i < 16; ++i) after = Uuid::random_v4();  // drains the marked block
  EXPECT_NE(after, ids.back());                            // the real source is back
}

TEST(Uuid, SecretsCompare) {
  EXPECT_TRUE(secrets_equal("abc", "abc"));
  EXPECT_TRUE(secrets_equal("", ""));
  EXPECT_FALSE(secrets_equal("abc", "abd"));
  EXPECT_FALSE(secrets_equal("abc", "ab"));
  EXPECT_FALSE(secrets_equal("", "a"));
}

}  // namespace
}  // namespace iii::protocol
