#include "workers/observability/telemetry_store.h"

#include <gtest/gtest.h>

#include "workers/observability/engine_metrics.h"
#include "workers/observability/telemetry_queries.h"

namespace iii::observability {
namespace {

namespace json = boost::json;

StoredLog log_at(int64_t ns, int sev, std::string body, std::optional<std::string> trace = {}) {
  StoredLog l;
  l.timestamp_unix_nano = ns;
  l.severity_number = sev;
  l.severity_text = severity_text_of(sev);
  l.body = std::move(body);
  l.trace_id = std::move(trace);
  return l;
}

StoredSpan span(std::string trace, std::string id, std::optional<std::string> parent,
                std::string name, int64_t start, int64_t dur) {
  StoredSpan s;
  s.trace_id = std::move(trace);
  s.span_id = std::move(id);
  s.parent_span_id = std::move(parent);
  s.name = std::move(name);
  s.start_time_unix_nano = start;
  s.end_time_unix_nano = start + dur;
  s.service_name = "svc";
  return s;
}

TEST(TelemetryStore, CountAndRetentionBounds) {
  Telemetry::Options o;
  o.logs = {3, 10'000, 0};
  Telemetry t(o);
  int64_t now = 1'000'000;
  t.now_ms = [&] { return now; };
  for (int i = 0; i < 5; ++i) t.add_logs({log_at(i, 9, "l" + std::to_string(i))});
  ASSERT_EQ(t.count(Kind::kLogs), 3u);
  EXPECT_EQ(t.logs().entries().front().rec.body, "l2");  // oldest evicted first
  EXPECT_EQ(t.evicted(Kind::kLogs), 2u);
  now += 5'000;
  t.add_logs({log_at(9, 9, "late")});
  now += 6'000;  // the first three are now 11 s old, "late" 6 s
  t.sweep(now);
  ASSERT_EQ(t.count(Kind::kLogs), 1u);
  EXPECT_EQ(t.logs().entries().front().rec.body, "late");
}

TEST(TelemetryStore, ByteBoundAndAccounting) {
  Telemetry t;
  t.add_logs({log_at(1, 9, std::string(1000, 'x'))});
  const size_t one = t.bytes(Kind::kLogs);
  EXPECT_GT(one, 1000u);
  t.set_max_bytes(Kind::kLogs, one * 2 + 10);
  for (int i = 0; i < 5; ++i) t.add_logs({log_at(2, 9, std::string(1000, 'y'))});
  EXPECT_EQ(t.count(Kind::kLogs), 2u);
  EXPECT_LE(t.bytes(Kind::kLogs), one * 2 + 10);
  t.clear_logs();
  EXPECT_EQ(t.bytes(Kind::kLogs), 0u);
}

TEST(TelemetryStore, FiltersObserversAndDisabledStorage) {
  Telemetry::Options o;
  o.store_spans = false;
  Telemetry t(o);
  std::vector<std::string> seen;
  t.on_spans([&](const std::vector<StoredSpan>& v) {
    for (auto& s : v) seen.push_back(s.name);
  });
  t.set_span_filter([](const StoredSpan& s) { return s.name != "drop"; });
  t.add_spans({span("t", "a", {}, "keep", 0, 1), span("t", "b", {}, "drop", 0, 1)});
  EXPECT_EQ(seen, (std::vector<std::string>{"keep"}));
  EXPECT_EQ(t.count(Kind::kSpans), 0u);  // exporter without memory: observed, not stored
  EXPECT_EQ(t.filtered(Kind::kSpans), 1u);
}

TEST(TelemetryStore, LogsSamplingRatioZeroDropsAll) {
  Telemetry::Options o;
  o.logs_sampling_ratio = 0.0;
  Telemetry t(o);
  t.add_logs({log_at(1, 9, "a"), log_at(2, 9, "b")});
  EXPECT_EQ(t.count(Kind::kLogs), 0u);
}

TEST(TelemetryQueries, ListLogsFiltersAndPages) {
  Telemetry t;
  t.add_logs({log_at(3'000'000, 17, "err", "aa"), log_at(1'000'000, 9, "info", "aa"),
              log_at(2'000'000, 5, "dbg")});
  json::object r = list_logs(t, json::object{}, 42);
  EXPECT_EQ(r.at("total"), 3);
  EXPECT_EQ(r.at("logs").at(0).at("body"), "info");  // by timestamp
  EXPECT_EQ(r.at("timestamp"), 42);
  r = list_logs(t, json::object{{"trace_id", "AA"}, {"severity_min", 10}}, 0);
  ASSERT_EQ(r.at("total"), 1);
  EXPECT_EQ(r.at("logs").at(0).at("body"), "err");
  EXPECT_EQ(r.at("query").at("severity_min"), 10);
  r = list_logs(t, json::object{{"severity_text", "debug"}}, 0);
  EXPECT_EQ(r.at("total"), 1);
  r = list_logs(t, json::object{{"offset", 1}, {"limit", 1}}, 0);
  EXPECT_EQ(r.at("total"), 3);
  ASSERT_EQ(r.at("logs").as_array().size(), 1u);
  EXPECT_EQ(r.at("logs").at(0).at("body"), "dbg");
  r = list_logs(t, json::object{{"start_time", 2}, {"end_time", 2}}, 0);  // ms
  EXPECT_EQ(r.at("total"), 1);
  EXPECT_THROW(list_logs(t, json::object{{"limit", "ten"}}, 0), InputError);
  EXPECT_THROW(list_logs(t, json::object{{"offset", -1}}, 0), InputError);
}

TEST(TelemetryQueries, TracesListOnlyRootsAndTree) {
  Telemetry t;
  const std::string tr = "0af7651916cd43dd8448eb211c80319c";
  StoredSpan internal = span("11111111111111111111111111111111", "9", {}, "invoke engine::x", 5, 1);
  internal.attributes.emplace_back("iii.internal", "true");
  t.add_spans({span(tr, "1", {}, "root", 100, 50), span(tr, "2", "1", "child-b", 130, 5),
               span(tr, "3", "1", "child-a", 110, 5), span(tr, "4", "3", "grandchild", 111, 1),
               span("22222222222222222222222222222222", "5", {}, "other", 200, 500), internal});
  json::object r = list_traces(t, json::object{});
  EXPECT_EQ(r.at("total"), 2);
  EXPECT_EQ(r.at("spans").at(0).at("name"), "other");  // newest first
  EXPECT_EQ(r.at("limit"), 100);
  r = list_traces(
      t, json::object{{"include_internal", true}, {"sort_by", "duration"}, {"sort_order", "asc"}});
  EXPECT_EQ(r.at("total"), 3);
  EXPECT_EQ(r.at("spans").at(0).at("name"), "invoke engine::x");
  r = list_traces(t, json::object{{"name", "ROO"}});
  EXPECT_EQ(r.at("total"), 1);
  r = list_traces(t, json::object{{"name", "grand"}, {"search_all_spans", true}});
  ASSERT_EQ(r.at("total"), 1);
  EXPECT_EQ(r.at("spans").at(0).at("name"), "root");
  r = list_traces(t, json::object{{"min_duration_ms", 0.0004}, {"max_duration_ms", 0.0006}});
  EXPECT_EQ(r.at("total"), 1);  // "other": 500 ns
  EXPECT_THROW(list_traces(t, json::object{{"sort_by", "size"}}), InputError);
  EXPECT_THROW(list_traces(t, json::object{{"attributes", json::array{1}}}), InputError);

  json::object tree = trace_tree(t, json::object{{"trace_id", tr}});
  ASSERT_EQ(tree.at("roots").as_array().size(), 1u);
  const auto& root = tree.at("roots").at(0);
  EXPECT_EQ(root.at("name"), "root");
  ASSERT_EQ(root.at("children").as_array().size(), 2u);
  EXPECT_EQ(root.at("children").at(0).at("name"), "child-a");  // by start time
  EXPECT_EQ(root.at("children").at(0).at("children").at(0).at("name"), "grandchild");
  EXPECT_THROW(trace_tree(t, json::object{}), InputError);
  EXPECT_EQ(trace_tree(t, json::object{{"trace_id", "ff"}}).at("roots").as_array().size(), 0u);
}

TEST(TelemetryQueries, TreeOfACycleDoesNotLoop) {
  Telemetry t;
  const std::string tr = "0af7651916cd43dd8448eb211c80319c";
  t.add_spans({span(tr, "1", "2", "a", 1, 1), span(tr, "2", "1", "b", 2, 1)});
  json::object tree = trace_tree(t, json::object{{"trace_id", tr}});
  EXPECT_EQ(tree.at("roots").as_array().size(), 0u);  // no root: nothing to hang them on
}

TEST(TelemetryQueries, MetricsAndRollups) {
  Telemetry t;
  StoredMetric m;
  m.name = "cpu";
  m.type = MetricType::kGauge;
  for (int i = 0; i < 4; ++i) {
    MetricPoint p;
    p.timestamp_unix_nano = (60'000 + i * 30'000) * 1'000'000LL;  // 60 s, 90 s, 120 s, 150 s
    p.value = i;
    m.points.push_back(p);
  }
  m.timestamp_unix_nano = m.points.back().timestamp_unix_nano;
  t.add_metrics({m});
  EngineMetrics em;
  em.invocation("f", true, 2'000'000);
  em.invocation("f", false, 4'000'000);
  em.deferred("g");
  json::object r = list_metrics(t, em, 3, json::object{{"aggregate_interval", 60}}, 7);
  EXPECT_EQ(r.at("engine_metrics").at("invocations").at("total"), 3);
  EXPECT_EQ(r.at("engine_metrics").at("invocations").at("by_function").at("f").at("error"), 1);
  EXPECT_EQ(r.at("engine_metrics").at("workers").at("active"), 3);
  EXPECT_EQ(r.at("engine_metrics").at("performance").at("max_duration_ms"), 4.0);
  EXPECT_EQ(r.at("engine_metrics").at("performance").at("p50_duration_ms"), 2.0);
  EXPECT_EQ(r.at("sdk_metrics").as_array().size(), 1u);
  ASSERT_EQ(r.at("aggregated_metrics").as_array().size(), 2u);
  EXPECT_EQ(r.at("aggregated_metrics").at(0).at("count"), 2);
  EXPECT_EQ(r.at("aggregated_metrics").at(1).at("sum"), 5.0);
  EXPECT_EQ(r.at("query").at("aggregate_interval"), 60);
  EXPECT_FALSE(list_metrics(t, em, 0, json::object{}, 0).contains("query"));
  EXPECT_EQ(list_metrics(t, em, 0, json::object{{"metric_name", "x"}}, 0)
                .at("sdk_metrics")
                .as_array()
                .size(),
            0u);

  json::object ro = list_rollups(t, json::object{{"level", 1}}, 0);  // 5 min windows
  ASSERT_EQ(ro.at("rollups").as_array().size(), 1u);
  EXPECT_EQ(ro.at("rollups").at(0).at("count"), 4);
  EXPECT_EQ(ro.at("rollups").at(0).at("max"), 3.0);
  EXPECT_THROW(list_rollups(t, json::object{{"level", 3}}, 0), InputError);
}

TEST(TelemetryQueries, Baggage) {
  json::object b = parse_baggage("user=alice, tier = gold;prop=1,enc=a%20b,bad,=x");
  EXPECT_EQ(b.at("user"), "alice");
  EXPECT_EQ(b.at("tier"), "gold");
  EXPECT_EQ(b.at("enc"), "a b");
  EXPECT_EQ(b.size(), 3u);
  EXPECT_TRUE(parse_baggage("").empty());
}

}  // namespace
}  // namespace iii::observability

namespace iii::observability {
namespace {

TEST(TelemetryStore, EngineSpansRingBoundAndMaterialised) {
  Telemetry::Options o;
  o.spans = {3, 0, 0};
  Telemetry t(o);
  t.set_engine_service("eng");
  for (uint64_t i = 1; i <= 5; ++i) {
    EngineSpanRec r;
    r.trace_hi = 0xabc;
    r.trace_lo = i;
    r.span_id = i;
    r.parent_span_id = i == 5 ? 4 : 0;
    r.start_unix_nano = static_cast<int64_t>(i) * 10;
    r.end_unix_nano = static_cast<int64_t>(i) * 10 + 5;
    if (i == 4) r.error = std::make_shared<const std::string>("timeout: too slow");
    EXPECT_TRUE(t.add_engine_span(std::move(r), i % 2 ? "odd" : "even"));
  }
  EXPECT_EQ(t.count(Kind::kSpans), 3u);
  EXPECT_EQ(t.evicted(Kind::kSpans), 2u);
  std::vector<StoredSpan> v = t.engine_spans();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0].trace_id, "0000000000000abc0000000000000003");
  EXPECT_EQ(v[0].span_id, "0000000000000003");
  EXPECT_EQ(v[0].name, "invoke odd");
  EXPECT_TRUE(v[0].is_root());
  EXPECT_EQ(v[1].name, "invoke even");
  EXPECT_EQ(v[1].status, SpanStatus::kError);
  EXPECT_EQ(v[1].status_description, "timeout: too slow");
  EXPECT_EQ(v[2].parent_span_id, "0000000000000004");
  EXPECT_EQ(v[2].service_name, "eng");
  json::object r = list_traces(t, json::object{{"sort_order", "asc"}});
  EXPECT_EQ(r.at("total"), 2);  // 3 and 4 are roots, 5 is a child
  json::object tree = trace_tree(t, json::object{{"trace_id", "0000000000000abc0000000000000005"}});
  EXPECT_EQ(tree.at("roots").as_array().size(), 1u);
  t.clear_spans();
  EXPECT_EQ(t.count(Kind::kSpans), 0u);

