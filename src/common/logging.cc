#include "common/logging.h"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace iii::logging {
namespace {

void append(spdlog::memory_buf_t& dest, std::string_view s) {
  dest.append(s.data(), s.data() + s.size());
}

// JSON string body escaping (RFC 8259): quote, backslash and all control characters. Other
// bytes, including UTF-8 sequences, pass through unchanged.
void append_json_escaped(spdlog::memory_buf_t& dest, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char c : s) {
    switch (c) {
      case '"':
        append(dest, "\\\"");
        break;
      case '\\':
        append(dest, "\\\\");
        break;
      case '\n':
        append(dest, "\\n");
        break;
      case '\r':
        append(dest, "\\r");
        break;
      case '\t':
        append(dest, "\\t");
        break;
      case '\b':
        append(dest, "\\b");
        break;
      case '\f':
        append(dest, "\\f");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          const char esc[] = {'\\', 'u', '0', '0', kHex[(c >> 4) & 0xf], kHex[c & 0xf]};
          dest.append(esc, esc + sizeof(esc));
        } else {
          dest.push_back(c);
        }
    }
  }
}

std::string_view json_level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

// {"ts":"2026-01-01T12:00:00.123Z","level":"info","msg":"..."} — one object per line so log
// collectors can parse each line on its own.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const auto since_epoch = msg.time.time_since_epoch();
    const auto secs = duration_cast<seconds>(since_epoch);
    const auto millis = duration_cast<milliseconds>(since_epoch - secs).count();
    const std::time_t t = static_cast<std::time_t>(secs.count());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[40];
    const int n = std::snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                                tm.tm_sec, static_cast<int>(millis));

    append(dest, "{\"ts\":\"");
    dest.append(ts, ts + std::max(n, 0));
    append(dest, "\",\"level\":\"");
    append(dest, json_level_name(msg.level));
    append(dest, "\",\"msg\":\"");
    append_json_escaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    append(dest, "\"}\n");
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// One level name as tracing's LevelFilter reads it (plus `warning`).
std::optional<spdlog::level::level_enum> level_name(std::string_view s) {
  const std::string l = lower(s);
  if (l == "trace" || l == "5") return spdlog::level::trace;
  if (l == "debug" || l == "4") return spdlog::level::debug;
  if (l == "info" || l == "3") return spdlog::level::info;
  if (l == "warn" || l == "warning" || l == "2") return spdlog::level::warn;
  if (l == "error" || l == "1") return spdlog::level::err;
  if (l == "off" || l == "0") return spdlog::level::off;
  return std::nullopt;
}

// The engine's own targets in the original are `iii` and its modules (`iii::…`).
bool is_engine_target(std::string_view target) {
  return target == "iii" || target.starts_with("iii::") || target.starts_with("iii_");
}

// What one queue of messages shares between the loggers writing through it.
struct Queue {
  explicit Queue(spdlog::details::thread_pool* p) : pool(p) {}
  spdlog::details::thread_pool* pool;  // owned by Global; outlives its own thread
  size_t reported_drops = 0;           // logging thread only
  std::mutex m;
  std::condition_variable cv;
  uint64_t flushes = 0;  // guarded by m
};

// Between the async logger and the real sink, on the logging thread: before the next message
// that gets out, writes how many were dropped since the last report, and counts flushes so
// shutdown() can wait for one.
class DrainSink final : public spdlog::sinks::sink {
 public:
  DrainSink(spdlog::sink_ptr inner, std::shared_ptr<Queue> q)
      : inner_(std::move(inner)), q_(std::move(q)) {}

  void log(const spdlog::details::log_msg& msg) override {
    report_drops(msg.time);
    inner_->log(msg);
  }

  void flush() override {
    report_drops(spdlog::log_clock::now());
    inner_->flush();
    {
      std::lock_guard lock(q_->m);
      ++q_->flushes;
    }
    q_->cv.notify_all();
  }

  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    inner_->set_formatter(std::move(f));
  }

 private:
  void report_drops(spdlog::log_clock::time_point when) {
    const size_t dropped = q_->pool->overrun_counter();
    if (dropped <= q_->reported_drops) return;
    const std::string text = fmt::format(
        "{} log messages dropped: the log output (stdout) was not keeping up with the engine",
        dropped - q_->reported_drops);
    q_->reported_drops = dropped;
    inner_->log(
        spdlog::details::log_msg(when, spdlog::source_loc{}, "iii", spdlog::level::warn, text));
  }

  spdlog::sink_ptr inner_;
  std::shared_ptr<Queue> q_;
};

// Never destroyed: at exit the logging thread may be stuck writing to a blocked stdout, and
// destroying its pool would join it. shutdown() stops it when the output has drained.
struct Global {
  std::mutex m;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  size_t queue_size = 0;
  std::shared_ptr<Queue> queue;
  std::shared_ptr<spdlog::async_logger> logger;
  Format format = Format::kText;
  // Loggers that were the default: spdlog::info() on another thread may hold a raw pointer to
  // one while it is replaced, so they are kept (a handful per process).
  std::vector<std::shared_ptr<spdlog::logger>> retired;
};

Global& global() {
  static Global* g = new Global;
  return *g;
}

spdlog::sink_ptr stdout_sink(Format format) {
  if (format == Format::kJson) return std::make_shared<spdlog::sinks::stdout_sink_mt>();
  return std::make_shared<spdlog::sinks::stdout_color_sink_mt>();
}

}  // namespace

