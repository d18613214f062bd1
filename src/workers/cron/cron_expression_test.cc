#include "workers/cron/cron_expression.h"

#include <gtest/gtest.h>

namespace iii::workers::cron {
namespace {

using namespace std::chrono;

sys_seconds at(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s};
}

CronExpression expr(const std::string& text) {
  auto p = CronExpression::parse(text);
  EXPECT_TRUE(p.ok()) << text << ": " << p.error;
  return p.expression.value_or(CronExpression{});
}

std::string error_of(const std::string& text) {
  auto p = CronExpression::parse(text);
  EXPECT_FALSE(p.ok()) << text << " should be refused";
  return p.error;
}

std::string next(const std::string& text, sys_seconds from) {
  auto n = expr(text).next_after(from);
  return n ? format_rfc3339(*n) : "never";
}

// The first `n` fire times after `from`.
std::vector<std::string> series(const std::string& text, sys_seconds from, int n) {
  std::vector<std::string> out;
  auto e = expr(text);
  for (int i = 0; i < n; ++i) {
    auto t = e.next_after(from);
    if (!t) break;
    out.push_back(format_rfc3339(*t));
    from = *t;
  }
  return out;
}

// 2024-01-01 was a Monday; 2024-01-07 a Sunday.
const sys_seconds kMonday = at(2024, 1, 1);

TEST(CronExpression, EverySecondIsStrictlyAfter) {
  EXPECT_EQ(next("* * * * * *", at(2026, 5, 5, 10)), "2026-05-05T10:00:01+00:00");
  // A time inside a second moves to the next whole second.
  auto e = expr("* * * * * *");
  auto t = system_clock::time_point(at(2026, 5, 5, 10)) + milliseconds(500);
  EXPECT_EQ(format_rfc3339(*e.next_after(t)), "2026-05-05T10:00:01+00:00");
}

TEST(CronExpression, PointsListsRangesAndSteps) {
  const auto t = at(2026, 5, 5, 10, 0, 0);
  EXPECT_EQ(next("0 * * * * *", t), "2026-05-05T10:01:00+00:00");
  EXPECT_EQ(series("0,15,30,45 * * * * *", t, 4),
            (std::vector<std::string>{"2026-05-05T10:00:15+00:00", "2026-05-05T10:00:30+00:00",
                                      "2026-05-05T10:00:45+00:00", "2026-05-05T10:01:00+00:00"}));
  EXPECT_EQ(series("10-12 * * * * *", t, 4),
            (std::vector<std::string>{"2026-05-05T10:00:10+00:00", "2026-05-05T10:00:11+00:00",
                                      "2026-05-05T10:00:12+00:00", "2026-05-05T10:01:10+00:00"}));
  EXPECT_EQ(series("*/20 * * * * *", t, 3),
            (std::vector<std::string>{"2026-05-05T10:00:20+00:00", "2026-05-05T10:00:40+00:00",
                                      "2026-05-05T10:01:00+00:00"}));
  // `a/n` runs from a to the field's maximum.
  EXPECT_EQ(series("5/20 * * * * *", t, 4),
            (std::vector<std::string>{"2026-05-05T10:00:05+00:00", "2026-05-05T10:00:25+00:00",
                                      "2026-05-05T10:00:45+00:00", "2026-05-05T10:01:05+00:00"}));
  EXPECT_EQ(series("10-30/10 * * * * *", t, 4),
            (std::vector<std::string>{"2026-05-05T10:00:10+00:00", "2026-05-05T10:00:20+00:00",
                                      "2026-05-05T10:00:30+00:00", "2026-05-05T10:01:10+00:00"}));
  EXPECT_EQ(next("0 30 9-17/4 * * *", t), "2026-05-05T13:30:00+00:00");
  EXPECT_EQ(next("0 0,30 * * * *", at(2026, 5, 5, 10, 29, 59)), "2026-05-05T10:30:00+00:00");
  EXPECT_EQ(next("1,2-3,*/30 * * * * *", t), "2026-05-05T10:00:01+00:00");
  // A step larger than the range keeps its start only.
  EXPECT_EQ(series("7/100 * * * * *", t, 2),
            (std::vector<std::string>{"2026-05-05T10:00:07+00:00", "2026-05-05T10:01:07+00:00"}));
}

TEST(CronExpression, MonthNames) {
  EXPECT_EQ(series("0 0 0 1 JAN,jul *", at(2026, 2, 1), 2),
            (std::vector<std::string>{"2026-07-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"}));
  EXPECT_EQ(next("0 0 0 1 March *", at(2026, 1, 1)), "2026-03-01T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 1 OCT-DEC *", at(2026, 1, 1)), "2026-10-01T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 1 feb-dec/5 *", at(2026, 3, 1)), "2026-07-01T00:00:00+00:00");
}

