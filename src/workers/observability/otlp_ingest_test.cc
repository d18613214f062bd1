#include "workers/observability/otlp_ingest.h"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

namespace iii::observability {
namespace {

// A Node SDK (otlp-transformer 0.57) trace frame, as captured on the wire (ids shortened to
// valid lengths, one span).
const char* kNodeSpans = R"(OTLP{"resourceSpans":[{"resource":{"attributes":[
 {"key":"service.name","value":{"stringValue":"node-worker"}},
 {"key":"telemetry.sdk.language","value":{"stringValue":"nodejs"}}],"droppedAttributesCount":0},
 "scopeSpans":[{"scope":{"name":"node-worker","version":"0.11.6"},"spans":[{
  "traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"b7ad6b7169203331",
  "parentSpanId":"00f067aa0ba902b7","name":"call echo","kind":2,
  "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000005000000",
  "attributes":[{"key":"function_id","value":{"stringValue":"echo"}},
                {"key":"n","value":{"intValue":3}},{"key":"ok","value":{"boolValue":true}}],
  "droppedAttributesCount":0,
  "events":[{"timeUnixNano":"1700000000001000000","name":"exception","attributes":[
    {"key":"exception.message","value":{"stringValue":"boom"}}],"droppedAttributesCount":0}],
  "links":[],"status":{"code":2,"message":"boom"}}]}]}]})";

TEST(OtlpIngest, ParsesNodeSpans) {
  IngestResult r = parse_frame(kNodeSpans);
  EXPECT_EQ(r.error, "");
  ASSERT_EQ(r.spans.size(), 1u);
  const StoredSpan& s = r.spans[0];
  EXPECT_EQ(s.trace_id, "0af7651916cd43dd8448eb211c80319c");  // lowercased
  EXPECT_EQ(s.span_id, "b7ad6b7169203331");
  EXPECT_EQ(s.parent_span_id, "00f067aa0ba902b7");
  EXPECT_EQ(s.name, "call echo");
  EXPECT_EQ(s.kind, 2);
  EXPECT_EQ(s.start_time_unix_nano, 1700000000000000000);
  EXPECT_EQ(s.duration_ns(), 5000000);
  EXPECT_EQ(s.status, SpanStatus::kError);
  EXPECT_EQ(s.status_description, "boom");
  EXPECT_EQ(s.service_name, "node-worker");
  EXPECT_EQ(s.scope_name, "node-worker");
  ASSERT_EQ(s.attributes.size(), 3u);
  EXPECT_EQ(*s.attribute("n"), "3");
  EXPECT_EQ(*s.attribute("ok"), "true");
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.events[0].attributes.at("exception.message"), "boom");
  auto j = s.to_json();
  EXPECT_EQ(j.at("status"), "error");
  EXPECT_EQ(boost::json::serialize(j.at("attributes").at(0)), R"(["function_id","echo"])");
}

TEST(OtlpIngest, PythonKindsAreShiftedAndNumbersAccepted) {
  // Python: SERVER is 1; timestamps as JSON numbers; empty parentSpanId is a root.
  IngestResult r = parse_frame(R"(OTLP{"resourceSpans":[{"resource":{"attributes":[
    {"key":"telemetry.sdk.language","value":{"stringValue":"python"}}]},"scopeSpans":[{"spans":[
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"",
     "name":"call py","kind":1,"startTimeUnixNano":1700000000000000000,
     "endTimeUnixNano":1700000000000000100}]}]}]})");
  EXPECT_EQ(r.error, "");
  ASSERT_EQ(r.spans.size(), 1u);
  EXPECT_EQ(r.spans[0].kind, 2);
  EXPECT_TRUE(r.spans[0].is_root());
  EXPECT_EQ(r.spans[0].service_name, "unknown");
  EXPECT_EQ(r.spans[0].duration_ns(), 100);
}

TEST(OtlpIngest, BadRecordsAreSkippedOthersKept) {
  IngestResult r = parse_frame(R"(OTLP{"resourceSpans":[{"scopeSpans":[{"spans":[
    {"traceId":"abc","spanId":"b7ad6b7169203331"},
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","startTimeUnixNano":"soon"},
    {"traceId":"00000000000000000000000000000000","spanId":"b7ad6b7169203331"},
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b71692033zz"},
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","attributes":7},
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","startTimeUnixNano":-5},
    "nope",
    {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"good"}]}]}]})");
  EXPECT_EQ(r.dropped, 7u);
  EXPECT_EQ(r.error, "traceId must be 32 hex digits");
  ASSERT_EQ(r.spans.size(), 1u);
  EXPECT_EQ(r.spans[0].name, "good");
}

