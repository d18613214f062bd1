// Process-wide logging on top of spdlog: level/format come from the iii-observability worker's
// config (`level`, `format`). Everything logs through the spdlog default logger to stdout.
#pragma once

#include <spdlog/common.h>
#include <spdlog/formatter.h>

#include <memory>
#include <string>

namespace iii::logging {

// Replaces the default spdlog logger with one writing to stdout. `level` is one of trace, debug,
// info, warn (or warning), error, off, case-insensitive; anything else throws
// std::invalid_argument. `format` "json" gives one JSON object per line, anything else the
// human format (coloured on a tty). Info and above are flushed immediately.
void init(const std::string& level, const std::string& format);

// Building blocks of init(), exposed for tests and for callers with their own sinks.
spdlog::level::level_enum parse_level(const std::string& level);
std::unique_ptr<spdlog::formatter> make_formatter(const std::string& format);

}  // namespace iii::logging
