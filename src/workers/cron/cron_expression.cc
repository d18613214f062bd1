#include "workers/cron/cron_expression.h"

#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

namespace iii::workers::cron {
namespace {

using namespace std::chrono;

constexpr size_t kMaxValues = CronExpression::kMaxYear - CronExpression::kMinYear + 1;
using Bits = std::bitset<kMaxValues>;

struct Name {
  const char* short_name;
  const char* long_name;
  int value;
};

constexpr std::array<Name, 12> kMonthNames = {{{"jan", "january", 1},
                                               {"feb", "february", 2},
                                               {"mar", "march", 3},
                                               {"apr", "april", 4},
                                               {"may", "may", 5},
                                               {"jun", "june", 6},
                                               {"jul", "july", 7},
                                               {"aug", "august", 8},
                                               {"sep", "september", 9},
                                               {"oct", "october", 10},
                                               {"nov", "november", 11},
                                               {"dec", "december", 12}}};

// Sunday = 1, as in the original.
constexpr std::array<Name, 7> kDayNames = {{{"sun", "sunday", 1},
                                            {"mon", "monday", 2},
                                            {"tue", "tuesday", 3},
                                            {"wed", "wednesday", 4},
                                            {"thu", "thursday", 5},
                                            {"fri", "friday", 6},
                                            {"sat", "saturday", 7}}};

struct FieldSpec {
  const char* name;
  int min;
  int max;
  const Name* names = nullptr;
  size_t name_count = 0;
  bool allow_any = false;  // `?`
  const char* hint = "";
};

constexpr FieldSpec kFields[] = {
    {"seconds", 0, 59},
    {"minutes", 0, 59},
    {"hours", 0, 23},
    {"day-of-month", 1, 31, nullptr, 0, true},
    {"month", 1, 12, kMonthNames.data(), kMonthNames.size()},
    {"day-of-week", 1, 7, kDayNames.data(), kDayNames.size(), true, ", Sunday = 1"},
    {"year", CronExpression::kMinYear, CronExpression::kMaxYear},
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

class FieldParser {
 public:
  FieldParser(const FieldSpec& spec, std::string& error) : spec_(spec), error_(error) {}

  // Parses one whole field (a comma-separated list) into `bits` (bit i = value min + i).
  bool parse(std::string_view field, Bits& bits) {
    size_t start = 0;
    for (;;) {
      const size_t comma = field.find(',', start);
      const std::string_view item = field.substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      if (item.empty()) return fail("empty list item in '" + std::string(field) + "'");
      if (!parse_item(item, bits)) return false;
      if (comma == std::string_view::npos) return true;
      start = comma + 1;
    }
  }

 private:
  bool fail(const std::string& why) {
    error_ = std::string(spec_.name) + ": " + why;
    return false;
  }

  std::string range_text() const {
    return std::to_string(spec_.min) + "-" + std::to_string(spec_.max) + spec_.hint;
  }

  bool parse_value(std::string_view s, int& out) {
    if (s.empty()) return fail("missing value");
    if (std::isdigit(static_cast<unsigned char>(s[0]))) {
      if (s.size() > 6)
        return fail("'" + std::string(s) + "' is out of range (" + range_text() + ")");
      int v = 0;
      for (char c : s) {
        if (!std::isdigit(static_cast<unsigned char>(c)))
          return fail("'" + std::string(s) + "' is not a number");
        v = v * 10 + (c - '0');
      }
      if (v < spec_.min || v > spec_.max)
        return fail(std::to_string(v) + " is out of range (" + range_text() + ")");
      out = v;
      return true;
    }
    if (spec_.names) {
      const std::string l = lower(s);
      for (size_t i = 0; i < spec_.name_count; ++i) {
        if (l == spec_.names[i].short_name || l == spec_.names[i].long_name) {
          out = spec_.names[i].value;
          return true;
        }
      }
      return fail("unknown name '" + std::string(s) + "'");
    }
    return fail("'" + std::string(s) + "' is not a number");
  }

  bool parse_item(std::string_view item, Bits& bits) {
    std::string_view base = item;
    int step = 1;
    bool has_step = false;
    if (const size_t slash = item.find('/'); slash != std::string_view::npos) {
      base = item.substr(0, slash);
      const std::string_view s = item.substr(slash + 1);
      if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string_view::npos)
        return fail("step '" + std::string(s) + "' in '" + std::string(item) + "' is not a number");
      step = std::stoi(std::string(s));
      if (step < 1) return fail("step must be at least 1 in '" + std::string(item) + "'");
      has_step = true;
    }
    int lo = spec_.min, hi = spec_.max;
    if (base == "*") {
    } else if (base == "?") {
      if (!spec_.allow_any) return fail("'?' is only allowed in day-of-month and day-of-week");
      if (has_step) return fail("'?' takes no step");
    } else if (const size_t dash = base.find('-'); dash != std::string_view::npos) {
      if (!parse_value(base.substr(0, dash), lo) || !parse_value(base.substr(dash + 1), hi))
        return false;
      if (lo > hi) return fail("range '" + std::string(base) + "' starts after it ends");
    } else {
      if (!parse_value(base, lo)) return false;
      if (!has_step) hi = lo;  // `a/n` runs from a to the field's maximum
    }
    for (int v = lo; v <= hi; v += step) bits.set(size_t(v - spec_.min));
    return true;
  }

  const FieldSpec& spec_;
  std::string& error_;
};

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Bit v of the result is set when value v is in `b` (whose bit i stands for value min + i).
template <typename T>
T to_mask(const Bits& b, int min) {
  T out = 0;
  for (int v = min; v < int(sizeof(T) * 8); ++v)
    if (b.test(size_t(v - min))) out |= T(T(1) << v);
  return out;
}

unsigned days_in(int y, int m) {
  return unsigned((year_month_day_last{year{y}, month_day_last{month(unsigned(m))}}).day());
}

}  // namespace

CronExpression::Parsed CronExpression::parse(std::string_view text) {
  Parsed out;
  const auto fields_in = split_ws(text);
  if (fields_in.empty()) {
    out.error = "empty expression";
    return out;
  }
  const std::vector<std::string_view>& fields = fields_in;
  if (fields.size() == 1 && fields[0].front() == '@') {
    static constexpr std::pair<std::string_view, std::string_view> kShorthands[] = {
        {"@yearly", "0 0 0 1 1 * *"},
        {"@monthly", "0 0 0 1 * * *"},
        {"@weekly", "0 0 0 * * 1 *"},
        {"@daily", "0 0 0 * * * *"},
        {"@hourly", "0 0 * * * * *"}};
    for (const auto& [name, expansion] : kShorthands)
      if (fields[0] == name) return parse(expansion);
    out.error = "unknown shorthand '" + std::string(fields[0]) +
                "' (known: @yearly, @monthly, @weekly, @daily, @hourly)";
    return out;
  }
  if (fields.size() == 5) {
    std::string joined;
    for (auto f : fields) joined += " " + std::string(f);
    out.error =
        "5-field crontab expressions are not supported; use 6 or 7 fields with seconds first "
        "(sec min hour day-of-month month day-of-week [year]), e.g. '0" +
        joined + "'";
    return out;
  }
  if (fields.size() != 6 && fields.size() != 7) {
    out.error =
        "expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), got " +
        std::to_string(fields.size());
    return out;
  }
  CronExpression e;
  Bits bits[7];
  for (size_t i = 0; i < 7; ++i) {
    FieldParser p(kFields[i], out.error);
    const std::string_view f = i < fields.size() ? fields[i] : std::string_view("*");
    if (!p.parse(f, bits[i])) return out;
  }
  e.seconds_ = to_mask<uint64_t>(bits[0], 0);
  e.minutes_ = to_mask<uint64_t>(bits[1], 0);
  e.hours_ = to_mask<uint32_t>(bits[2], 0);
  e.days_ = to_mask<uint32_t>(bits[3], 1);
  e.months_ = to_mask<uint16_t>(bits[4], 1);
  e.weekdays_ = to_mask<uint8_t>(bits[5], 1);
  e.years_ = bits[6];
  out.expression = e;
  return out;
}

bool CronExpression::matches(Seconds t) const {
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  const int y = int(ymd.year());
  if (y < kMinYear || y > kMaxYear || !years_.test(size_t(y - kMinYear))) return false;
  const unsigned wd = weekday{day}.c_encoding() + 1;  // Sunday = 1
  return (months_ >> unsigned(ymd.month()) & 1) && (days_ >> unsigned(ymd.day()) & 1) &&
         (weekdays_ >> wd & 1) && (hours_ >> hms.hours().count() & 1) &&
         (minutes_ >> hms.minutes().count() & 1) && (seconds_ >> hms.seconds().count() & 1);
}

std::optional<CronExpression::Seconds> CronExpression::next_after(
    system_clock::time_point t) const {
  return next_after(floor<seconds>(t));
}

std::optional<CronExpression::Seconds> CronExpression::next_after(Seconds t) const {
  const Seconds start = t + seconds(1);
  const auto start_day = floor<days>(start);
  const year_month_day ymd{start_day};
  const int64_t secs = (start - start_day).count();
  const int sy = int(ymd.year());
  const int smo = int(unsigned(ymd.month()));
  const int sd = int(unsigned(ymd.day()));
  const int sh = int(secs / 3600), smi = int(secs / 60 % 60), ss = int(secs % 60);
  for (int y = std::max(sy, kMinYear); y <= kMaxYear; ++y) {
    if (!years_.test(size_t(y - kMinYear))) continue;
    const bool fy = y == sy;
    for (int mo = fy ? smo : 1; mo <= 12; ++mo) {
      if (!(months_ >> mo & 1)) continue;
      const bool fm = fy && mo == smo;
      const int dim = int(days_in(y, mo));
      for (int d = fm ? sd : 1; d <= dim; ++d) {
        if (!(days_ >> d & 1)) continue;
        const sys_days day{year{y} / month(unsigned(mo)) / unsigned(d)};
        if (!(weekdays_ >> (weekday{day}.c_encoding() + 1) & 1)) continue;
        const bool fd = fm && d == sd;
        for (int h = fd ? sh : 0; h < 24; ++h) {
          if (!(hours_ >> h & 1)) continue;
          const bool fh = fd && h == sh;
          for (int mi = fh ? smi : 0; mi < 60; ++mi) {
            if (!(minutes_ >> mi & 1)) continue;
            const bool fmi = fh && mi == smi;
            for (int s = fmi ? ss : 0; s < 60; ++s)
              if (seconds_ >> s & 1) return Seconds{day} + hours(h) + minutes(mi) + seconds(s);
          }
        }
      }
    }
  }
  return std::nullopt;
}

namespace {
// Writes `v` as exactly `width` decimal digits, zero-padded.
char* put_digits(char* p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  return p + width;
}
}  // namespace

// Written digit by digit: every cron firing formats two of these, and snprintf cost ~3,000
// instructions each (16 % of the engine's work when 1,000 jobs fire every second).
std::string format_rfc3339(system_clock::time_point t) {
  const auto ns = floor<nanoseconds>(t);
  const auto whole = floor<seconds>(ns);
  const auto day = floor<days>(whole);
  const year_month_day ymd{day};
  const hh_mm_ss hms{whole - day};
  const int64_t frac = (ns - whole).count();
  char buf[48];
  char* p = buf;
  const int year = int(ymd.year());
  if (year < 0 || year > 9999)  // beyond RFC 3339's four digits: never from a real clock
    p += std::snprintf(p, 16, "%d", year);
  else
    p = put_digits(p, static_cast<uint64_t>(year), 4);
  *p++ = '-';
  p = put_digits(p, unsigned(ymd.month()), 2);
  *p++ = '-';
  p = put_digits(p, unsigned(ymd.day()), 2);
  *p++ = 'T';
  p = put_digits(p, static_cast<uint64_t>(hms.hours().count()), 2);
  *p++ = ':';
  p = put_digits(p, static_cast<uint64_t>(hms.minutes().count()), 2);
  *p++ = ':';
  p = put_digits(p, static_cast<uint64_t>(hms.seconds().count()), 2);
  if (frac != 0) {
    *p++ = '.';
    if (frac % 1000000 == 0)
      p = put_digits(p, static_cast<uint64_t>(frac / 1000000), 3);
    else if (frac % 1000 == 0)
      p = put_digits(p, static_cast<uint64_t>(frac / 1000), 6);
    else
      p = put_digits(p, static_cast<uint64_t>(frac), 9);
  }
  static constexpr std::string_view kUtc = "+00:00";
  std::memcpy(p, kUtc.data(), kUtc.size());
  p += kUtc.size();
  return std::string(buf, p);
}

}  // namespace iii::workers::cron
