#include "workers/observability/obs_extras.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <optional>
#include <stdexcept>

#include "config/config.h"
#include "engine/builtin_worker.h"
#include "engine/engine.h"
#include "net/http_client.h"
#include "workers/observability/alerts.h"
#include "workers/observability/engine_metrics.h"
#include "workers/observability/obs_config.h"
#include "workers/observability/otlp_encode.h"
#include "workers/observability/otlp_exporter.h"
#include "workers/observability/prometheus_endpoint.h"
#include "workers/observability/sampling.h"
#include "workers/observability/telemetry_store.h"

namespace iii::observability {

namespace json = boost::json;
using std::chrono::milliseconds;

namespace {

bool is_otlp(const std::string& exporter) { return exporter == "otlp" || exporter == "both"; }

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kLogs:
      return "logs";
    case Kind::kSpans:
      return "spans";
    case Kind::kMetrics:
      return "metrics";
  }
  return "?";
}

}  // namespace

struct ObsExtras::Impl {
  Impl(const config::WorkerEntry& entry, const ObsConfig& c, engine::Runtime& r, Telemetry& t,
       EngineMetrics& m)
      : cfg(c), rt(r), telemetry(t), metrics(m), timer(r.io) {
    config::WorkerConfigReader reader(entry);  // for file:line in errors only
    try {
      sampler = std::make_unique<TraceSampler>(
          parse_sampling(cfg.sampling_ratio, cfg.sampling, cfg.logs_sampling_ratio));
    } catch (const std::invalid_argument& e) {
      reader.fail("sampling", std::string("key ") + e.what());
    }
    std::vector<AlertRule> rules;
    try {
      rules = parse_alerts(cfg.alerts);
    } catch (const std::invalid_argument& e) {
      reader.fail("alerts", std::string("key ") + e.what());
    }
    if (!rules.empty())
      alerts = std::make_unique<AlertEngine>(
          std::move(rules), [this](const std::string& m) { return read_metric(m); },
          [this](const AlertRule& r, const json::object& a) { act(r, a); });

    OtlpExporterOptions eo;
    eo.signals[static_cast<int>(Signal::kTraces)] = cfg.enabled && cfg.spans_exported();
    eo.signals[static_cast<int>(Signal::kLogs)] =
        cfg.enabled && cfg.logs_enabled && (cfg.spans_exported() || is_otlp(cfg.logs_exporter));
    eo.signals[static_cast<int>(Signal::kMetrics)] =
        cfg.enabled && cfg.metrics_enabled &&
        (cfg.spans_exported() || is_otlp(cfg.metrics_exporter));
    if (eo.signals[0] || eo.signals[1] || eo.signals[2]) {
      try {
        eo.endpoint = parse_otlp_endpoint(cfg.endpoint);
      } catch (const std::invalid_argument& e) {
        reader.fail("endpoint", std::string("key 'endpoint': ") + e.what());
      }
      exporter = std::make_unique<OtlpExporter>(std::move(eo));
      feed = std::make_unique<OtlpFeed>(*exporter, cfg.service_name, cfg.service_version,
                                        cfg.service_namespace.value_or(""));
    }
    telemetry.set_max_bytes(Kind::kLogs, cfg.logs_max_bytes);
    telemetry.set_max_bytes(Kind::kSpans, cfg.spans_max_bytes);
    telemetry.set_max_bytes(Kind::kMetrics, cfg.metrics_max_bytes);
  }

