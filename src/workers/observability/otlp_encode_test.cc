// Stored records back to OTLP/JSON: ids, times as decimal strings, kinds and status codes as
// numbers, attributes as typed AnyValues, metric shapes; and OtlpFeed's resources (the
// record's own, or the engine's service when it has none).
#include "workers/observability/otlp_encode.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace iii::observability {
namespace {

namespace json = boost::json;

TEST(OtlpEncode, Span) {
  StoredSpan s;
  s.trace_id = "0af7651916cd43dd8448eb211c80319c";
  s.span_id = "b7ad6b7169203331";
  s.parent_span_id = "00f067aa0ba902b7";
  s.name = "invoke math::add";
  s.kind = 1;
  s.start_time_unix_nano = 1700000000000000001;
  s.end_time_unix_nano = 1700000000000000999;
  s.status = SpanStatus::kError;
  s.status_description = "boom";
  s.attributes = {{"iii.function_id", "math::add"}};
  s.events.push_back({"exception", 1700000000000000500, json::object{{"n", 3}, {"ok", true}}});
  s.links.push_back(json::object{
      {"trace_id", s.trace_id}, {"span_id", "00f067aa0ba902b8"}, {"attributes", json::object{}}});
  const json::object o = span_to_otlp(s);
  EXPECT_EQ(o.at("traceId").as_string(), s.trace_id);
  EXPECT_EQ(o.at("parentSpanId").as_string(), "00f067aa0ba902b7");
  EXPECT_EQ(o.at("kind").as_int64(), 1);
  EXPECT_EQ(o.at("startTimeUnixNano").as_string(), "1700000000000000001");
  EXPECT_EQ(o.at("status").at("code").as_int64(), 2);
  EXPECT_EQ(o.at("status").at("message").as_string(), "boom");
  EXPECT_EQ(o.at("attributes").at(0).at("key").as_string(), "iii.function_id");
  EXPECT_EQ(o.at("attributes").at(0).at("value").at("stringValue").as_string(), "math::add");
  const auto& ev = o.at("events").at(0);
  EXPECT_EQ(ev.at("timeUnixNano").as_string(), "1700000000000000500");
  EXPECT_EQ(ev.at("attributes").at(0).at("value").at("intValue").as_string(), "3");
  EXPECT_EQ(ev.at("attributes").at(1).at("value").at("boolValue").as_bool(), true);
  EXPECT_EQ(o.at("links").at(0).at("spanId").as_string(), "00f067aa0ba902b8");
  s.parent_span_id.reset();
  s.status = SpanStatus::kUnset;
  const json::object root = span_to_otlp(s);
  EXPECT_FALSE(root.contains("parentSpanId"));
  EXPECT_EQ(root.at("status").at("code").as_int64(), 0);
}

TEST(OtlpEncode, AnyValues) {
  const json::value v = json::parse(R"({"a":[1,"x",2.5],"o":{"k":null}})");
  const json::array kv = to_key_values(v.as_object());
  EXPECT_EQ(json::serialize(kv),
            R"([{"key":"a","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"x"},)"
            R"({"doubleValue":2.5E0}]}}},{"key":"o","value":{"kvlistValue":{"values":)"
            R"([{"key":"k","value":{}}]}}}])");
}

TEST(OtlpEncode, Log) {
  StoredLog l;
  l.timestamp_unix_nano = 5;
  l.observed_timestamp_unix_nano = 6;
  l.severity_number = 13;
  l.severity_text = "WARN";
  l.body = "careful";
  l.attributes = json::object{{"user", "ann"}};
  l.trace_id = "0af7651916cd43dd8448eb211c80319c";
  const json::object o = log_to_otlp(l);
  EXPECT_EQ(o.at("timeUnixNano").as_string(), "5");
  EXPECT_EQ(o.at("observedTimeUnixNano").as_string(), "6");
  EXPECT_EQ(o.at("severityNumber").as_int64(), 13);
  EXPECT_EQ(o.at("body").at("stringValue").as_string(), "careful");
  EXPECT_EQ(o.at("traceId").as_string(), *l.trace_id);
  EXPECT_FALSE(o.contains("spanId"));
}

TEST(OtlpEncode, Metrics) {
  StoredMetric m;
  m.name = "iii.worker.memory.rss";
  m.unit = "By";
  m.type = MetricType::kSum;
  m.is_monotonic = true;
  m.temporality = 2;
  MetricPoint p;
  p.timestamp_unix_nano = 10;
  p.value = 42.5;
  p.attributes = json::object{{"worker.id", "w1"}};
  m.points.push_back(p);
  json::object o = metric_to_otlp(m);
  EXPECT_EQ(o.at("sum").at("aggregationTemporality").as_int64(), 2);
  EXPECT_TRUE(o.at("sum").at("isMonotonic").as_bool());
  EXPECT_EQ(o.at("sum").at("dataPoints").at(0).at("asDouble").as_double(), 42.5);
  EXPECT_EQ(o.at("sum").at("dataPoints").at(0).at("timeUnixNano").as_string(), "10");
  m.type = MetricType::kHistogram;
  m.points[0].count = 3;
  m.points[0].sum = 6;
  m.points[0].bucket_counts = {1, 2};
  m.points[0].explicit_bounds = {1.0};
  o = metric_to_otlp(m);
  const auto& hp = o.at("histogram").at("dataPoints").at(0);
  EXPECT_EQ(hp.at("count").as_string(), "3");
  EXPECT_EQ(hp.at("bucketCounts").at(1).as_string(), "2");
  EXPECT_EQ(hp.at("explicitBounds").at(0).as_double(), 1.0);
  m.type = MetricType::kGauge;
  EXPECT_TRUE(metric_to_otlp(m).contains("gauge"));
}

}  // namespace
}  // namespace iii::observability
