#include "support.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "protocol/codec.h"

#ifndef III_VERSION
#define III_VERSION "0.0.0"
#endif

namespace iii {

const char* sdk_version() { return III_VERSION; }

namespace detail {

std::optional<WsUrl> parse_ws_url(std::string_view text, std::string* error) {
  auto fail = [&](std::string msg) -> std::optional<WsUrl> {
    if (error) *error = std::move(msg);
    return std::nullopt;
  };
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) return fail("invalid URL '" + std::string(text) + "': " + parsed.error().message());
  const boost::urls::url_view& u = *parsed;
  std::string scheme(u.scheme());
  for (auto& ch : scheme) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (scheme == "wss" || scheme == "https")
    return fail("TLS (" + scheme + "://) is not supported by the C++ SDK: '" + std::string(text) +
                "'");
  if (scheme != "ws" && scheme != "http")
    return fail("unsupported URL scheme '" + scheme + "' (expected ws://): '" +
                std::string(text) + "'");
  if (!u.has_authority() || u.encoded_host().empty())
    return fail("URL has no host: '" + std::string(text) + "'");

  WsUrl out;
  if (u.host_type() == boost::urls::host_type::ipv6)
    out.host = u.host_ipv6_address().to_string();
  else
    out.host = u.host();
  out.port = u.has_port() ? std::string(u.port()) : "80";
  if (out.port.empty()) out.port = "80";
  for (char ch : out.port)
    if (!std::isdigit(static_cast<unsigned char>(ch)))
      return fail("invalid port in URL '" + std::string(text) + "'");
  out.host_header = std::string(u.encoded_host());
  if (u.has_port() && !u.port().empty()) out.host_header += ":" + out.port;
  out.target = std::string(u.encoded_path());
  if (out.target.empty()) out.target = "/";
  if (u.has_query()) out.target += "?" + std::string(u.encoded_query());
  return out;
}

std::string make_uuid_v4() {
  // Per-thread generator: ids are made on whichever thread calls trigger().
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  uint64_t hi = rng();
  uint64_t lo = rng();
  hi = (hi & 0xFFFFFFFFFFFF0FFFull) | 0x0000000000004000ull;  // version 4
  lo = (lo & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(36, '-');
  int pos = 0;
  auto put = [&](uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) {
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
      s[pos++] = kHex[(v >> (i * 4)) & 0xF];
    }
  };
  put(hi, 16);
  put(lo, 16);
  return s;
}

std::string default_worker_name() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "localhost") + ":" + std::to_string(getpid());
}

std::string os_description() {
  struct utsname u {};
  if (uname(&u) != 0) return "unknown";
  std::string sys = u.sysname;
  for (auto& ch : sys) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // Node reports process.arch names; keep the same vocabulary for the common cases.
  std::string arch = u.machine;
  if (arch == "x86_64") arch = "x64";
  else if (arch == "aarch64") arch = "arm64";
  else if (arch == "i686" || arch == "i386") arch = "ia32";
  return sys + " " + u.release + " (" + arch + ")";
}

boost::json::object worker_metadata(const std::string& worker_name) {
  boost::json::object m;
  m["runtime"] = "cpp";
  m["version"] = III_VERSION;
  m["name"] = worker_name;
  m["os"] = os_description();
  m["pid"] = static_cast<int64_t>(getpid());
  const char* iso = std::getenv("III_ISOLATION");
  if (iso && *iso) m["isolation"] = iso;
  else m["isolation"] = nullptr;
  boost::json::object telemetry;
  const char* lang = std::getenv("LANG");
  if (lang && *lang) telemetry["language"] = lang;
  else telemetry["language"] = nullptr;
  std::error_code ec;
  auto cwd = std::filesystem::current_path(ec);
  telemetry["project_name"] = ec ? std::string() : cwd.filename().string();
  telemetry["framework"] = "iii-cpp";
  m["telemetry"] = std::move(telemetry);
  return m;
}

namespace {

// SWAR test: does any of the 8 bytes need escaping (< 0x20, '"' or '\\')?
inline bool needs_escape8(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighs = 0x8080808080808080ull;
  const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHighs;
  const uint64_t q = x ^ (kOnes * '"');
  const uint64_t b = x ^ (kOnes * '\\');
  return below_space | ((q - kOnes) & ~q & kHighs) | ((b - kOnes) & ~b & kHighs);
}

void append_escaped(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    default: {
      char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
      out.append(u, 6);
    }
  }
}

