// The iii-observability worker in-process: config checking, the engine's invocation spans and
// the traceparent an executor receives, SDK frames through the ingest thread, log triggers.
#include "workers/observability/observability.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <thread>

#include "config/config.h"
#include "engine/engine.h"

namespace iii::workers {
namespace {

namespace json = boost::json;

config::WorkerEntry entry_from(const std::string& yaml) {
  return config::parse_config(yaml, "obs.yaml").workers.front();
}

std::string config_error(const std::string& obs_config) {
  boost::asio::io_context io;
  engine::Engine eng;
  engine::Runtime rt{io, eng};
  try {
    make_observability(
        entry_from("workers:\n  - name: iii-observability\n    config:\n" + obs_config), rt);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ObservabilityConfig, EveryKeyAcceptedUnknownRefused) {
  EXPECT_EQ(config_error(R"(      enabled: true
      service_name: svc
      service_version: "1.0"
      service_namespace: ns
      exporter: both
      endpoint: http://collector:4317
      sampling_ratio: 0.5
      sampling: { default: 0.5, rules: [{operation: "a*", rate: 1}], parent_based: true,
                  rate_limit: { max_traces_per_second: 10 } }
      memory_max_spans: 10
      metrics_enabled: true
      metrics_exporter: memory
      metrics_retention_seconds: 60
      metrics_max_count: 5
      logs_enabled: true
      logs_exporter: memory
      logs_max_count: 5
      logs_retention_seconds: 60
      logs_sampling_ratio: 1
      logs_console_output: false
      logs_batch_size: 1
      logs_flush_interval_ms: 100
      level: info
      format: text
      alerts: [{name: a, metric: m, threshold: 1}]
)"),
            "");
  EXPECT_NE(config_error("      exporters: memory\n").find("unknown key 'exporters'"),
            std::string::npos);
  EXPECT_NE(
      config_error("      exporter: jaeger\n").find("'jaeger' is not one of memory, otlp, both"),
      std::string::npos);
  EXPECT_NE(config_error("      sampling_ratio: 2\n").find("between 0 and 1"), std::string::npos);
  EXPECT_NE(config_error("      alerts: {a: 1}\n").find("expected a list"), std::string::npos);
  EXPECT_NE(config_error("      logs_max_count: -1\n").find("logs_max_count"), std::string::npos);
}

class FakeConnection : public engine::Connection {
 public:
  void send(engine::SharedFrame f) override { frames.push_back(json::parse(*f).as_object()); }
  void close(uint16_t, std::string_view) override {}
  std::vector<json::object> frames;
};

class ObservabilityTest : public ::testing::Test {
 protected:
  void start(const std::string& cfg) {
    worker_ = make_observability(
        entry_from("workers:\n  - name: iii-observability\n    config: " + cfg + "\n"), rt_);
    worker_->start();
  }
  void TearDown() override {
    if (worker_) worker_->stop();
  }
  json::value call(const std::string& fid, json::value in, engine::CallContext ctx = {}) {
    std::optional<engine::Outcome> out;
    eng_.invoke(fid, std::move(in), std::move(ctx), [&](engine::Outcome o) { out = std::move(o); });
    io_.poll();
    io_.restart();
    EXPECT_TRUE(out.has_value()) << fid;
    if (!out) return nullptr;
    if (out->error) return json::object{{"error", out->error->code}};
    return out->result ? *out->result : json::value(nullptr);
  }
  // Runs posted work until `done` holds (the ingest thread posts parsed frames).
  template <typename Pred>
  bool run_until(Pred done, int rounds = 500) {
    for (int i = 0; i < rounds && !done(); ++i) {
      io_.poll();
      io_.restart();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return done();
  }

  boost::asio::io_context io_;
  engine::Engine eng_;
  engine::Runtime rt_{io_, eng_};
  std::unique_ptr<engine::BuiltinWorker> worker_;
};

TEST_F(ObservabilityTest, EngineSpansNestAndTheExecutorGetsTheEngineSpanAsParent) {
  start("{ exporter: memory, logs_console_output: false }");
  auto conn = std::make_shared<FakeConnection>();
  const uint64_t h = eng_.connect(conn, {"127.0.0.1", "wm"});
  eng_.on_frame(h, R"({"type":"registerfunction","id":"w::fn"})");
  // A built-in that calls the worker's function with its own context, like an SDK handler would.
  engine::FunctionInfo info;
  info.id = "outer";
  eng_.register_builtin(
      info, "test", [this](const engine::CallContext& ctx, json::value, engine::Completion d) {
        engine::CallContext inner;
        inner.traceparent = ctx.traceparent;
        eng_.invoke("w::fn", json::object{}, inner, [d](engine::Outcome o) { d(std::move(o)); });
      });
  engine::CallContext top;
  top.traceparent = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
  std::optional<engine::Outcome> done;
  eng_.invoke("outer", json::object{}, top, [&](engine::Outcome o) { done = std::move(o); });
  json::object inv;
  for (auto& f : conn->frames)
    if (f.at("type") == "invokefunction") inv = f;
  ASSERT_FALSE(inv.empty());
  const std::string tp(inv.at("traceparent").as_string());
  ASSERT_EQ(tp.size(), 55u);
  EXPECT_EQ(tp.substr(0, 36), "00-0af7651916cd43dd8448eb211c80319c-");
  EXPECT_NE(tp.substr(36, 16), "00f067aa0ba902b7");  // the engine's span, not the caller's
  eng_.on_frame(h, R"({"type":"invocationresult","invocation_id":")" +
                       std::string(inv.at("invocation_id").as_string()) +
                       R"(","function_id":"w::fn","result":1})");
  ASSERT_TRUE(done);
  ASSERT_FALSE(done->error) << done->error->code << ": " << done->error->message;

  json::value tree =
      call("engine::traces::tree", json::object{{"trace_id", "0af7651916cd43dd8448eb211c80319c"}});
  ASSERT_EQ(tree.at("roots").as_array().size(), 1u) << json::serialize(tree);
  const auto& root = tree.at("roots").at(0);
  EXPECT_EQ(root.at("name"), "invoke outer");
  EXPECT_EQ(root.at("parent_span_id"), "00f067aa0ba902b7");  // parent not stored: a root here
  const auto& child = root.at("children").at(0);
  EXPECT_EQ(child.at("name"), "invoke w::fn");
  EXPECT_EQ(child.at("span_id").as_string(), tp.substr(36, 16));
  EXPECT_EQ(child.at("status"), "ok");

  // Errors and unknown functions are spans (and metrics) too.
  call("nope", json::object{}, top);
  json::value m = call("engine::metrics::list", json::object{});
  const auto& inv_m = m.at("engine_metrics").at("invocations");
  EXPECT_EQ(inv_m.at("by_function").at("nope").at("error"), 1);
  EXPECT_EQ(inv_m.at("by_function").at("w::fn").at("success"), 1);
  EXPECT_EQ(m.at("engine_metrics").at("workers").at("spawns"), 1);
  call("nope", json::object{});  // top level: a root span with status error
  json::value list = call("engine::traces::list", json::object{{"status", "ERR"}});
  ASSERT_EQ(list.at("total"), 1);
  EXPECT_EQ(list.at("spans").at(0).at("name"), "invoke nope");
  EXPECT_EQ(list.at("spans").at(0).at("status_description"),
            "function_not_found: Function nope not found");
}

TEST_F(ObservabilityTest, TopLevelEngineCallsAreNotTraced) {
  start("{ exporter: memory }");
  call("engine::health::check", json::object{});
  call("engine::logs::list", json::object{});
  json::value list = call("engine::traces::list", json::object{{"include_internal", true}});
  EXPECT_EQ(list.at("total"), 0);
}

TEST_F(ObservabilityTest, FramesAreParsedOffTheEngineThreadAndStored) {
  start("{ exporter: memory, logs_console_output: false }");
  eng_.on_telemetry(
      R"(LOGS{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
      "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":17,
      "severityText":"ERROR","body":{"stringValue":"from sdk"}}]}]}]})");
  eng_.on_telemetry("OTLP{broken");
  eng_.on_telemetry(R"(OTLP{"resourceSpans":[{"scopeSpans":[{"spans":[
      {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"sdk"}]}]}]})");
  ASSERT_TRUE(run_until([&] {
    return call("engine::traces::list", json::object{}).at("total") == 1 &&
           call("engine::logs::list", json::object{}).at("total") == 1;
  }));
  json::value logs = call("engine::logs::list", json::object{});
  EXPECT_EQ(logs.at("logs").at(0).at("body"), "from sdk");
  EXPECT_EQ(logs.at("logs").at(0).at("service_name"), "svc");
  json::value h = call("engine::health::check", json::object{});
  EXPECT_EQ(h.at("components").at("otel").at("details").at("telemetry_frames"), 3);
}

