// Process-wide logging on top of spdlog: level/format come from the iii-observability worker's
// config (`level`, `format`) or the CLI. Everything logs through the spdlog default logger, an
// asynchronous logger: the calling thread (the engine thread) only puts the message in a bounded
// queue and never waits; one logging thread formats and writes to stdout. When the queue is full
// (stdout slower than the engine, or a reader that stopped reading) the oldest queued messages
// are dropped and counted; the count is written as a warning before the next message that gets
// out, so drops are visible.
#pragma once

#include <spdlog/common.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/sink.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace iii::logging {

// Messages the queue holds before the oldest are dropped (~1.7 MB preallocated).
inline constexpr size_t kDefaultQueueSize = 4096;

// Replaces the default spdlog logger with an asynchronous one writing to stdout. `level` and
// `format` are validated first (parse_level, parse_format; std::invalid_argument, and the current
// logger stays). Messages queued before a re-init are still written, in order.
void init(const std::string& level, const std::string& format);

// Same, writing to `sink` instead of stdout through a queue of `queue_size` messages (tests).
void init_with_sink(spdlog::sink_ptr sink, const std::string& level, const std::string& format,
                    size_t queue_size = kDefaultQueueSize);

// Waits (at most `timeout`) until everything queued so far is written and flushed, then makes the
// default logger a synchronous stdout logger and stops the logging thread. Returns false when the
// output did not drain in time (stdout blocked): the logging thread is then left alone, and the
// caller should leave with std::_Exit, since joining it could wait forever.
bool shutdown(std::chrono::milliseconds timeout = std::chrono::seconds(2));

// Messages dropped because the queue was full, since the current queue was created.
uint64_t dropped_messages();

// `level` in the original's syntax (tracing's filter): a comma-separated list of directives,
// each a level (trace, debug, info, warn, error, off, case-insensitive; or 0-5 with 0 = off,
// 5 = trace; `warning` is accepted too) or `target=level`. A bare level sets the engine's level;
// `iii…=level` directives (the engine's own targets) override it, the most verbose winning;
// other targets (`hyper=warn`) are accepted and ignored since this engine has no such modules.
// With neither, logging is off, as tracing's filter does. Anything else (an unknown level, a
// target without a level, an empty list) throws std::invalid_argument with a message naming the
// value and what is accepted.
spdlog::level::level_enum parse_level(const std::string& level);

enum class Format { kText, kJson };
// "text" (human, coloured on a tty) or "json" (one object per line), case-insensitive; anything
// else throws std::invalid_argument.
Format parse_format(const std::string& format);

std::unique_ptr<spdlog::formatter> make_formatter(Format format);

// Limits a repeated warning from one source (e.g. bad frames from one connection): the first
// `burst` occurrences pass, then at most one per `interval`, which carries the number of
// occurrences suppressed since the previous one that passed. Not thread-safe (one per source,
// used on that source's thread).
class WarningLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr uint32_t kDefaultBurst = 5;

  explicit WarningLimiter(uint32_t burst = kDefaultBurst,
                          Clock::duration interval = std::chrono::seconds(1))
      : burst_(burst), interval_(interval) {}
  WarningLimiter(WarningLimiter&& o) noexcept;
  WarningLimiter& operator=(WarningLimiter&&) = delete;
  // Logs "<summary>: N more suppressed" (warn) if occurrences were suppressed since the last
  // one that passed and a summary was set.
  ~WarningLimiter();

  // nullopt: suppress this occurrence. Otherwise log it, mentioning the returned number of
  // occurrences suppressed before it when that is not zero.
  std::optional<uint64_t> admit(Clock::time_point now = Clock::now());

  // Occurrences suppressed since the last one that passed.
  uint64_t pending() const { return suppressed_; }
  uint64_t total_suppressed() const { return total_suppressed_; }

  bool has_summary() const { return !summary_.empty(); }
  // What the destructor's line starts with, e.g. "worker <id>: invalid messages".
  void set_summary(std::string summary) { summary_ = std::move(summary); }

 private:
  uint32_t burst_;
  Clock::duration interval_;
  uint64_t seen_ = 0;
  uint64_t suppressed_ = 0;
  uint64_t total_suppressed_ = 0;
  Clock::time_point last_passed_{};
  std::string summary_;
};

}  // namespace iii::logging
