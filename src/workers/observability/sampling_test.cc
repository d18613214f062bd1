// TraceSampler: config parsing and its errors, glob rules, trace-id ratios (deterministic and
// close to the rate over many traces), parent-based decisions that keep trees whole, and the
// rate limit's token bucket on a fake clock.
#include "workers/observability/sampling.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <cstdio>

namespace iii::observability {
namespace {

namespace json = boost::json;

std::string trace_id(uint64_t i) {
  // Spread ids over the whole 56-bit space the sampler looks at.
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(i),
                static_cast<unsigned long long>(i * 0x9E3779B97F4A7C15ull));
  return buf;
}

StoredSpan span(const std::string& trace, const std::string& name, const std::string& service,
                bool root = true) {
  StoredSpan s;
  s.trace_id = trace;
  s.span_id = "00f067aa0ba902b7";
  if (!root) s.parent_span_id = "00f067aa0ba902b8";
  s.name = name;
  s.service_name = service;
  return s;
}

TEST(Sampling, ParsesConfig) {
  const SamplingConfig c = parse_sampling(0.5, json::parse(R"({
      "default": 0.25, "parent_based": false,
      "rules": [{"operation": "api.*", "rate": 1}, {"service": "noisy", "rate": 0.0}],
      "rate_limit": {"max_traces_per_second": 100}})"),
                                          0.3);
  EXPECT_EQ(c.default_ratio, 0.25);
  EXPECT_FALSE(c.parent_based);
  ASSERT_EQ(c.rules.size(), 2u);
  EXPECT_EQ(c.rules[0].operation, "api.*");
  EXPECT_EQ(c.rules[1].service, "noisy");
  EXPECT_EQ(*c.max_traces_per_second, 100);
  EXPECT_EQ(c.logs_sampling_ratio, 0.3);
  EXPECT_EQ(parse_sampling(0.5, nullptr, 1.0).default_ratio, 0.5);
  EXPECT_FALSE(parse_sampling(0.5, nullptr, 1.0).parent_based);
}

TEST(Sampling, RefusesBadConfig) {
  auto err = [](const char* s) {
    try {
      parse_sampling(1.0, json::parse(s), 1.0);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(err(R"({"default": 2})"), "sampling.default: must be between 0 and 1");
  EXPECT_EQ(err(R"({"rules": [{"rate": 0.5}, {"operation": "x"}]})"),
            "sampling.rules[1].rate: required");
  EXPECT_EQ(err(R"({"rules": [{"rate": "half"}]})"),
            "sampling.rules[0].rate: expected a number between 0 and 1");
  EXPECT_EQ(err(R"({"bogus": 1})"), "sampling: unknown key 'bogus'");
  EXPECT_EQ(err(R"({"rate_limit": {"max_traces_per_second": -1}})"),
            "sampling.rate_limit.max_traces_per_second: expected a number >= 0");
  EXPECT_EQ(err(R"({"parent_based": "yes"})"), "sampling.parent_based: expected a boolean");
  EXPECT_EQ(err(R"([1])"), "sampling: expected a mapping");
}

TEST(Sampling, GlobMatch) {
  EXPECT_TRUE(glob_match("api.*", "api.users"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*::get", "state::get"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYY"));
  EXPECT_FALSE(glob_match("api.*", "apiusers"));
  EXPECT_TRUE(glob_match("exact", "exact"));
  EXPECT_FALSE(glob_match("exact", "exact!"));
}

TEST(Sampling, RatioIsDeterministicAndClose) {
  int kept = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    const bool k = trace_id_under(trace_id(i), 0.25);
    EXPECT_EQ(k, trace_id_under(trace_id(i), 0.25));
    // A trace kept at a lower rate is kept at every higher one.
    if (k) {
      EXPECT_TRUE(trace_id_under(trace_id(i), 0.5));
    }
    kept += k;
  }
  EXPECT_NEAR(kept / 20000.0, 0.25, 0.02);
  EXPECT_TRUE(trace_id_under(trace_id(1), 1.0));
  EXPECT_FALSE(trace_id_under(trace_id(1), 0.0));
}

TEST(Sampling, InactiveKeepsEverything) {
  TraceSampler s(parse_sampling(1.0, nullptr, 1.0));
  EXPECT_FALSE(s.active());
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(s.keep(span(trace_id(i), "x", "svc")));
}

TEST(Sampling, RulesPickTheRate) {
  TraceSampler s(parse_sampling(0.0, json::parse(R"({"rules": [{"operation": "api.*", "rate": 1.0},
                                {"service": "keep-*", "rate": 1.0}]})"),
                                1.0));
  EXPECT_TRUE(s.active());
  int kept = 0;
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_TRUE(s.keep(span(trace_id(i), "api.users", "svc")));
    EXPECT_TRUE(s.keep(span(trace_id(1000 + i), "other", "keep-me")));
    kept += s.keep(span(trace_id(2000 + i), "other", "svc"));
  }
  EXPECT_EQ(kept, 0);
  EXPECT_EQ(s.kept(), 200u);
  EXPECT_EQ(s.dropped(), 100u);
}

