#include "cli/trigger_command.h"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <iostream>

#include "iii/iii.h"
#include "protocol/codec.h"

namespace iii::cli {
namespace {

namespace json = boost::json;

void append_double(std::string& out, double d) {
  char buf[64];
  // Integral values print as "3.0" (as serde_json does) rather than Boost's "3E0".
  if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 1e16) {
    auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed, 0);
    out.append(buf, r.ptr);
    out += ".0";
    return;
  }
  auto r = std::to_chars(buf, buf + sizeof(buf), d);
  std::string s(buf, r.ptr);
  // "1e+20" -> "1e20", "1e-07" -> "1e-7".
  if (auto e = s.find('e'); e != std::string::npos) {
    std::string mant = s.substr(0, e);
    std::string exp = s.substr(e + 1);
    bool neg = !exp.empty() && exp[0] == '-';
    if (!exp.empty() && (exp[0] == '+' || exp[0] == '-')) exp.erase(0, 1);
    while (exp.size() > 1 && exp[0] == '0') exp.erase(0, 1);
    s = mant + "e" + (neg ? "-" : "") + exp;
  }
  out += s;
}

void append_pretty(std::string& out, const json::value& v, int indent) {
  switch (v.kind()) {
    case json::kind::object: {
      const auto& o = v.get_object();
      if (o.empty()) {
        out += "{}";
        return;
      }
      out += "{\n";
      size_t i = 0;
      for (const auto& kv : o) {
        out.append(indent + 2, ' ');
        out += json::serialize(kv.key());
        out += ": ";
        append_pretty(out, kv.value(), indent + 2);
        out += (++i < o.size()) ? ",\n" : "\n";
      }
      out.append(indent, ' ');
      out += '}';
      return;
    }
    case json::kind::array: {
      const auto& a = v.get_array();
      if (a.empty()) {
        out += "[]";
        return;
      }
      out += "[\n";
      for (size_t i = 0; i < a.size(); ++i) {
        out.append(indent + 2, ' ');
        append_pretty(out, a[i], indent + 2);
        out += (i + 1 < a.size()) ? ",\n" : "\n";
      }
      out.append(indent, ' ');
      out += ']';
      return;
    }
    case json::kind::double_:
      append_double(out, v.get_double());
      return;
    default:
      out += json::serialize(v);
  }
}

}  // namespace

std::string pretty_json(const json::value& v) {
  std::string out;
  append_pretty(out, v, 0);
  return out;
}

std::string trigger_url(const TriggerOptions& opts) {
  if (opts.address.find("://") != std::string::npos) return opts.address;
  std::string host = opts.address.empty() ? "localhost" : opts.address;
  // A bare IPv6 literal needs brackets inside a URL.
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return "ws://" + host + ":" + std::to_string(opts.port);
}

int run_trigger(const TriggerOptions& opts) {
  boost::system::error_code ec;
  json::value payload = json::parse(opts.payload, ec, {}, protocol::json_parse_options());
  if (ec) {
    std::cerr << "Error: invalid --payload JSON: " << ec.message() << "\n";
    return 2;
  }
  if (opts.function_id.empty()) {
    std::cerr << "Error: --function-id must not be empty\n";
    return 2;
  }
  if (opts.timeout_ms <= 0) {
    std::cerr << "Error: --timeout-ms must be positive\n";
    return 2;
  }

  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(opts.timeout_ms);
  const std::string url = trigger_url(opts);

  InitOptions init;
  init.worker_name = "iii-cli";
  init.invocation_timeout_ms = opts.timeout_ms;
  init.connect_timeout_ms = opts.timeout_ms;
  init.reconnect.enabled = false;  // a one-shot command must fail, not retry forever
  init.log = [](LogLevel, const std::string&) {};  // failures are reported below
  std::shared_ptr<III> client;
  try {
    client = register_worker(url, init);
  } catch (const std::exception& e) {
    std::cerr << "Error: " << e.what() << "\n";
    return 1;
  }

  if (!client->wait_connected(std::chrono::milliseconds(opts.timeout_ms))) {
    std::string why = client->last_error();
    client->shutdown();
    if (why.empty())
      std::cerr << "Error: timed out after " << opts.timeout_ms << "ms connecting to " << url
                << "\n";
    else
      std::cerr << "Error: " << why << "\n";
    return 1;
  }

  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  int exit_code = 0;
  try {
    TriggerRequest req;
    req.function_id = opts.function_id;
    req.payload = std::move(payload);
    req.timeout_ms = static_cast<int>(std::max<int64_t>(1, remaining.count()));
    Result result = client->trigger(req);
    if (result && !result->is_null()) std::cout << pretty_json(*result) << "\n" << std::flush;
  } catch (const InvocationError& e) {
    exit_code = 1;
    if (e.code == "TIMEOUT") {
      std::cerr << "Error: invocation of '" << opts.function_id << "' timed out after "
                << opts.timeout_ms << "ms\n";
    } else if (e.code == "DISCONNECTED" || e.code == "SHUTDOWN") {
      std::cerr << "Error: " << e.message << "\n";
    } else {
      json::object body;
      body["code"] = e.code;
      body["message"] = e.message;
      if (e.stacktrace) body["stacktrace"] = *e.stacktrace;
      std::cerr << "Error: " << json::serialize(body) << "\n";
    }
  } catch (const std::exception& e) {
    exit_code = 1;
    std::cerr << "Error: " << e.what() << "\n";
  }
  client->shutdown();
  return exit_code;
}

}  // namespace iii::cli
