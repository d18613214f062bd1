#include "workers/http/http_config.h"

#include <algorithm>

#include "config/config.h"

namespace iii::workers::http {

namespace {

// Keys the original's README documents but its code never had: its `deny_unknown_fields`
// refuses them, so a config using them never worked there either. Say so plainly.
constexpr const char* kReadmeOnlyKeys[] = {"body_limit", "trust_proxy", "request_id_header",
                                           "ignore_trailing_slash", "not_found_function"};

std::vector<std::string> string_list(config::WorkerConfigReader& r, const YAML::Node& node,
                                     const std::string& what) {
  std::vector<std::string> out;
  if (!node || node.IsNull()) return out;
  if (!node.IsSequence()) r.fail_at(node, what + " must be a list of strings");
  for (const auto& item : node) {
    if (!item.IsScalar()) r.fail_at(item, what + " must be a list of strings");
    out.push_back(item.Scalar());
  }
  return out;
}

bool has_star(const std::vector<std::string>& v) {
  return v.empty() || std::find(v.begin(), v.end(), "*") != v.end();
}

}  // namespace

bool CorsConfig::any_origin() const { return has_star(allowed_origins); }
bool CorsConfig::any_method() const { return has_star(allowed_methods); }

HttpConfig read_http_config(config::WorkerConfigReader& r) {
  HttpConfig c;
  for (const char* key : kReadmeOnlyKeys) {
    if (!r.get_node(key).IsNull())
      r.fail(key,
             std::string("key '") + key +
                 "' is listed in the original iii-http README but never existed in its "
                 "code, which refuses it too; remove it" +
                 (std::string(key) == "body_limit" ? " (this engine has body_limit_bytes)" : ""));
  }
  c.host = r.get_string("host", c.host);
  c.port = static_cast<uint16_t>(r.get_int("port", c.port, 0, 65535));
  c.default_timeout =
      std::chrono::milliseconds(r.get_int("default_timeout", 30000, 1, 24LL * 3600 * 1000));
  c.concurrency_request_limit =
      static_cast<size_t>(r.get_int("concurrency_request_limit", 1024, 1, 1 << 20));
  c.body_limit_bytes =
      static_cast<size_t>(r.get_int("body_limit_bytes", 64LL * 1024 * 1024, 0, 1LL << 40));
  c.header_timeout =
      std::chrono::milliseconds(r.get_int("header_timeout_ms", 10000, 100, 3600 * 1000));

  const YAML::Node cors = r.get_node("cors");
  if (cors && !cors.IsNull()) {
    if (!cors.IsMap())
      r.fail("cors", "key 'cors' must be a mapping {allowed_origins, allowed_methods}");
    c.cors.configured = true;
    for (const auto& kv : cors) {
      const std::string key = kv.first.as<std::string>("");
      if (key == "allowed_origins")
        c.cors.allowed_origins = string_list(r, kv.second, "cors.allowed_origins");
      else if (key == "allowed_methods")
        c.cors.allowed_methods = string_list(r, kv.second, "cors.allowed_methods");
      else
        r.fail_at(kv.first,
                  "cors: unknown key '" + key + "' (known keys: allowed_methods, allowed_origins)");
    }
  }

  const YAML::Node mw = r.get_node("middleware");
  if (mw && !mw.IsNull()) {
    if (!mw.IsSequence())
      r.fail("middleware", "key 'middleware' must be a list of {function_id, phase, priority}");
    for (const auto& item : mw) {
      if (!item.IsMap())
        r.fail_at(item, "middleware entries must be mappings {function_id, phase, priority}");
      GlobalMiddleware m;
      bool has_id = false;
      for (const auto& kv : item) {
        const std::string key = kv.first.as<std::string>("");
        if (key == "function_id") {
          if (!kv.second.IsScalar() || kv.second.Scalar().empty())
            r.fail_at(kv.second, "middleware.function_id must be a non-empty string");
          m.function_id = kv.second.Scalar();
          has_id = true;
        } else if (key == "phase") {
          if (!kv.second.IsScalar()) r.fail_at(kv.second, "middleware.phase must be a string");
          m.phase = kv.second.Scalar();
        } else if (key == "priority") {
          try {
            m.priority = kv.second.as<int64_t>();
          } catch (const YAML::Exception&) {
            r.fail_at(kv.second, "middleware.priority must be an integer");
          }
        } else {
          r.fail_at(kv.first, "middleware: unknown key '" + key +
                                  "' (known keys: function_id, phase, priority)");
        }
      }
      if (!has_id) r.fail_at(item, "middleware entry is missing required key 'function_id'");
      c.middleware.push_back(std::move(m));
    }
    std::stable_sort(c.middleware.begin(), c.middleware.end(),
                     [](const GlobalMiddleware& a, const GlobalMiddleware& b) {
                       return a.priority < b.priority;
                     });
  }
  r.finish();
  return c;
}

}  // namespace iii::workers::http