TEST(Sampling, ParentBasedKeepsTreesWhole) {
  // The root is sampled by its rule (rate 1); its children, whose own rule says 0, follow it.
  TraceSampler s(parse_sampling(
      0.0, json::parse(R"({"parent_based": true, "rules": [{"operation": "root", "rate": 1.0}]})"),
      1.0));
  for (uint64_t i = 0; i < 50; ++i) {
    const std::string t = trace_id(i);
    EXPECT_TRUE(s.keep(span(t, "root", "svc")));
    EXPECT_TRUE(s.keep(span(t, "child", "svc", false)));
  }
  // Without parent_based, the children are judged by their own rule.
  TraceSampler np(parse_sampling(
      0.0, json::parse(R"({"parent_based": false, "rules": [{"operation": "root", "rate": 1.0}]})"),
      1.0));
  const std::string t = trace_id(7);
  EXPECT_TRUE(np.keep(span(t, "root", "svc")));
  EXPECT_FALSE(np.keep(span(t, "child", "svc", false)));
  // ... also when the span that decided came first and was dropped.
  const std::string t3 = trace_id(9);
  EXPECT_FALSE(np.keep(span(t3, "child", "svc", false)));
  EXPECT_TRUE(np.keep(span(t3, "root", "svc")));
  // A trace dropped at its first span stays dropped, even for a span whose rule would keep it.
  TraceSampler d(parse_sampling(
      0.0, json::parse(R"({"parent_based": true, "rules": [{"operation": "root", "rate": 1.0}]})"),
      1.0));
  const std::string t2 = trace_id(8);
  EXPECT_FALSE(d.keep(span(t2, "child", "svc", false)));
  EXPECT_FALSE(d.keep(span(t2, "root", "svc")));
}

TEST(Sampling, RateLimitIsATokenBucket) {
  int64_t now = 1000;
  TraceSampler s(
      parse_sampling(1.0, json::parse(R"({"rate_limit": {"max_traces_per_second": 5}})"), 1.0),
      [&] { return now; });
  int kept = 0;
  for (uint64_t i = 0; i < 20; ++i) kept += s.keep(span(trace_id(i), "x", "svc"));
  EXPECT_EQ(kept, 5);  // the burst
  EXPECT_EQ(s.rate_limited(), 15u);
  // Spans of a kept trace still pass once the bucket is empty.
  EXPECT_TRUE(s.keep(span(trace_id(0), "y", "svc", false)));
  now += 400;  // 2 tokens
  kept = 0;
  for (uint64_t i = 100; i < 110; ++i) kept += s.keep(span(trace_id(i), "x", "svc"));
  EXPECT_EQ(kept, 2);
  now += 10000;  // refilled to the burst, not beyond
  kept = 0;
  for (uint64_t i = 200; i < 220; ++i) kept += s.keep(span(trace_id(i), "x", "svc"));
  EXPECT_EQ(kept, 5);
}

TEST(Sampling, RemembersABoundedNumberOfTraces) {
  TraceSampler s(parse_sampling(0.5, nullptr, 1.0));
  for (uint64_t i = 0; i < TraceSampler::kRememberedTraces + 100; ++i)
    s.keep(span(trace_id(i), "x", "svc"));
  // Decisions are still right for the oldest (recomputed from the id).
  EXPECT_EQ(s.keep(span(trace_id(0), "x", "svc")), trace_id_under(trace_id(0), 0.5));
}

TEST(Sampling, RulesJson) {
  TraceSampler s(
      parse_sampling(0.5, json::parse(R"({"rules": [{"operation": "api.*", "rate": 0.1}]})"), 0.8));
  const json::object j = s.rules_json();
  EXPECT_EQ(j.at("traces").at("default_ratio").as_double(), 0.5);
  EXPECT_EQ(j.at("traces").at("parent_based").as_bool(), false);
  EXPECT_EQ(j.at("traces").at("rules").at(0).at("operation").as_string(), "api.*");
  EXPECT_TRUE(j.at("traces").at("rules").at(0).at("service").is_null());
  EXPECT_EQ(j.at("logs").at("sampling_ratio").as_double(), 0.8);
  EXPECT_TRUE(j.at("timestamp").is_int64());
}

}  // namespace
}  // namespace iii::observability