TEST(CronExpression, SundayIsOne) {
  EXPECT_EQ(next("0 0 12 * * 1", kMonday), "2024-01-07T12:00:00+00:00");
  EXPECT_EQ(next("0 0 12 * * SUN", kMonday), "2024-01-07T12:00:00+00:00");
  EXPECT_EQ(next("0 0 12 * * sunday", kMonday), "2024-01-07T12:00:00+00:00");
  EXPECT_EQ(next("0 0 12 * * 7", kMonday), "2024-01-06T12:00:00+00:00");  // Saturday
  EXPECT_EQ(next("0 0 12 * * SAT", kMonday), "2024-01-06T12:00:00+00:00");
  EXPECT_EQ(next("0 0 12 * * 2", kMonday), "2024-01-01T12:00:00+00:00");  // Monday
  // 1-5 is Sunday to Thursday (the README's "Monday to Friday" is wrong); MON-FRI is 2-6.
  EXPECT_EQ(series("0 0 0 * * 1-5", at(2024, 1, 4, 1), 3),
            (std::vector<std::string>{"2024-01-07T00:00:00+00:00", "2024-01-08T00:00:00+00:00",
                                      "2024-01-09T00:00:00+00:00"}));
  EXPECT_EQ(series("0 0 0 * * MON-FRI", at(2024, 1, 5, 1), 2),
            (std::vector<std::string>{"2024-01-08T00:00:00+00:00", "2024-01-09T00:00:00+00:00"}));
  EXPECT_EQ(series("0 0 0 * * Tue,THU", kMonday, 3),
            (std::vector<std::string>{"2024-01-02T00:00:00+00:00", "2024-01-04T00:00:00+00:00",
                                      "2024-01-09T00:00:00+00:00"}));
}

TEST(CronExpression, QuestionMarkInDayFieldsOnly) {
  EXPECT_EQ(next("0 0 0 ? * MON", at(2024, 1, 2)), "2024-01-08T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 15 * ?", kMonday), "2024-01-15T00:00:00+00:00");
  EXPECT_NE(error_of("? * * * * *").find("'?' is only allowed in day-of-month and day-of-week"),
            std::string::npos);
  EXPECT_NE(error_of("0 0 0 1 ? *").find("month"), std::string::npos);
}

TEST(CronExpression, DayOfMonthAndDayOfWeekMustBothMatch) {
  // Friday the 13th: 2024-09-13, then 2024-12-13.
  EXPECT_EQ(series("0 0 0 13 * FRI", kMonday, 2),
            (std::vector<std::string>{"2024-09-13T00:00:00+00:00", "2024-12-13T00:00:00+00:00"}));
  EXPECT_FALSE(expr("0 0 0 13 * FRI").matches(at(2024, 1, 13)));  // a Saturday
  EXPECT_TRUE(expr("0 0 0 13 * FRI").matches(at(2024, 9, 13)));
}

TEST(CronExpression, EdgeDays) {
  // Feb 29 only in leap years (2100 is not one).
  EXPECT_EQ(next("0 0 0 29 2 *", at(2024, 3, 1)), "2028-02-29T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 29 2 *", at(2024, 2, 28, 23, 59, 59)), "2024-02-29T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 29 2 *", at(2096, 3, 1)), "never");
  // Day 31 skips the short months.
  EXPECT_EQ(series("0 0 0 31 * *", at(2024, 1, 31, 1), 3),
            (std::vector<std::string>{"2024-03-31T00:00:00+00:00", "2024-05-31T00:00:00+00:00",
                                      "2024-07-31T00:00:00+00:00"}));
  EXPECT_EQ(next("0 0 0 30 * *", at(2023, 1, 30, 1)), "2023-03-30T00:00:00+00:00");
  // A date that never exists never fires.
  EXPECT_EQ(next("0 0 0 30 2 *", kMonday), "never");
  EXPECT_EQ(next("0 0 0 31 4,6,9,11 *", kMonday), "never");
}

TEST(CronExpression, AcrossYearEnds) {
  EXPECT_EQ(next("0 0 0 1 1 *", at(2024, 12, 31, 23, 59, 59)), "2025-01-01T00:00:00+00:00");
  EXPECT_EQ(next("* * * * * *", at(2024, 12, 31, 23, 59, 59)), "2025-01-01T00:00:00+00:00");
  EXPECT_EQ(next("59 59 23 31 12 *", at(2024, 12, 31, 23, 59, 59)), "2025-12-31T23:59:59+00:00");
  EXPECT_EQ(next("0 0 0 * * MON", at(2024, 12, 31)), "2025-01-06T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 1 1 * 2030", kMonday), "2030-01-01T00:00:00+00:00");
  EXPECT_EQ(next("0 0 0 1 1 * 2030", at(2030, 1, 1)), "never");
  EXPECT_EQ(next("0 0 0 1 1 * 2020-2022", kMonday), "never");
  EXPECT_EQ(series("0 0 0 1 1 * 2025/5", kMonday, 3),
            (std::vector<std::string>{"2025-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00",
                                      "2035-01-01T00:00:00+00:00"}));
  EXPECT_EQ(next("* * * * * *", at(2100, 12, 31, 23, 59, 59)), "never");
}