  std::optional<MetricSample> read_metric(const std::string& name) {
    auto counter = [](uint64_t v) { return MetricSample{static_cast<double>(v), true}; };
    auto gauge = [](double v) { return MetricSample{v, false}; };
    if (name == "iii.invocations.total") return counter(metrics.total());
    if (name == "iii.invocations.success") return counter(metrics.success());
    if (name == "iii.invocations.error") return counter(metrics.error());
    if (name == "iii.invocations.deferred") return counter(metrics.deferred_count());
    if (name == "iii.workers.spawns") return counter(metrics.spawns());
    if (name == "iii.workers.deaths") return counter(metrics.deaths());
    if (name == "iii.workers.active") return gauge(static_cast<double>(rt.engine.worker_count()));
    if (name == "iii.invocations.pending")
      return gauge(static_cast<double>(rt.engine.pending_count()));
    if (name.rfind("iii.invocations.duration.", 0) == 0) {
      const auto p = metrics.performance();
      const std::string s = name.substr(sizeof("iii.invocations.duration.") - 1);
      if (s == "avg") return gauge(p.avg_ms);
      if (s == "p50") return gauge(p.p50_ms);
      if (s == "p95") return gauge(p.p95_ms);
      if (s == "p99") return gauge(p.p99_ms);
      if (s == "min") return gauge(p.min_ms);
      if (s == "max") return gauge(p.max_ms);
      return std::nullopt;
    }
    for (Kind k : {Kind::kLogs, Kind::kSpans, Kind::kMetrics}) {
      const std::string base = std::string("iii.telemetry.") + kind_name(k);
      if (name == base + ".count") return gauge(static_cast<double>(telemetry.count(k)));
      if (name == base + ".bytes") return gauge(static_cast<double>(telemetry.bytes(k)));
    }
    if (name == "iii.otlp.dropped" && exporter) {
      uint64_t n = 0;
      for (int i = 0; i < kSignalCount; ++i) n += exporter->stats(static_cast<Signal>(i)).dropped();
      return counter(n);
    }
    // An SDK metric: the latest point of the newest stored metric of that name.
    const auto& entries = telemetry.metrics().entries();
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      const StoredMetric& m = it->rec;
      if (m.name != name || m.points.empty()) continue;
      const MetricPoint* latest = &m.points.front();
      for (const auto& p : m.points)
        if (p.timestamp_unix_nano >= latest->timestamp_unix_nano) latest = &p;
      const bool is_counter = m.type == MetricType::kSum && m.is_monotonic;
      const double v = m.type == MetricType::kGauge || m.type == MetricType::kSum
                           ? latest->value
                           : static_cast<double>(latest->count);
      return MetricSample{v, is_counter};
    }
    return std::nullopt;
  }

  void act(const AlertRule& r, const json::object& alert) {
    switch (r.action.type) {
      case AlertAction::Type::kLog:
        spdlog::warn("{}", alert.at("message").as_string().c_str());
        break;
      case AlertAction::Type::kWebhook: {
        spdlog::info("{}: posting to {}", alert.at("message").as_string().c_str(), r.action.url);
        if (!webhooks) webhooks = std::make_unique<net::HttpClient>(rt.io);
        net::OutboundRequest req;
        req.target = net::parse_http_target(r.action.url);  // checked when the rule was read
        req.headers = {{"Content-Type", "application/json"}, {"User-Agent", "iii-engine"}};
        req.body = json::serialize(alert);
        req.timeout = milliseconds(10000);
        req.max_response_bytes = 64 * 1024;
        webhooks->send(
            std::move(req), [name = r.name, url = r.action.url](
                                std::optional<net::OutboundFailure> f, net::OutboundResponse res) {
              if (f)
                spdlog::warn("alert '{}': webhook {} failed: {}", name, url, f->message);
              else if (res.status < 200 || res.status >= 300)
                spdlog::warn("alert '{}': webhook {} answered HTTP {}", name, url, res.status);
            });
        break;
      }
      case AlertAction::Type::kFunction:
        spdlog::info("{}: calling {}", alert.at("message").as_string().c_str(), r.action.path);
        rt.engine.invoke(r.action.path, alert, engine::CallContext{},
                         [name = r.name, path = r.action.path](engine::Outcome o) {
                           if (o.error)
                             spdlog::warn("alert '{}': function {} failed: {} {}", name, path,
                                          o.error->code, o.error->message);
                         });
        break;
    }
  }

  void arm_timer() {
    timer.expires_after(std::chrono::seconds(1));
    timer.async_wait([this, alive = std::weak_ptr<char>(alive)](boost::system::error_code ec) {
      if (ec || !alive.lock() || stopped) return;
      alerts->evaluate();
      arm_timer();
    });
  }

  json::object health_details() const {
    json::object mem;
    for (Kind k : {Kind::kLogs, Kind::kSpans, Kind::kMetrics}) {
      const size_t max = k == Kind::kLogs    ? cfg.logs_max_bytes
                         : k == Kind::kSpans ? cfg.spans_max_bytes
                                             : cfg.metrics_max_bytes;
      mem[kind_name(k)] = json::object{{"records", telemetry.count(k)},
                                       {"bytes", telemetry.bytes(k)},
                                       {"max_bytes", max},
                                       {"evicted", telemetry.evicted(k)}};
    }
    json::object out{{"memory", std::move(mem)}};
    if (exporter) {
      json::object ex{{"endpoint", exporter->options().endpoint.url}, {"protocol", "http/json"}};
      for (int i = 0; i < kSignalCount; ++i) {
        const Signal s = static_cast<Signal>(i);
        if (!exporter->exports(s)) continue;
        const OtlpSignalStats st = exporter->stats(s);
        ex[signal_name(s)] = json::object{{"exported", st.exported},
                                          {"dropped", st.dropped()},
                                          {"queued", st.queued_records},
                                          {"queued_bytes", st.queued_bytes},
                                          {"failed_requests", st.failed_requests}};
      }
      out["export"] = std::move(ex);
    }
    return out;
  }

  const ObsConfig& cfg;
  engine::Runtime& rt;
  Telemetry& telemetry;
  EngineMetrics& metrics;
  std::unique_ptr<TraceSampler> sampler;
  std::unique_ptr<AlertEngine> alerts;
  std::unique_ptr<OtlpExporter> exporter;
  std::unique_ptr<OtlpFeed> feed;
  std::unique_ptr<PrometheusEndpoint> prometheus;
  std::unique_ptr<net::HttpClient> webhooks;  // on the engine's io_context, made when first used
  boost::asio::steady_timer timer;
  std::shared_ptr<char> alive = std::make_shared<char>();
  bool ready = false;
  bool stopped = false;
};