  // A span observer without an engine-span counterpart needs StoredSpans: the fast path is
  // refused and the caller goes through add_spans.
  t.on_spans([](const std::vector<StoredSpan>&) {});
  EngineSpanRec rec;
  rec.trace_lo = 1;
  rec.span_id = 1;
  EXPECT_FALSE(t.add_engine_span(EngineSpanRec(rec), "f"));

  // With its engine-span counterpart (the exporter) they stay compact and reach it as records.
  std::vector<std::pair<uint64_t, std::string>> seen;
  t.on_engine_spans([&](const EngineSpanRec& r, const std::shared_ptr<const std::string>& fn) {
    seen.emplace_back(r.span_id, *fn);
  });
  EXPECT_TRUE(t.add_engine_span(EngineSpanRec(rec), "f"));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], std::make_pair(uint64_t{1}, std::string("f")));
  EXPECT_EQ(t.count(Kind::kSpans), 1u);
  EXPECT_EQ(Telemetry::materialize(rec, "f", "eng").name, "invoke f");

  // A sampler (span filter) needs StoredSpans again.
  t.set_span_filter([](const StoredSpan&) { return true; });
  EXPECT_FALSE(t.add_engine_span(EngineSpanRec(rec), "f"));
}

TEST(TelemetryStore, EngineSpansExportedWithoutStoring) {
  Telemetry::Options o;
  o.store_spans = false;  // `exporter: otlp`
  Telemetry t(o);
  EngineSpanRec rec;
  rec.span_id = 7;
  EXPECT_FALSE(t.add_engine_span(EngineSpanRec(rec), "f"));  // nobody wants it compact
  int seen = 0;
  t.on_spans([](const std::vector<StoredSpan>&) {});
  t.on_engine_spans(
      [&](const EngineSpanRec&, const std::shared_ptr<const std::string>&) { ++seen; });
  EXPECT_TRUE(t.add_engine_span(EngineSpanRec(rec), "f"));
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(t.count(Kind::kSpans), 0u);
  EXPECT_EQ(t.received(Kind::kSpans), 1u);
}

}  // namespace
}  // namespace iii::observability