TEST(OtlpIngest, FrameLevelErrors) {
  EXPECT_EQ(parse_frame("XXXX{}").error, "no OTLP/MTRC/LOGS prefix");
  EXPECT_EQ(parse_frame("OTL").error, "no OTLP/MTRC/LOGS prefix");
  EXPECT_NE(parse_frame("OTLP{not json").error.find("invalid JSON"), std::string::npos);
  EXPECT_EQ(parse_frame("LOGS[1,2]").error, "the payload is not a JSON object");
  EXPECT_EQ(parse_frame("MTRC{}").error, "no resourceMetrics array");
  EXPECT_EQ(parse_frame(R"(OTLP{"resourceSpans":{}})").error, "resourceSpans must be an array");
  EXPECT_EQ(parse_frame(R"(LOGS{"resourceLogs":[{"scopeLogs":5}]})").error,
            "scopeLogs must be an array");
  // Deep nesting is refused by the parser's depth limit, not by recursion.
  std::string deep = "OTLP" + std::string(10000, '[') + std::string(10000, ']');
  EXPECT_NE(parse_frame(deep).error, "");
  // Invalid UTF-8 inside strings: Boost.JSON refuses it by default.
  EXPECT_NE(parse_frame("LOGS{\"resourceLogs\":[\"\xff\xfe\"]}").error, "");
}

TEST(OtlpIngest, RecordLimitPerFrame) {
  std::string f = R"(LOGS{"resourceLogs":[{"scopeLogs":[{"logRecords":[)";
  for (int i = 0; i < 10; ++i) f += std::string(i ? "," : "") + R"({"body":{"stringValue":"x"}})";
  f += "]}]}]}";
  IngestLimits l;
  l.max_records = 4;
  IngestResult r = parse_frame(f, l);
  EXPECT_EQ(r.logs.size(), 4u);
  EXPECT_EQ(r.dropped, 6u);
  EXPECT_EQ(r.error, "more than 4 records in one frame");
}

TEST(OtlpIngest, ParsesNodeLoggerRecords) {
  IngestResult r = parse_frame(R"(LOGS{"resourceLogs":[{"resource":{"attributes":[
    {"key":"service.name","value":{"stringValue":"svc"}}]},"scopeLogs":[{"scope":{"name":"svc"},
    "logRecords":[{"timeUnixNano":"1700000000000000000","observedTimeUnixNano":"1700000000000000001",
    "severityNumber":13,"severityText":"WARN","body":{"stringValue":"careful"},
    "attributes":[{"key":"trace_id","value":{"stringValue":"0af7651916cd43dd8448eb211c80319c"}},
     {"key":"span_id","value":{"stringValue":"b7ad6b7169203331"}},
     {"key":"log.data","value":{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"7"}}]}}}],
    "droppedAttributesCount":0}]}]}]})");
  EXPECT_EQ(r.error, "");
  ASSERT_EQ(r.logs.size(), 1u);
  const StoredLog& l = r.logs[0];
  EXPECT_EQ(l.body, "careful");
  EXPECT_EQ(l.severity_number, 13);
  EXPECT_EQ(l.level(), "warn");
  EXPECT_EQ(l.trace_id, "0af7651916cd43dd8448eb211c80319c");  // from the attributes
  EXPECT_EQ(l.span_id, "b7ad6b7169203331");
  EXPECT_EQ(boost::json::serialize(l.attributes.at("log.data")), R"({"a":7})");
  auto j = l.to_json();
  EXPECT_EQ(j.size(), 12u);
  EXPECT_EQ(j.at("service_name"), "svc");
  EXPECT_EQ(j.at("instrumentation_scope_version"), nullptr);
}

TEST(OtlpIngest, ParsesGaugesSumsAndHistograms) {
  IngestResult r = parse_frame(R"(MTRC{"resourceMetrics":[{"resource":{"attributes":[]},
    "scopeMetrics":[{"scope":{"name":"m"},"metrics":[
     {"name":"iii.worker.memory.rss","unit":"By","gauge":{"dataPoints":[{"attributes":[
       {"key":"worker.id","value":{"stringValue":"w1"}}],"timeUnixNano":"1700000000000000000",
       "asDouble":1234.5}]}},
     {"name":"calls","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
       {"timeUnixNano":"1700000000000000000","asInt":"42"}]}},
     {"name":"lat","histogram":{"dataPoints":[{"timeUnixNano":"1700000000000000000","count":"3",
       "sum":6,"min":1,"max":3,"bucketCounts":["1","2"],"explicitBounds":[2]}]}},
     {"name":"bad"}]}]}]})");
  EXPECT_EQ(r.error, "metric bad has no gauge, sum or histogram");
  EXPECT_EQ(r.dropped, 1u);
  ASSERT_EQ(r.metrics.size(), 3u);
  EXPECT_EQ(r.metrics[0].type, MetricType::kGauge);
  EXPECT_EQ(r.metrics[0].points[0].value, 1234.5);
  EXPECT_EQ(r.metrics[1].points[0].value, 42);
  EXPECT_TRUE(r.metrics[1].is_monotonic);
  EXPECT_EQ(r.metrics[2].points[0].count, 3u);
  EXPECT_EQ(r.metrics[2].points[0].bucket_counts, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.metrics[2].to_json().at("metric_type"), "histogram");
}

TEST(OtlpIngest, TraceParent) {
  auto tp = parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01");
  ASSERT_TRUE(tp);
  EXPECT_EQ(tp->trace_id, "0af7651916cd43dd8448eb211c80319c");
  EXPECT_EQ(tp->span_id, "b7ad6b7169203331");
  EXPECT_EQ(tp->flags, 1);
  EXPECT_FALSE(parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01"));
  EXPECT_FALSE(parse_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
  EXPECT_FALSE(parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0"));
  EXPECT_FALSE(parse_traceparent("garbage"));
}

}  // namespace
}  // namespace iii::observability