ObsExtras::ObsExtras(const config::WorkerEntry& entry, const ObsConfig& cfg, engine::Runtime& rt,
                     Telemetry& telemetry, EngineMetrics& metrics)
    : impl_(std::make_unique<Impl>(entry, cfg, rt, telemetry, metrics)) {}

ObsExtras::~ObsExtras() { stop(); }

void ObsExtras::start() {
  Impl& d = *impl_;
  if (d.sampler->active())
    d.telemetry.set_span_filter(
        [s = d.sampler.get()](const StoredSpan& sp) { return s->keep(sp); });
  if (d.exporter) {
    OtlpFeed* feed = d.feed.get();
    d.telemetry.on_spans([feed](const std::vector<StoredSpan>& v) { feed->spans(v); });
    d.telemetry.on_engine_spans(
        [feed](const EngineSpanRec& r, const std::shared_ptr<const std::string>& fn) {
          feed->engine_span(r, fn);
        });
    d.telemetry.on_logs([feed](const std::vector<StoredLog>& v) { feed->logs(v); });
    d.telemetry.on_metrics([feed](const std::vector<StoredMetric>& v) { feed->metrics(v); });
    d.exporter->start();
    spdlog::info("iii-observability: exporting {}{}{}to {} (OTLP/HTTP JSON)",
                 d.exporter->exports(Signal::kTraces) ? "traces " : "",
                 d.exporter->exports(Signal::kMetrics) ? "metrics " : "",
                 d.exporter->exports(Signal::kLogs) ? "logs " : "",
                 d.exporter->options().endpoint.url);
  }
  if (d.cfg.metrics_port) {
    PrometheusSources src;
    src.metrics = &d.metrics;
    src.telemetry = &d.telemetry;
    src.exporter = d.exporter.get();
    src.active_workers = [&eng = d.rt.engine] { return eng.worker_count(); };
    src.pending_invocations = [&eng = d.rt.engine] { return eng.pending_count(); };
    src.ready = [&d] { return d.ready && !d.stopped; };
    d.prometheus = std::make_unique<PrometheusEndpoint>(
        d.rt.io, d.cfg.metrics_host, static_cast<uint16_t>(*d.cfg.metrics_port), std::move(src));
  }
  auto add = [&](const char* id, const char* description,
                 std::function<json::object(const json::object&)> fn) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    d.rt.engine.register_builtin(std::move(info), "iii-observability",
                                 [fn = std::move(fn)](const engine::CallContext&, json::value input,
                                                      engine::Completion done) {
                                   static const json::object kEmpty;
                                   const json::object* in = input.if_object();
                                   done(engine::Outcome::ok(fn(in ? *in : kEmpty)));
                                 });
  };
  add("engine::alerts::list", "The configured alerts and their state", [&d](const json::object&) {
    return d.alerts
               ? d.alerts->list_json()
               : json::object{{"alerts", json::array{}}, {"timestamp", engine::Engine::now_ms()}};
  });
  add("engine::alerts::evaluate", "Evaluate every alert now; run the actions of those that fire",
      [&d](const json::object&) {
        json::array fired = d.alerts ? d.alerts->evaluate() : json::array{};
        const size_t n = d.alerts ? d.alerts->rules().size() : 0;
        return json::object{{"evaluated", n},
                            {"triggered", std::move(fired)},
                            {"timestamp", engine::Engine::now_ms()}};
      });
  if (d.alerts) d.arm_timer();
  d.ready = true;
}

void ObsExtras::drain() { impl_->ready = false; }

void ObsExtras::stop() {
  Impl& d = *impl_;
  if (d.stopped) return;
  d.stopped = true;
  d.ready = false;
  d.timer.cancel();
  if (d.prometheus) d.prometheus->stop();
  if (d.exporter) d.exporter->stop(milliseconds(1000));
  if (d.webhooks) d.webhooks->stop();
}

json::object ObsExtras::sampling_rules() const { return impl_->sampler->rules_json(); }

json::object ObsExtras::health_details() const { return impl_->health_details(); }

}  // namespace iii::observability
