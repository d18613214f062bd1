#include "common/logging.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <stdexcept>
#include <string_view>

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
      case '"': append(dest, "\\\""); break;
      case '\\': append(dest, "\\\\"); break;
      case '\n': append(dest, "\\n"); break;
      case '\r': append(dest, "\\r"); break;
      case '\t': append(dest, "\\t"); break;
      case '\b': append(dest, "\\b"); break;
      case '\f': append(dest, "\\f"); break;
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
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
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
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                tm.tm_min, tm.tm_sec, static_cast<int>(millis));

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

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

spdlog::level::level_enum parse_level(const std::string& level) {
  const std::string l = lower(level);
  if (l == "trace") return spdlog::level::trace;
  if (l == "debug") return spdlog::level::debug;
  if (l == "info") return spdlog::level::info;
  if (l == "warn" || l == "warning") return spdlog::level::warn;
  if (l == "error") return spdlog::level::err;
  if (l == "off") return spdlog::level::off;
  throw std::invalid_argument("invalid log level '" + level +
                              "' (expected one of: trace, debug, info, warn, error, off)");
}

std::unique_ptr<spdlog::formatter> make_formatter(const std::string& format) {
  if (lower(format) == "json") return std::make_unique<JsonFormatter>();
  // %^...%$ marks the coloured range; colour sinks ignore it when stdout is not a tty.
  return std::make_unique<spdlog::pattern_formatter>("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
}

void init(const std::string& level, const std::string& format) {
  const auto lvl = parse_level(level);  // validate before touching the current logger
  const bool json = lower(format) == "json";
  spdlog::sink_ptr sink;
  if (json) {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::stdout_color_sink_mt>();
  }
  auto logger = std::make_shared<spdlog::logger>("iii", std::move(sink));
  logger->set_formatter(make_formatter(format));
  logger->set_level(lvl);
  // Tests and supervisors read stdout (e.g. for the listening port) while we run.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace iii::logging