TEST(CronExpression, Shorthands) {
  const auto t = at(2024, 1, 3, 10, 20, 30);  // a Wednesday
  EXPECT_EQ(next("@yearly", t), "2025-01-01T00:00:00+00:00");
  EXPECT_EQ(next("@monthly", t), "2024-02-01T00:00:00+00:00");
  EXPECT_EQ(next("@weekly", t), "2024-01-07T00:00:00+00:00");  // Sunday
  EXPECT_EQ(next("@daily", t), "2024-01-04T00:00:00+00:00");
  EXPECT_EQ(next("@hourly", t), "2024-01-03T11:00:00+00:00");
  EXPECT_NE(error_of("@annually").find("unknown shorthand"), std::string::npos);
  EXPECT_NE(error_of("@reboot").find("unknown shorthand"), std::string::npos);
}

TEST(CronExpression, WhitespaceBetweenFields) {
  EXPECT_EQ(next("  0\t0  *  * * *  ", at(2024, 1, 1, 5, 30)), "2024-01-01T06:00:00+00:00");
}

TEST(CronExpression, RefusedWithAReason) {
  EXPECT_NE(error_of("*/5 * * * *").find("5-field crontab expressions are not supported"),
            std::string::npos);
  EXPECT_NE(error_of("*/5 * * * *").find("e.g. '0 */5 * * * *'"), std::string::npos);
  EXPECT_NE(error_of("* * * *").find("expected 6 or 7 fields"), std::string::npos);
  EXPECT_NE(error_of("* * * * * * * *").find("got 8"), std::string::npos);
  EXPECT_EQ(error_of(""), "empty expression");
  EXPECT_EQ(error_of("60 * * * * *"), "seconds: 60 is out of range (0-59)");
  EXPECT_EQ(error_of("0 60 * * * *"), "minutes: 60 is out of range (0-59)");
  EXPECT_EQ(error_of("0 0 24 * * *"), "hours: 24 is out of range (0-23)");
  EXPECT_EQ(error_of("0 0 0 0 * *"), "day-of-month: 0 is out of range (1-31)");
  EXPECT_EQ(error_of("0 0 0 32 * *"), "day-of-month: 32 is out of range (1-31)");
  EXPECT_EQ(error_of("0 0 0 * 13 *"), "month: 13 is out of range (1-12)");
  EXPECT_EQ(error_of("0 0 0 * * 0"), "day-of-week: 0 is out of range (1-7, Sunday = 1)");
  EXPECT_EQ(error_of("0 0 0 * * 8"), "day-of-week: 8 is out of range (1-7, Sunday = 1)");
  EXPECT_EQ(error_of("0 0 0 * * * 1969"), "year: 1969 is out of range (1970-2100)");
  EXPECT_EQ(error_of("0 0 0 * FOO *"), "month: unknown name 'FOO'");
  EXPECT_EQ(error_of("0 0 0 * * MON-FOO"), "day-of-week: unknown name 'FOO'");
  EXPECT_EQ(error_of("MON * * * * *"), "seconds: 'MON' is not a number");
  EXPECT_EQ(error_of("5-3 * * * * *"), "seconds: range '5-3' starts after it ends");
  EXPECT_EQ(error_of("*/0 * * * * *"), "seconds: step must be at least 1 in '*/0'");
  EXPECT_EQ(error_of("*/x * * * * *"), "seconds: step 'x' in '*/x' is not a number");
  EXPECT_EQ(error_of("1,,2 * * * * *"), "seconds: empty list item in '1,,2'");
  EXPECT_EQ(error_of("1, * * * * *"), "seconds: empty list item in '1,'");
  EXPECT_EQ(error_of("0 0 0 L * *"), "day-of-month: 'L' is not a number");
  EXPECT_EQ(error_of("0 0 0 * * 1#2"), "day-of-week: '1#2' is not a number");
  EXPECT_EQ(error_of("99999999999 * * * * *"), "seconds: '99999999999' is out of range (0-59)");
  EXPECT_EQ(error_of("- * * * * *"), "seconds: missing value");
}

TEST(CronExpression, Rfc3339Forms) {
  const system_clock::time_point t = at(2026, 5, 5, 10);
  EXPECT_EQ(format_rfc3339(t), "2026-05-05T10:00:00+00:00");
  EXPECT_EQ(format_rfc3339(t + milliseconds(120)), "2026-05-05T10:00:00.120+00:00");
  EXPECT_EQ(format_rfc3339(t + microseconds(1500)), "2026-05-05T10:00:00.001500+00:00");
  EXPECT_EQ(format_rfc3339(t + nanoseconds(7)), "2026-05-05T10:00:00.000000007+00:00");
  EXPECT_EQ(format_rfc3339(at(1999, 12, 31, 23, 59, 59)), "1999-12-31T23:59:59+00:00");
  EXPECT_EQ(format_rfc3339(at(2000, 2, 29, 0, 0, 0) + nanoseconds(999999999)),
            "2000-02-29T00:00:00.999999999+00:00");
  EXPECT_EQ(format_rfc3339(at(2099, 1, 2, 3, 4, 5) + milliseconds(7)),
            "2099-01-02T03:04:05.007+00:00");
}

}  // namespace
}  // namespace iii::workers::cron
