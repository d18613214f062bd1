// iii-observability: engine log level/format; intake of the SDKs' OTLP/MTRC/LOGS frames
// (parsed on the ingest thread); bounded storage of logs, spans and metrics; the engine's own
// invocation spans and metrics; the §8.3 functions; the `log` trigger type. The data model and
// the hooks other parts use are in docs/observability-seam.md.
#include "workers/observability/observability.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <random>
#include <stdexcept>

#include "common/logging.h"
#include "config/config.h"
#include "engine/engine.h"
#include "protocol/uuid.h"
#include "workers/observability/engine_metrics.h"
#include "workers/observability/ingest_thread.h"
#include "workers/observability/obs_config.h"
#include "workers/observability/obs_extras.h"
#include "workers/observability/telemetry_queries.h"
#include "workers/observability/telemetry_store.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
namespace obs = iii::observability;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

// Telemetry frames larger than this are dropped before they are queued.
constexpr size_t kMaxFrameBytes = 16 * 1024 * 1024;
// Bytes of frames waiting for the ingest thread; beyond, new frames are dropped.
constexpr size_t kMaxQueuedBytes = 64 * 1024 * 1024;
// Engine spans are handed to the store in batches of at most this many.
constexpr size_t kSpanBatch = 256;
constexpr std::chrono::milliseconds kFlushInterval{100};

struct LogLevelFn {
  const char* id;
  const char* level;
};
constexpr LogLevelFn kLogFunctions[] = {{"engine::log::trace", "trace"},
                                        {"engine::log::debug", "debug"},
                                        {"engine::log::info", "info"},
                                        {"engine::log::warn", "warn"},
                                        {"engine::log::error", "error"}};

spdlog::level::level_enum spd_level(int severity_number) {
  if (severity_number <= 0) return spdlog::level::info;
  if (severity_number <= 4) return spdlog::level::trace;
  if (severity_number <= 8) return spdlog::level::debug;
  if (severity_number <= 12) return spdlog::level::info;
  if (severity_number <= 16) return spdlog::level::warn;
  return spdlog::level::err;
}

// Writes 16 lowercase hex digits.
void write_hex(char* out, uint64_t v) { protocol::write_hex64(out, v); }

// 16 hex digits (either case) → value; false if any is not a hex digit.
bool read_hex(std::string_view s, uint64_t& v) {
  v = 0;
  for (char c : s) {
    uint64_t d;
    if (c >= '0' && c <= '9')
      d = static_cast<uint64_t>(c - '0');
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
      d = static_cast<uint64_t>((c | 0x20) - 'a' + 10);
    else
      return false;
    v = (v << 4) | d;
  }
  return true;
}

// The caller's W3C traceparent into the span's parent ids, without allocating; false when
// absent or malformed (all-zero ids, version ff).
bool read_traceparent(std::string_view tp, engine::InvocationSpan& span) {
  if (tp.size() < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' ||
      (tp.size() > 55 && tp[55] != '-') || tp.substr(0, 2) == "ff")
    return false;
  uint64_t hi, lo, parent, flags;
  if (!read_hex(tp.substr(3, 16), hi) || !read_hex(tp.substr(19, 16), lo) ||
      !read_hex(tp.substr(36, 16), parent) || !read_hex(tp.substr(53, 2), flags) || (!hi && !lo) ||
      !parent)
    return false;
  span.trace_hi = hi;
  span.trace_lo = lo;
  span.parent_span_id = parent;
  span.flags = static_cast<uint8_t>(flags);
  return true;
}

Outcome bad_input(const std::string& fn, const std::string& why) {
  return Outcome::fail("deserialization_error",
                       "Failed to deserialize input for " + fn + ": " + why);
}

// `log` triggers: config {level?: info|warn|error|debug|trace|all}.
class LogTriggerType : public engine::TriggerTypeHandler {
 public:
  std::optional<std::string> bind(const engine::Trigger& t) override {
    std::string level = "all";
    if (t.config.is_object()) {
      if (const json::value* l = t.config.get_object().if_contains("level"); l && !l->is_null()) {
        if (!l->is_string()) return "log trigger: 'level' must be a string";
        level = std::string(l->get_string());
      }
    } else if (!t.config.is_null()) {
      return "log trigger: config must be an object";
    }
    static const char* kLevels[] = {"all", "trace", "debug", "info", "warn", "error"};
    if (std::find(std::begin(kLevels), std::end(kLevels), level) == std::end(kLevels))
      return "log trigger: unknown level '" + level +
             "' (expected info, warn, error, debug, trace or all)";
    levels_[t.id] = level;
    return std::nullopt;
  }
  void unbind(const engine::Trigger& t) override { levels_.erase(t.id); }
  bool wants(const std::string& trigger_id, const std::string& level) const {
    auto it = levels_.find(trigger_id);
    return it != levels_.end() && (it->second == "all" || it->second == level);
  }
  bool empty() const { return levels_.empty(); }