spdlog::level::level_enum parse_level(const std::string& level) {
  const auto invalid = [&](const std::string& why) {
    return std::invalid_argument(
        "invalid log level '" + level + "': " + why +
        " (expected trace, debug, info, warn, error or off, optionally as a filter such as "
        "'info,iii=debug')");
  };
  std::optional<spdlog::level::level_enum> bare, engine;
  bool any = false;
  std::string_view rest = level;
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view directive = trim(rest.substr(0, comma));
    if (!directive.empty()) {
      any = true;
      const auto eq = directive.find('=');
      if (eq == std::string_view::npos) {
        const auto l = level_name(directive);
        if (!l) throw invalid("'" + std::string(directive) + "' is not a level");
        bare = l;
      } else {
        const std::string_view target = trim(directive.substr(0, eq));
        const auto l = level_name(trim(directive.substr(eq + 1)));
        if (target.empty() || !l)
          throw invalid("'" + std::string(directive) + "' is not a target=level directive");
        // spdlog's levels grow from trace (0) to off: the most verbose is the smallest.
        if (is_engine_target(target)) engine = engine ? std::min(*engine, *l) : *l;
      }
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (!any) throw invalid("it is empty");
  if (engine) return *engine;
  return bare.value_or(spdlog::level::off);
}

Format parse_format(const std::string& format) {
  const std::string f = lower(format);
  if (f == "json") return Format::kJson;
  if (f == "text") return Format::kText;
  throw std::invalid_argument("invalid log format '" + format + "' (expected text or json)");
}

std::unique_ptr<spdlog::formatter> make_formatter(Format format) {
  if (format == Format::kJson) return std::make_unique<JsonFormatter>();
  // %^...%$ marks the coloured range; colour sinks ignore it when stdout is not a tty.
  return std::make_unique<spdlog::pattern_formatter>("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
}

void init_with_sink(spdlog::sink_ptr sink, const std::string& level, const std::string& format,
                    size_t queue_size) {
  const auto lvl = parse_level(level);  // validate before touching the current logger
  const Format fmt = parse_format(format);
  Global& g = global();
  std::lock_guard lock(g.m);
  if (!g.pool || g.queue_size != queue_size) {
    // Only tests change the size; the previous pool writes what it holds, then stops.
    g.logger.reset();
    g.pool = std::make_shared<spdlog::details::thread_pool>(queue_size, 1);
    g.queue_size = queue_size;
    g.queue = std::make_shared<Queue>(g.pool.get());
  }
  auto drain = std::make_shared<DrainSink>(std::move(sink), g.queue);
  // overrun_oldest: a full queue overwrites its oldest message instead of making the caller
  // wait, so the engine thread never blocks on log output.
  auto logger = std::make_shared<spdlog::async_logger>(
      "iii", std::move(drain), g.pool, spdlog::async_overflow_policy::overrun_oldest);
  logger->set_formatter(make_formatter(fmt));
  logger->set_level(lvl);
  g.logger = logger;
  g.format = fmt;
  g.retired.push_back(spdlog::default_logger());
  spdlog::set_default_logger(std::move(logger));
}

void init(const std::string& level, const std::string& format) {
  init_with_sink(stdout_sink(parse_format(format)), level, format);
}

bool shutdown(std::chrono::milliseconds timeout) {
  Global& g = global();
  std::lock_guard lock(g.m);
  if (!g.pool) return true;
  Queue& q = *g.queue;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  uint64_t start;
  {
    std::lock_guard l(q.m);
    start = q.flushes;
  }
  bool drained = false;
  while (!drained && std::chrono::steady_clock::now() < deadline) {
    // A flush is queued behind everything logged so far; when it has run, all of that is out.
    // A full queue may overwrite it, so it is posted again until one gets through.
    g.logger->flush();
    std::unique_lock l(q.m);
    drained = q.cv.wait_until(
        l, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)),
        [&] { return q.flushes > start; });
  }
  if (!drained) return false;
  auto sync = std::make_shared<spdlog::logger>("iii", stdout_sink(g.format));
  sync->set_formatter(make_formatter(g.format));
  sync->set_level(g.logger->level());
  sync->flush_on(spdlog::level::trace);
  g.retired.push_back(spdlog::default_logger());
  spdlog::set_default_logger(std::move(sync));
  g.logger.reset();
  g.pool.reset();  // joins the logging thread, which has nothing left to write
  g.queue.reset();
  g.queue_size = 0;
  return true;
}

uint64_t dropped_messages() {
  Global& g = global();
  std::lock_guard lock(g.m);
  return g.pool ? g.pool->overrun_counter() : 0;
}

WarningLimiter::WarningLimiter(WarningLimiter&& o) noexcept
    : burst_(o.burst_),
      interval_(o.interval_),
      seen_(o.seen_),
      suppressed_(std::exchange(o.suppressed_, 0)),
      total_suppressed_(o.total_suppressed_),
      last_passed_(o.last_passed_),
      summary_(std::move(o.summary_)) {
  o.summary_.clear();
}

WarningLimiter::~WarningLimiter() {
  if (suppressed_ > 0 && !summary_.empty())
    spdlog::warn("{}: {} more suppressed", summary_, suppressed_);
}

std::optional<uint64_t> WarningLimiter::admit(Clock::time_point now) {
  ++seen_;
  if (seen_ <= burst_ || now - last_passed_ >= interval_) {
    last_passed_ = now;
    return std::exchange(suppressed_, 0);
  }
  ++suppressed_;
  ++total_suppressed_;
  return std::nullopt;
}

}  // namespace iii::logging
