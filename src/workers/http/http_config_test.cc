#include "workers/http/http_config.h"

#include <gtest/gtest.h>

#include "config/config.h"

namespace iii::workers::http {
namespace {

HttpConfig read(const std::string& yaml_config) {
  auto cfg = config::parse_config("workers:\n  - name: iii-http\n    config:\n" + yaml_config,
                                  "test.yaml");
  for (const auto& w : cfg.workers)
    if (w.name == "iii-http") {
      config::WorkerConfigReader r(w);
      return read_http_config(r);
    }
  throw std::logic_error("no iii-http entry");
}

std::string error_of(const std::string& yaml_config) {
  try {
    read(yaml_config);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(HttpConfig, DefaultsAndValues) {
  HttpConfig d = read("      {}\n");
  EXPECT_EQ(d.port, 3111);
  EXPECT_EQ(d.host, "0.0.0.0");
  EXPECT_EQ(d.default_timeout.count(), 30000);
  EXPECT_EQ(d.concurrency_request_limit, 1024u);
  EXPECT_FALSE(d.cors.configured);
  HttpConfig c = read(
      "      port: 0\n      default_timeout: 500\n      cors:\n        allowed_origins: "
      "[https://a.test]\n"
      "        allowed_methods: ['*']\n      middleware:\n        - function_id: b\n          "
      "priority: 5\n"
      "        - function_id: a\n          priority: 1\n        - function_id: c\n          "
      "priority: 5\n");
  EXPECT_EQ(c.default_timeout.count(), 500);
  EXPECT_TRUE(c.cors.configured);
  EXPECT_FALSE(c.cors.any_origin());
  EXPECT_TRUE(c.cors.any_method());
  ASSERT_EQ(c.middleware.size(), 3u);
  EXPECT_EQ(c.middleware[0].function_id, "a");
  EXPECT_EQ(c.middleware[1].function_id, "b");  // ties keep config order
  EXPECT_EQ(c.middleware[2].function_id, "c");
  EXPECT_EQ(c.middleware[0].phase, "preHandler");
}

TEST(HttpConfig, ErrorsNameFileLineAndKey) {
  EXPECT_NE(error_of("      prot: 1\n").find("test.yaml:4"), std::string::npos);
  auto readme = error_of("      port: 1\n      trust_proxy: true\n");
  EXPECT_NE(readme.find("test.yaml:5"), std::string::npos) << readme;
  EXPECT_NE(readme.find("README"), std::string::npos) << readme;
  EXPECT_NE(error_of("      body_limit: 10\n").find("body_limit_bytes"), std::string::npos);
  EXPECT_NE(error_of("      cors: {allowed_origin: [x]}\n").find("unknown key 'allowed_origin'"),
            std::string::npos);
  EXPECT_NE(error_of("      middleware: [{phase: preHandler}]\n").find("function_id"),
            std::string::npos);
  EXPECT_NE(error_of("      middleware: [{function_id: f, priority: high}]\n").find("integer"),
            std::string::npos);
  EXPECT_NE(error_of("      default_timeout: 0\n").find("default_timeout"), std::string::npos);
}

}  // namespace
}  // namespace iii::workers::http