 private:
  std::unordered_map<std::string, std::string> levels_;
};

obs::Telemetry::Options telemetry_options(const obs::ObsConfig& c) {
  obs::Telemetry::Options o;
  o.store_logs = c.logs_enabled && c.logs_exporter != "otlp";
  o.store_spans = c.spans_in_memory();
  o.store_metrics = c.metrics_enabled && c.metrics_exporter != "otlp";
  o.logs = {static_cast<size_t>(c.logs_max_count), c.logs_retention_seconds * 1000, 0};
  o.spans = {static_cast<size_t>(c.memory_max_spans), 0, 0};
  o.metrics = {static_cast<size_t>(c.metrics_max_count), c.metrics_retention_seconds * 1000, 0};
  o.logs_sampling_ratio = c.logs_sampling_ratio;
  return o;
}

class Observability : public engine::BuiltinWorker, public engine::InvocationObserver {
 public:
  Observability(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt),
        name_(entry.instance_name),
        cfg_(obs::read_obs_config(entry)),
        telemetry_(telemetry_options(cfg_)),
        rng_(std::random_device{}()) {
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
    // Applied at creation, before any worker starts, so start-up is logged as configured.
    // The CLI's --log-level/--log-format have already been written into this entry.
    logging::init(cfg_.level, cfg_.format);
    bad_frames_.set_summary("iii-observability: invalid telemetry frames");
    telemetry_.set_engine_service(cfg_.service_name);
    // h-obsx: sampling, alerts, export, metrics endpoint (validated now, started in start()).
    extras_ = std::make_unique<obs::ObsExtras>(entry, cfg_, rt_, telemetry_, metrics_);
  }

  ~Observability() override { detach(); }

  void start() override {
    auto& eng = rt_.engine;
    eng.on_worker_event(
        [this, alive = std::weak_ptr<char>(alive_)](std::string_view ev, const std::string&) {
          if (!alive.lock()) return;
          if (ev == "worker_connected") metrics_.worker_spawned();
          if (ev == "worker_disconnected") metrics_.worker_died();
        });
    telemetry_.on_logs([this](const std::vector<obs::StoredLog>& logs) { on_logs(logs); });
    telemetry_.on_metrics(
        [this](const std::vector<obs::StoredMetric>& m) { update_worker_metrics(m); });
    if (cfg_.enabled) {
      ingest_ = std::make_unique<obs::IngestThread>(
          [&io = rt_.io](std::function<void()> fn) { boost::asio::post(io, std::move(fn)); },
          [this, alive = std::weak_ptr<char>(alive_)](obs::IngestResult&& r) {
            if (alive.lock()) deliver(std::move(r));
          },
          kMaxQueuedBytes);
      eng.set_telemetry_sink([this](std::string_view frame) { on_frame(frame); });
      eng.set_invocation_observer(this);
    }
    eng.register_builtin_trigger_type(
        engine::TriggerType{"log", "Fires for every log stored by iii-observability", {}, {}},
        &log_triggers_);
    register_functions();
    // h-obsx: sampling, alerts, export and the metrics endpoint hook in here
    // (docs/observability-seam.md).
    extras_->start();
  }

  void drain(std::function<void()> done) override {
    extras_->drain();  // /readyz: 503
    done();
  }

  void stop() override {
    extras_->stop();
    detach();
  }