TEST_F(ObservabilityTest, DisabledIngestsNothingButFunctionsAnswer) {
  start("{ enabled: false, exporter: memory }");
  eng_.on_telemetry(R"(OTLP{"resourceSpans":[{"scopeSpans":[{"spans":[
      {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331"}]}]}]})");
  run_until([] { return false; }, 20);
  EXPECT_EQ(call("engine::traces::list", json::object{}).at("total"), 0);
  EXPECT_EQ(call("engine::health::check", json::object{}).at("components").at("otel").at("status"),
            "disabled");
}

TEST_F(ObservabilityTest, LogTriggersByLevelAndNoFeedbackLoop) {
  start("{ logs_console_output: false }");
  std::vector<json::value> got;
  engine::FunctionInfo info;
  info.id = "sink";
  eng_.register_builtin(
      info, "test", [&](const engine::CallContext&, json::value in, engine::Completion d) {
        got.push_back(in);
        // A log written by the triggered function does not fire again.
        eng_.invoke("engine::log::error", json::object{{"message", "loop?"}}, {}, {});
        d(engine::Outcome::empty());
      });
  engine::Trigger t;
  t.id = "t1";
  t.trigger_type = "log";
  t.function_id = "sink";
  t.config = json::object{{"level", "error"}};
  eng_.register_trigger(std::move(t));
  engine::Trigger bad;
  bad.id = "t2";
  bad.trigger_type = "log";
  bad.function_id = "sink";
  bad.config = json::object{{"level", "loud"}};
  eng_.register_trigger(std::move(bad));
  EXPECT_EQ(eng_.triggers().at("t2").state, engine::Trigger::State::kFailed);

  call("engine::log::info", json::object{{"message", "fine"}});
  call("engine::log::error", json::object{{"message", "bad"}, {"data", json::object{{"k", 1}}}});
  io_.poll();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].at("body"), "bad");
  EXPECT_EQ(got[0].at("severity_number"), 17);
  EXPECT_EQ(got[0].at("attributes").at("k"), 1);
  EXPECT_EQ(got[0].as_object().size(), 12u);
  EXPECT_EQ(call("engine::logs::list", json::object{}).at("total"), 3);  // fine, bad, loop?
}

}  // namespace
}  // namespace iii::workers
