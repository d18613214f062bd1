// The Prometheus text rendering: families with HELP and TYPE, label escaping, the engine's
// invocation counters by function and outcome, and the telemetry memory gauges.
#include "workers/observability/prometheus_endpoint.h"

#include <gtest/gtest.h>

#include "workers/observability/engine_metrics.h"
#include "workers/observability/telemetry_store.h"

namespace iii::observability {
namespace {

TEST(Prometheus, Escapes) { EXPECT_EQ(prometheus_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd"); }

TEST(Prometheus, RendersEngineMetricsAndTelemetry) {
  EngineMetrics m;
  m.invocation("math::add", true, 2'000'000);
  m.invocation("math::add", true, 4'000'000);
  m.invocation("we\"ird", false, 1'000'000);
  Telemetry t;
  StoredLog l;
  l.body = "hello";
  t.add_logs({l});
  PrometheusSources src;
  src.metrics = &m;
  src.telemetry = &t;
  src.active_workers = [] { return size_t{3}; };
  const std::string text = render_prometheus(src);
  EXPECT_NE(text.find("# TYPE iii_invocations_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("iii_invocations_total{function=\"math::add\",outcome=\"success\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("iii_invocations_total{function=\"we\\\"ird\",outcome=\"error\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("iii_workers_active 3\n"), std::string::npos);
  EXPECT_NE(text.find("iii_telemetry_stored_records{kind=\"logs\"} 1\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("iii_otlp_"), std::string::npos);  // no exporter, no export families
  // Every line is a comment or `name{labels} value`.
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    ASSERT_NE(end, std::string::npos);
    const std::string line = text.substr(pos, end - pos);
    EXPECT_TRUE(line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0 ||
                line.find(' ') != std::string::npos)
        << line;
    pos = end + 1;
  }
}

}  // namespace
}  // namespace iii::observability