  // ---- InvocationObserver ----
  void begin(const std::string& function_id, CallContext& ctx,
             engine::InvocationSpan& span) override {
    span.start_unix_nano = obs::now_unix_nano();
    const bool parent = ctx.traceparent && read_traceparent(*ctx.traceparent, span);
    // Top-level calls of engine::* functions (tools querying the engine) are not traced.
    if (!parent && function_id.compare(0, 8, "engine::") == 0) return;
    if (!parent) {
      do {
        span.trace_hi = rng_();
        span.trace_lo = rng_();
      } while (!span.trace_hi && !span.trace_lo);
      span.flags = 1;
    }
    do span.span_id = rng_();
    while (!span.span_id);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string tp(55, '-');
    tp[0] = tp[1] = '0';
    write_hex(&tp[3], span.trace_hi);
    write_hex(&tp[19], span.trace_lo);
    write_hex(&tp[36], span.span_id);
    tp[53] = kHex[span.flags >> 4];
    tp[54] = kHex[span.flags & 0xf];
    ctx.traceparent = std::move(tp);
  }

  void end(const std::string& function_id, const engine::InvocationSpan& span, const Outcome& o,
           uint64_t) override {
    if (!span.start_unix_nano) return;  // routed before the observer was attached
    const int64_t now = obs::now_unix_nano();
    metrics_.invocation(function_id, !o.error, now - span.start_unix_nano);
    if (!span.traced()) return;
    obs::EngineSpanRec r;
    r.trace_hi = span.trace_hi;
    r.trace_lo = span.trace_lo;
    r.span_id = span.span_id;
    r.parent_span_id = span.parent_span_id;
    r.start_unix_nano = span.start_unix_nano;
    r.end_unix_nano = now;
    r.flags = span.flags;
    r.internal = function_id.compare(0, 8, "engine::") == 0;
    if (o.error)
      r.error = std::make_shared<const std::string>(o.error->code + ": " + o.error->message);
    // Fast path: a fixed-size record in the store's ring and the exporter's queue. With a
    // span filter (sampling) the span is built now and batched through add_spans.
    if (telemetry_.add_engine_span(std::move(r), function_id)) return;
    if (engine_spans_.empty()) arm_flush();
    obs::StoredSpan s = telemetry_.materialize(r);
    s.name = "invoke " + function_id;
    engine_spans_.push_back(std::move(s));
    if (engine_spans_.size() >= kSpanBatch) flush_engine_spans();
  }

  void deferred(const std::string& function_id) override { metrics_.deferred(function_id); }

 private:
  void detach() {
    if (ingest_) ingest_->stop();
    if (attached_) {
      rt_.engine.set_invocation_observer(nullptr);
      rt_.engine.set_telemetry_sink({});
      attached_ = false;
    }
  }

