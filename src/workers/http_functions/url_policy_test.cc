#include "workers/http_functions/url_policy.h"

#include <gtest/gtest.h>

#include "workers/http_functions/http_functions_worker.h"

namespace iii::workers::http_functions {
namespace {

namespace ip = boost::asio::ip;

bool priv(const char* a) { return is_private_address(ip::make_address(a)); }

TEST(UrlPolicyTest, PrivateAddresses) {
  for (const char* a :
       {"127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "0.0.0.0", "255.255.255.255", "192.0.2.5", "198.51.100.7", "203.0.113.9",
        "::1", "::", "fc00::1", "fdff::1", "fe80::1", "febf::1", "ff02::1",
        // IPv4 embedded in IPv6: mapped, compatible, NAT64
        "::ffff:169.254.169.254", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
        "64:ff9b::a9fe:a9fe"})
    EXPECT_TRUE(priv(a)) << a;
  for (const char* a : {"8.8.8.8", "172.32.0.1", "192.169.0.1", "1.1.1.1", "2001:4860::8888",
                        "::ffff:8.8.8.8", "fec0::1", "64:ff9b::808:808"})
    EXPECT_FALSE(priv(a)) << a;
}

TEST(UrlPolicyTest, Glob) {
  EXPECT_TRUE(glob_match("*", "anything"));
  EXPECT_TRUE(glob_match("*.example.com", "api.example.com"));
  EXPECT_FALSE(glob_match("*.example.com", "example.com"));
  EXPECT_TRUE(glob_match("API.Example.com", "api.example.com"));
  EXPECT_TRUE(glob_match("10.0.0.?", "10.0.0.7"));
  EXPECT_FALSE(glob_match("10.0.0.?", "10.0.0.70"));
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyy"));
}

TEST(UrlPolicyTest, ChecksInTheOriginalsOrder) {
  SecurityPolicy strict;  // defaults: allow all, https only, private blocked
  EXPECT_EQ(check_url("not a url", strict).error, "Invalid URL");
  EXPECT_EQ(check_url("ftp://example.com/x", strict).error, "Invalid URL");
  EXPECT_EQ(check_url("https://user:pw@example.com/", strict).error, "Invalid URL");
  EXPECT_EQ(check_url("https://example.com:99999/", strict).error, "Invalid URL");
  EXPECT_EQ(check_url("http://example.com/x", strict).error, "HTTPS is required");
  EXPECT_EQ(check_url("https://127.0.0.1/x", strict).error, "Private IP blocked");
  EXPECT_EQ(check_url("https://[::ffff:169.254.169.254]/latest", strict).error,
            "Private IP blocked");
  EXPECT_EQ(check_url("https://[::ffff:a9fe:a9fe]/latest", strict).error, "Private IP blocked");
  EXPECT_EQ(check_url("https://127.1/", strict).error, "Private IP blocked");
  EXPECT_EQ(check_url("https://2130706433/", strict).error, "Private IP blocked");
  EXPECT_EQ(check_url("https://localhost:8443/", strict).error, "Private IP blocked");
  auto ok = check_url("https://api.example.com/v1/run?x=1#frag", strict);
  ASSERT_TRUE(ok.target) << ok.error;
  EXPECT_TRUE(ok.target->https);
  EXPECT_EQ(ok.target->host, "api.example.com");
  EXPECT_EQ(ok.target->port, "443");
  EXPECT_EQ(ok.target->target, "/v1/run?x=1");
  EXPECT_EQ(ok.target->host_header, "api.example.com");

  SecurityPolicy list;
  list.url_allowlist = {"*.example.com", "127.0.0.1"};
  list.block_private_ips = false;
  list.require_https = false;
  EXPECT_EQ(check_url("https://evil.com/", list).error, "URL not in allowlist");
  auto local = check_url("http://127.0.0.1:8080", list);
  ASSERT_TRUE(local.target) << local.error;
  EXPECT_EQ(local.target->target, "/");
  EXPECT_EQ(local.target->host_header, "127.0.0.1:8080");
  ASSERT_TRUE(local.target->literal);
  SecurityPolicy v6;
  v6.url_allowlist = {"[::1]"};
  v6.block_private_ips = false;
  EXPECT_TRUE(check_url("https://[::1]:9/", v6).target);
}

TEST(UrlPolicyTest, HmacSignature) {
  // echo -n "1700000000:$(echo -n '{"a":1}' | base64)" | openssl dgst -sha256 -hmac s3cret
  EXPECT_EQ(signature("s3cret", "1700000000", R"({"a":1})"),
            "sha256=ef70ecc409d280b3ed0a97fdb005b95bcea1b1c20e8984d0a9d92dcd79d1f077");
}

}  // namespace
}  // namespace iii::workers::http_functions