inline bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  const char* p = s.data();
  const char* const end = p + s.size();
  const char* run = p;  // start of the not yet copied clean span
  while (p < end) {
    if (end - p >= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      if (!needs_escape8(word)) {
        p += 8;
        continue;
      }
    }
    const char* stop = std::min(p + 8, end);
    for (; p < stop; ++p) {
      const auto c = static_cast<unsigned char>(*p);
      if (!needs_escape(c)) continue;
      out.append(run, p - run);
      append_escaped(out, c);
      run = p + 1;
    }
  }
  out.append(run, end - run);
  out += '"';
}

void append_json(std::string& out, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::string: {
      const auto& str = v.get_string();
      append_json_string(out, std::string_view(str.data(), str.size()));
      return;
    }
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) out += ',';
        first = false;
        append_json_string(out, kv.key());
        out += ':';
        append_json(out, kv.value());
      }
      out += '}';
      return;
    }
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        append_json(out, e);
      }
      out += ']';
      return;
    }
    case boost::json::kind::int64: {
      char buf[24];
      auto r = std::to_chars(buf, buf + sizeof(buf), v.get_int64());
      out.append(buf, r.ptr);
      return;
    }
    case boost::json::kind::uint64: {
      char buf[24];
      auto r = std::to_chars(buf, buf + sizeof(buf), v.get_uint64());
      out.append(buf, r.ptr);
      return;
    }
    case boost::json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      return;
    case boost::json::kind::null:
      out += "null";
      return;
    case boost::json::kind::double_:
      out += boost::json::serialize(v);  // keep Boost's exact number format
      return;
  }
}

std::string encode_invoke_frame(const std::optional<std::string>& invocation_id,
                                std::string_view function_id, const boost::json::value& payload,
                                const TriggerAction& action) {
  // Built by hand so a large payload is serialised once, straight into the frame.
  std::string out;
  out.reserve(256 + function_id.size());
  out += R"({"type":"invokefunction",)";
  if (invocation_id) {
    out += R"("invocation_id":)";
    append_json_string(out, *invocation_id);
    out += ',';
  }
  out += R"("function_id":)";
  append_json_string(out, function_id);
  out += R"(,"data":)";
  append_json(out, payload);
  if (action.type == TriggerAction::Type::kVoid) {
    out += R"(,"action":{"type":"void"})";
  } else if (action.type == TriggerAction::Type::kEnqueue) {
    out += R"(,"action":{"type":"enqueue","queue":)";
    append_json_string(out, action.queue);
    out += '}';
  }
  out += '}';
  return out;
}

std::string encode_result_frame(std::string_view invocation_id, std::string_view function_id,
                                const std::optional<boost::json::value>& result,
                                const std::optional<std::string>& error_code,
                                const std::string& error_message,
                                const std::optional<std::string>& stacktrace,
                                const std::optional<std::string>& traceparent,
                                const std::optional<std::string>& baggage) {
  std::string out;
  out.reserve(256 + function_id.size());
  out += R"({"type":"invocationresult","invocation_id":)";
  append_json_string(out, invocation_id);
  out += R"(,"function_id":)";
  append_json_string(out, function_id);
  if (error_code) {
    out += R"(,"error":{"code":)";
    append_json_string(out, *error_code);
    out += R"(,"message":)";
    append_json_string(out, error_message);
    if (stacktrace) {
      out += R"(,"stacktrace":)";
      append_json_string(out, *stacktrace);
    }
    out += '}';
  } else if (result) {
    out += R"(,"result":)";
    append_json(out, *result);
  }
  if (traceparent) {
    out += R"(,"traceparent":)";
    append_json_string(out, *traceparent);
  }
  if (baggage) {
    out += R"(,"baggage":)";
    append_json_string(out, *baggage);
  }
  out += '}';
  return out;
}

std::string encode_register_function(std::string_view id, const FunctionOptions& opts) {
  protocol::RegisterFunction m;
  m.id = std::string(id);
  m.description = opts.description;
  m.request_format = opts.request_format;
  m.response_format = opts.response_format;
  m.metadata = opts.metadata;
  return protocol::encode(m);
}

std::string encode_unregister_function(std::string_view id) {
  return protocol::encode(protocol::UnregisterFunction{std::string(id)});
}

std::string encode_register_trigger(std::string_view id, const TriggerConfig& t) {
  protocol::RegisterTrigger m;
  m.id = std::string(id);
  m.trigger_type = t.type;
  m.function_id = t.function_id;
  m.config = t.config.is_null() ? boost::json::value(boost::json::object()) : t.config;
  m.metadata = t.metadata;
  return protocol::encode(m);
}

std::string encode_unregister_trigger(std::string_view id, std::string_view type) {
  protocol::UnregisterTrigger m;
  m.id = std::string(id);
  m.trigger_type = std::string(type);
  return protocol::encode(m);
}

}  // namespace detail
}  // namespace iii