  // Engine spans reach the store (and observers) at most kFlushInterval after they end, or
  // in batches of kSpanBatch, or before any query: one timer per interval, not a post per call.
  void arm_flush() {
    if (flush_armed_) return;
    flush_armed_ = true;
    flush_timer_.expires_after(kFlushInterval);
    flush_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_)](boost::system::error_code) {
      if (!alive.lock()) return;
      flush_armed_ = false;
      flush_engine_spans();
    });
  }

  void flush_engine_spans() {
    if (engine_spans_.empty()) return;
    // Two vectors take turns so their capacity is kept; swapping first means an end() called
    // from inside add_spans (an observer invoking a function) appends to the other one.
    std::vector<obs::StoredSpan> batch;
    batch.swap(engine_spans_);
    engine_spans_.swap(spare_spans_);
    telemetry_.add_spans(std::move(batch));
    batch.clear();
    if (spare_spans_.capacity() < batch.capacity()) spare_spans_.swap(batch);
  }

  // ---- intake ----
  void on_frame(std::string_view frame) {
    if (frame.size() > kMaxFrameBytes) {
      warn_bad_frame("{} frame of {} bytes dropped (limit {} bytes)", frame.substr(0, 4),
                     frame.size(), kMaxFrameBytes);
      return;
    }
    if (!ingest_->push(frame))
      warn_bad_frame("{} frame dropped: {} MiB of telemetry already waiting to be parsed",
                     frame.substr(0, 4), kMaxQueuedBytes >> 20);
  }

  template <typename... Args>
  void warn_bad_frame(fmt::format_string<Args...> f, Args&&... args) {
    const auto suppressed = bad_frames_.admit();
    if (!suppressed) return;
    std::string msg = fmt::format(f, std::forward<Args>(args)...);
    if (*suppressed)
      spdlog::warn("iii-observability: {} ({} more suppressed before this one)", msg, *suppressed);
    else
      spdlog::warn("iii-observability: {}", msg);
  }

  void deliver(obs::IngestResult&& r) {
    if (!r.error.empty()) {
      const size_t kept = r.spans.size() + r.logs.size() + r.metrics.size();
      warn_bad_frame("{} frame: {}{}", obs::to_string(r.kind), r.error,
                     kept || r.dropped
                         ? fmt::format(" ({} records dropped, {} kept)", r.dropped, kept)
                         : std::string(" (frame dropped)"));
    }
    switch (r.kind) {
      case obs::FrameKind::kTraces:
        telemetry_.add_spans(std::move(r.spans));
        break;
      case obs::FrameKind::kLogs:
        if (cfg_.logs_enabled) telemetry_.add_logs(std::move(r.logs));
        break;
      case obs::FrameKind::kMetrics:
        if (cfg_.metrics_enabled)
          telemetry_.add_metrics(std::move(r.metrics));
        else
          update_worker_metrics(r.metrics);
        break;
    }
  }

  // Console output and `log` triggers for every accepted log.
  void on_logs(const std::vector<obs::StoredLog>& logs) {
    if (cfg_.logs_console_output)
      for (const auto& l : logs) print(l);
    if (log_triggers_.empty() || firing_) return;
    firing_ = true;  // a log written by a log trigger's function does not fire triggers again
    for (const auto& l : logs) {
      const std::string level = l.level();
      json::value payload = l.to_json();
      rt_.engine.fire_type("log", payload, [this, &level](const engine::Trigger& t) {
        return log_triggers_.wants(t.id, level);
      });
    }
    firing_ = false;
  }

  void print(const obs::StoredLog& l) {
    const auto lvl = spd_level(l.severity_number);
    if (!spdlog::should_log(lvl)) return;
    json::object attrs;
    for (const auto& kv : l.attributes)
      if (kv.key() != "trace_id" && kv.key() != "span_id" && kv.key() != "service.name")
        attrs[kv.key()] = kv.value();
    std::string line = "[" + l.service_name + "] " + l.body;
    if (l.trace_id) line += " trace_id=" + *l.trace_id;
    if (l.span_id) line += " span_id=" + *l.span_id;
    if (!attrs.empty()) line += " " + json::serialize(attrs);
    spdlog::log(lvl, "{}", line);
  }

  // `iii.worker.*` gauges carry `worker.id`: the latest value of each becomes that worker's
  // latest_metrics (engine::workers::list).
  void update_worker_metrics(const std::vector<obs::StoredMetric>& metrics) {
    constexpr std::string_view kPrefix = "iii.worker.";
    for (const auto& m : metrics) {
      if (m.name.rfind(kPrefix, 0) != 0) continue;
      std::string key = m.name.substr(kPrefix.size());
      std::replace(key.begin(), key.end(), '.', '_');
      for (const auto& p : m.points) {
        const json::value* id = p.attributes.if_contains("worker.id");
        if (!id || !id->is_string()) continue;
        engine::Worker* w = rt_.engine.find_worker_by_id(id->get_string());
        if (!w) continue;
        if (!w->latest_metrics.is_object()) w->latest_metrics = json::object{};
        json::object& lm = w->latest_metrics.get_object();
        lm[key] = p.value;
        lm["timestamp_ms"] = p.timestamp_unix_nano / 1000000;
      }
    }
  }

  // ---- functions ----
  using Handler = std::function<void(const std::string& fn, const CallContext&, const json::object&,
                                     Completion&)>;
  void add(const std::string& id, const std::string& description, Handler h) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    rt_.engine.register_builtin(
        std::move(info), name_,
        [this, id, h = std::move(h), alive = std::weak_ptr<char>(alive_)](
            const CallContext& ctx, json::value input, Completion done) {
          if (!alive.lock()) return done(Outcome::fail("invocation_stopped", "engine stopping"));
          static const json::object kEmpty;
          const json::object* in = input.is_object() ? &input.get_object()
                                   : input.is_null() ? &kEmpty
                                                     : nullptr;
          if (!in) return done(bad_input(id, "expected a JSON object"));
          flush_engine_spans();
          telemetry_.sweep(telemetry_.now_ms());
          try {
            h(id, ctx, *in, done);
          } catch (const obs::InputError& e) {
            done(bad_input(id, e.what()));
          }
        });
  }

  void register_functions() {
    for (const auto& fn : kLogFunctions)
      add(fn.id, "Write a log record through the engine",
          [this, level = std::string(fn.level)](const std::string& id, const CallContext& ctx,
                                                const json::object& in, Completion& done) {
            write_log(id, level, ctx, in, done);
          });
    add("engine::logs::list", "Query stored logs",
        [this](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          done(Outcome::ok(obs::list_logs(telemetry_, in, engine::Engine::now_ms())));
        });
    add("engine::logs::clear", "Delete stored logs",
        [this](const std::string&, const CallContext&, const json::object&, Completion& done) {
          if (!telemetry_.options().store_logs) {
            done(Outcome::ok(
                json::object{{"success", true}, {"message", "No log storage initialized"}}));
            return;
          }
          telemetry_.clear_logs();
          done(Outcome::ok(json::object{{"success", true}}));
        });
    add("engine::traces::list", "Query stored traces (root spans)",
        [this](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          if (!memory_spans(done)) return;
          done(Outcome::ok(obs::list_traces(telemetry_, in)));
        });
    add("engine::traces::tree", "The spans of one trace as a tree",
        [this](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          if (!memory_spans(done)) return;
          done(Outcome::ok(obs::trace_tree(telemetry_, in)));
        });
    add("engine::traces::clear", "Delete stored spans",
        [this](const std::string&, const CallContext&, const json::object&, Completion& done) {
          if (!memory_spans(done)) return;
          telemetry_.clear_spans();
          done(Outcome::ok(json::object{{"success", true}}));
        });
    add("engine::metrics::list", "Engine metrics and stored SDK metrics",
        [this](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          done(Outcome::ok(obs::list_metrics(telemetry_, metrics_, rt_.engine.worker_count(), in,
                                             engine::Engine::now_ms())));
        });
    add("engine::rollups::list", "SDK metrics rolled up per minute, 5 minutes or hour",
        [this](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          done(Outcome::ok(obs::list_rollups(telemetry_, in, engine::Engine::now_ms())));
        });
    add("engine::sampling::rules", "The configured sampling rules",
        [this](const std::string&, const CallContext&, const json::object&, Completion& done) {
          done(Outcome::ok(sampling_rules()));
        });
    add("engine::health::check", "Health of the observability components",
        [this](const std::string&, const CallContext&, const json::object&, Completion& done) {
          done(Outcome::ok(health()));
        });
    add("engine::baggage::get", "A baggage entry of the caller's context",
        [](const std::string&, const CallContext& ctx, const json::object& in, Completion& done) {
          const json::value* k = in.if_contains("key");
          if (!k || !k->is_string()) throw obs::InputError("missing string field `key`");
          json::object all = obs::parse_baggage(ctx.baggage.value_or(""));
          const json::value* v = all.if_contains(k->get_string());
          done(Outcome::ok(json::object{{"value", v ? *v : json::value(nullptr)}}));
        });
    add("engine::baggage::set", "Informational: baggage travels with the caller's context",
        [](const std::string&, const CallContext&, const json::object& in, Completion& done) {
          const json::value* k = in.if_contains("key");
          const json::value* v = in.if_contains("value");
          if (!k || !k->is_string()) throw obs::InputError("missing string field `key`");
          if (!v || !v->is_string()) throw obs::InputError("missing string field `value`");
          done(Outcome::ok(json::object{
              {"success", true},
              {"message",
               "Baggage is carried by the caller's context (W3C baggage); set it in the SDK"}}));
        });
    add("engine::baggage::get_all", "All baggage entries of the caller's context",
        [](const std::string&, const CallContext& ctx, const json::object&, Completion& done) {
          done(
              Outcome::ok(json::object{{"baggage", obs::parse_baggage(ctx.baggage.value_or(""))}}));
        });
  }

  bool memory_spans(Completion& done) {
    if (telemetry_.options().store_spans) return true;
    done(Outcome::fail("memory_exporter_not_enabled",
                       "In-memory span storage is not available. Set exporter: memory or both in "
                       "config."));
    return false;
  }

  void write_log(const std::string& id, const std::string& level, const CallContext& ctx,
                 const json::object& in, Completion& done) {
    const json::value* msg = in.if_contains("message");
    if (!msg || !msg->is_string()) throw obs::InputError("missing string field `message`");
    auto opt_str = [&](std::string_view k) -> std::optional<std::string> {
      const json::value* v = in.if_contains(k);
      if (!v || v->is_null()) return std::nullopt;
      if (!v->is_string()) throw obs::InputError("field '" + std::string(k) + "' must be a string");
      return std::string(v->get_string());
    };
    obs::StoredLog l;
    l.timestamp_unix_nano = l.observed_timestamp_unix_nano = obs::now_unix_nano();
    l.severity_number = obs::severity_number_of(level);
    l.severity_text = level == "warn" ? "WARN" : obs::severity_text_of(l.severity_number);
    l.body = std::string(msg->get_string());
    if (const json::value* data = in.if_contains("data"); data && !data->is_null()) {
      if (data->is_object())
        l.attributes = data->get_object();
      else
        l.attributes["data"] = *data;
    }
    l.trace_id = opt_str("trace_id");
    l.span_id = opt_str("span_id");
    if ((!l.trace_id || !l.span_id) && ctx.traceparent)
      if (auto tp = obs::parse_traceparent(*ctx.traceparent)) {
        if (!l.trace_id) l.trace_id = tp->trace_id;
        if (!l.span_id) l.span_id = tp->span_id;
      }
    l.service_name = opt_str("service_name").value_or("unknown");
    l.resource["service.name"] = l.service_name;
    l.scope_name = "iii";
    (void)id;
    if (cfg_.logs_enabled) {
      std::vector<obs::StoredLog> batch;
      batch.push_back(std::move(l));
      telemetry_.add_logs(std::move(batch));
    } else if (cfg_.logs_console_output) {
      print(l);
    }
    done(Outcome::empty());  // the original's null result is absent on the wire
  }

  json::object sampling_rules() const { return extras_->sampling_rules(); }

  json::object health() const {
    auto component = [](bool on, json::object details) {
      return json::object{{"status", on ? "healthy" : "disabled"}, {"details", std::move(details)}};
    };
    auto store = [&](obs::Kind k, size_t max) {
      return json::object{{"count", telemetry_.count(k)},
                          {"max_count", max},
                          {"bytes", telemetry_.bytes(k)},
                          {"evicted", telemetry_.evicted(k)},
                          {"received", telemetry_.received(k)}};
    };
    const auto& o = telemetry_.options();
    json::object otel{{"service_name", cfg_.service_name},
                      {"service_version", cfg_.service_version},
                      {"exporter", cfg_.exporter},
                      {"telemetry_frames", rt_.engine.stats().telemetry_frames},
                      {"frames_parsed", ingest_ ? ingest_->frames_parsed() : 0}};
    if (cfg_.spans_exported()) otel["endpoint"] = cfg_.endpoint;
    for (auto& kv : extras_->health_details()) otel[kv.key()] = kv.value();  // h-obsx
    json::object spans = store(obs::Kind::kSpans, o.spans.max_count);
    spans["storage"] = o.store_spans ? "memory" : "none";
    json::object components{{"otel", component(cfg_.enabled, std::move(otel))},
                            {"metrics", component(cfg_.enabled && cfg_.metrics_enabled,
                                                  store(obs::Kind::kMetrics, o.metrics.max_count))},
                            {"logs", component(cfg_.enabled && cfg_.logs_enabled,
                                               store(obs::Kind::kLogs, o.logs.max_count))},
                            {"spans", component(cfg_.enabled && o.store_spans, std::move(spans))}};
    return json::object{{"status", "healthy"},
                        {"components", std::move(components)},
                        {"timestamp", engine::Engine::now_ms()},
                        {"version", III_VERSION}};
  }

  engine::Runtime& rt_;
  std::string name_;
  obs::ObsConfig cfg_;
  obs::Telemetry telemetry_;
  obs::EngineMetrics metrics_;
  LogTriggerType log_triggers_;
  std::unique_ptr<obs::IngestThread> ingest_;
  std::vector<obs::StoredSpan> engine_spans_, spare_spans_;
  boost::asio::steady_timer flush_timer_{rt_.io};
  bool flush_armed_ = false;
  bool firing_ = false;
  bool attached_ = true;
  logging::WarningLimiter bad_frames_;
  std::mt19937_64 rng_;
  std::shared_ptr<char> alive_ = std::make_shared<char>(0);
  std::unique_ptr<obs::ObsExtras> extras_;  // h-obsx
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_observability(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<Observability>(entry, rt);
}

}  // namespace iii::workers
