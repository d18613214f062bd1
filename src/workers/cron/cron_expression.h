// The cron expression language of the original iii-cron (the Rust `cron` crate, 0.15), in UTC:
//
//   sec min hour day-of-month month day-of-week [year]
//
// 6 or 7 whitespace-separated fields, seconds first. Each field is a comma-separated list of
// `*`, `n`, `a-b`, and any of those with a step `/n` (`5/10` = 5, 15, 25, ...); months and
// weekdays also take names (JAN..DEC, SUN..SAT, full names too, any case). `?` means `*` in the
// day fields only. Day-of-week is 1-7 with Sunday = 1. Day-of-month and day-of-week must BOTH
// match. Shorthands: @yearly @monthly @weekly @daily @hourly. 5-field crontab lines are refused.
#pragma once

#include <bitset>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iii::workers::cron {

class CronExpression {
 public:
  using Seconds = std::chrono::sys_seconds;

  struct Parsed;
  // Parses `text`; on failure the result holds a reason (without the expression itself).
  static Parsed parse(std::string_view text);

  // The first fire time strictly after `t` (UTC), or none when the expression never fires
  // again before the end of year 2100.
  std::optional<Seconds> next_after(std::chrono::system_clock::time_point t) const;
  std::optional<Seconds> next_after(Seconds t) const;

  // Whether `t` (whole seconds) matches every field.
  bool matches(Seconds t) const;

  static constexpr int kMinYear = 1970;
  static constexpr int kMaxYear = 2100;

 private:
  uint64_t seconds_ = 0;  // bits 0-59
  uint64_t minutes_ = 0;  // bits 0-59
  uint32_t hours_ = 0;    // bits 0-23
  uint32_t days_ = 0;     // bits 1-31
  uint16_t months_ = 0;   // bits 1-12
  uint8_t weekdays_ = 0;  // bits 1-7, Sunday = 1
  std::bitset<kMaxYear - kMinYear + 1> years_;
};

struct CronExpression::Parsed {
  std::optional<CronExpression> expression;
  std::string error;
  bool ok() const { return expression.has_value(); }
};

// RFC 3339 in UTC the way the original prints it: `2026-05-05T10:00:00+00:00`, with 3, 6 or 9
// fractional digits when the time has a sub-second part (the fewest that are exact).
std::string format_rfc3339(std::chrono::system_clock::time_point t);

}  // namespace iii::workers::cron
