#include "support.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "protocol/codec.h"
#include "protocol/json_writer.h"
#include "protocol/uuid.h"

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
    return fail("unsupported URL scheme '" + scheme + "' (expected ws://): '" + std::string(text) +
                "'");
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

std::string make_uuid_v4() { return protocol::Uuid::random_v4().str(); }

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
  if (arch == "x86_64")
    arch = "x64";
  else if (arch == "aarch64")
    arch = "arm64";
  else if (arch == "i686" || arch == "i386")
    arch = "ia32";
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
  if (iso && *iso)
    m["isolation"] = iso;
  else
    m["isolation"] = nullptr;
  boost::json::object telemetry;
  const char* lang = std::getenv("LANG");
  if (lang && *lang)
    telemetry["language"] = lang;
  else
    telemetry["language"] = nullptr;
  std::error_code ec;
  auto cwd = std::filesystem::current_path(ec);
  telemetry["project_name"] = ec ? std::string() : cwd.filename().string();
  telemetry["framework"] = "iii-cpp";
  m["telemetry"] = std::move(telemetry);
  return m;
}

using protocol::append_json;
using protocol::append_json_string;
using protocol::json_size_hint;

std::string encode_invoke_frame(const std::optional<std::string>& invocation_id,
                                std::string_view function_id, const boost::json::value& payload,
                                const TriggerAction& action) {
  // Built by hand so a large payload is serialised once, straight into the frame.
  std::string out;
  out.reserve(128 + function_id.size() + action.queue.size() + json_size_hint(payload));
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
  size_t hint = 128 + invocation_id.size() + function_id.size() +
                (traceparent ? traceparent->size() : 0) + (baggage ? baggage->size() : 0);
  if (error_code)
    hint += error_code->size() + error_message.size() + (stacktrace ? stacktrace->size() : 0);
  else if (result)
    hint += json_size_hint(*result);
  out.reserve(hint);
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
