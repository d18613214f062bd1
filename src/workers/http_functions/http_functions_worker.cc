#include "workers/http_functions/http_functions_worker.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <variant>

#include "config/config.h"
#include "engine/engine.h"
#include "net/http_client.h"
#include "protocol/uuid.h"
#include "workers/http_functions/url_policy.h"

namespace iii::workers {

namespace http_functions {

std::string signature(std::string_view secret, std::string_view timestamp, std::string_view body) {
  std::string b64(4 * ((body.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                reinterpret_cast<const unsigned char*>(body.data()),
                                static_cast<int>(body.size()));
  b64.resize(static_cast<size_t>(n));
  std::string msg;
  msg.reserve(timestamp.size() + 1 + b64.size());
  msg.append(timestamp).append(":").append(b64);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 0xF]);
  }
  return out;
}

namespace {

namespace json = boost::json;
using engine::Completion;
using engine::Outcome;
using net::HttpClient;
using HttpFailure = net::OutboundFailure;
using HttpRequest = net::OutboundRequest;
using HttpResponse = net::OutboundResponse;

// What a registration resolved to: everything a call needs, secrets included.
struct HttpFunction {
  std::string function_id;
  std::string url;
  std::string method = "POST";
  std::chrono::milliseconds timeout{30000};
  std::vector<std::pair<std::string, std::string>> headers;  // custom, then auth
  std::optional<std::string> hmac_secret;
};

bool valid_header_name(std::string_view n) {
  if (n.empty()) return false;
  for (unsigned char c : n)
    if (!(std::isalnum(c) ||
          std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos))
      return false;
  return true;
}

bool valid_header_value(std::string_view v) {
  for (unsigned char c : v)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

struct Refusal {
  std::string code, message;
};

std::optional<std::string> env(const std::string& name) {
  if (name.empty()) return std::nullopt;
  const char* v = std::getenv(name.c_str());
  if (!v) return std::nullopt;
  return std::string(v);
}

// Reads the `invocation` block. Secrets come from the engine's environment now, as in the
// original (a later change of the variable needs a re-registration).
std::variant<HttpFunction, Refusal> parse_invocation(const std::string& function_id,
                                                     const json::value& inv,
                                                     const SecurityPolicy& policy) {
  auto bad = [](std::string m) { return Refusal{"invalid_invocation", std::move(m)}; };
  if (!inv.is_object()) return bad("`invocation` must be an object");
  const auto& o = inv.get_object();
  HttpFunction f;
  f.function_id = function_id;
  for (const auto& [k, v] : o) {
    if (k == "url") {
      if (!v.is_string()) return bad("`invocation.url` must be a string");
      f.url = std::string(v.get_string());
    } else if (k == "method") {
      if (v.is_null()) continue;
      if (!v.is_string()) return bad("`invocation.method` must be a string");
      f.method = std::string(v.get_string());
      static const std::vector<std::string> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE"};
      if (std::find(kMethods.begin(), kMethods.end(), f.method) == kMethods.end())
        return bad("unknown variant `" + f.method +
                   "`, expected one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`");
    } else if (k == "timeout_ms") {
      if (v.is_null()) continue;
      if (!v.is_int64() && !v.is_uint64()) return bad("`invocation.timeout_ms` must be an integer");
      const int64_t ms = v.is_int64() ? v.get_int64() : -1;
      if (ms <= 0 || ms > 86400000)
        return bad("`invocation.timeout_ms` must be between 1 and 86400000");
      f.timeout = std::chrono::milliseconds(ms);
    } else if (k == "headers") {
      if (v.is_null()) continue;
      if (!v.is_object()) return bad("`invocation.headers` must be an object of strings");
      for (const auto& [hn, hv] : v.get_object()) {
        if (!hv.is_string()) return bad("header `" + std::string(hn) + "` must be a string");
        if (!valid_header_name(hn) || !valid_header_value(hv.get_string()))
          return bad("invalid header `" + std::string(hn) + "`");
        f.headers.emplace_back(std::string(hn), std::string(hv.get_string()));
      }
    } else if (k == "auth") {
      if (v.is_null()) continue;
      if (!v.is_object()) return bad("`invocation.auth` must be an object");
      const auto& a = v.get_object();
      auto str = [&](const char* key) -> std::string {
        const auto* x = a.if_contains(key);
        return x && x->is_string() ? std::string(x->get_string()) : std::string();
      };
      const std::string type = str("type");
      if (type == "hmac") {
        auto secret = env(str("secret_key"));
        if (!secret)
          return Refusal{"secret_not_found",
                         "HMAC secret env var '" + str("secret_key") + "' is not set"};
        f.hmac_secret = std::move(*secret);
      } else if (type == "bearer") {
        auto token = env(str("token_key"));
        if (!token)
          return Refusal{"token_not_found",
                         "bearer token env var '" + str("token_key") + "' is not set"};
        if (!valid_header_value(*token)) return bad("bearer token contains a line break");
        f.headers.emplace_back("Authorization", "Bearer " + *token);
      } else if (type == "api_key") {
        const std::string header = str("header");
        if (!valid_header_name(header)) return bad("`invocation.auth.header` is not a header name");
        auto value = env(str("value_key"));
        if (!value)
          return Refusal{"api_key_not_found",
                         "API key env var '" + str("value_key") + "' is not set"};
        if (!valid_header_value(*value)) return bad("API key contains a line break");
        f.headers.emplace_back(header, *value);
      } else {
        return bad("unknown auth type `" + type + "`, expected one of `hmac`, `bearer`, `api_key`");
      }
    }
    // Other keys are ignored, like serde without deny_unknown_fields on this struct.
  }
  if (f.url.empty()) return bad("missing field `url`");
  Checked c = check_url(f.url, policy);
  if (!c.target) return Refusal{"url_validation_failed", c.error};
  return f;
}

// Maps an HTTP response to the invocation's outcome (engine-core.md §2.4).
Outcome to_outcome(const HttpResponse& r) {
  const bool blank = r.body.find_first_not_of(" \t\r\n") == std::string::npos;
  if (r.status >= 200 && r.status < 300) {
    if (blank) return Outcome::ok(nullptr);
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec)
      return Outcome::fail("invalid_response", "Failed to parse response JSON: " + ec.message());
    return Outcome::ok(std::move(v));
  }
  if (!blank) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (!ec && v.is_object())
      if (const auto* e = v.get_object().if_contains("error"); e && e->is_object()) {
        const auto& eo = e->get_object();
        const auto* code = eo.if_contains("code");
        const auto* message = eo.if_contains("message");
        return Outcome::fail(
            code && code->is_string() ? std::string(code->get_string()) : "http_error",
            message && message->is_string() ? std::string(message->get_string())
                                            : "HTTP request failed");
      }
  }
  return Outcome::fail("http_error", "HTTP " + std::to_string(r.status));
}

class HttpFunctionsWorker : public engine::BuiltinWorker {
 public:
  HttpFunctionsWorker(const config::WorkerEntry& entry, engine::Runtime& rt) : rt_(rt) {
    config::WorkerConfigReader r(entry);
    const YAML::Node sec = r.get_node("security");
    r.finish();
    if (sec && !sec.IsNull()) {
      if (!sec.IsMap()) r.fail_at(sec, "security must be a mapping");
      for (const auto& kv : sec) {
        const auto key = kv.first.as<std::string>("");
        const YAML::Node& v = kv.second;
        if (key == "url_allowlist") {
          if (v.IsNull()) continue;
          if (!v.IsSequence()) r.fail_at(v, "security.url_allowlist must be a list of strings");
          policy_.url_allowlist.clear();
          for (const auto& p : v) {
            if (!p.IsScalar()) r.fail_at(p, "security.url_allowlist must be a list of strings");
            policy_.url_allowlist.push_back(p.Scalar());
          }
          if (policy_.url_allowlist.empty()) policy_.url_allowlist = {"*"};
        } else if (key == "block_private_ips" || key == "require_https") {
          if (!v.IsScalar() || (v.Scalar() != "true" && v.Scalar() != "false"))
            r.fail_at(v, "security." + key + " must be true or false");
          (key == "block_private_ips" ? policy_.block_private_ips : policy_.require_https) =
              v.Scalar() == "true";
        } else {
          r.fail_at(kv.first, "security: unknown key '" + key +
                                  "' (known keys: block_private_ips, require_https, "
                                  "url_allowlist)");
        }
      }
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  void start() override {
    client_ = std::make_shared<HttpClient>(rt_.io, client_hooks(policy_));
    if (!policy_.require_https || !policy_.block_private_ips)
      spdlog::warn("iii-http-functions: security relaxed (require_https={}, block_private_ips={})",
                   policy_.require_https, policy_.block_private_ips);
    rt_.engine.set_invocation_registrar(
        [this](const engine::Worker& w, const engine::FunctionInfo& info,
               const json::value& inv) -> engine::Engine::InvocationRegistration {
          auto parsed = parse_invocation(info.id, inv, policy_);
          if (auto* r = std::get_if<Refusal>(&parsed))
            return {std::nullopt, r->code + ": " + r->message};
          auto fn = std::make_shared<const HttpFunction>(std::move(std::get<HttpFunction>(parsed)));
          spdlog::info("worker {}: function {} is served by {} {}", w.id, info.id, fn->method,
                       fn->url);
          return {engine::BuiltinHandler(
                      [client = client_, policy = policy_, fn](const engine::CallContext&,
                                                               json::value input, Completion done) {
                        call(*client, policy, *fn, std::move(input), std::move(done));
                      }),
                  {}};
        });
  }

  void stop() override {
    rt_.engine.set_invocation_registrar({});
    if (client_) client_->stop();
  }

 private:
  static void call(HttpClient& client, const SecurityPolicy& policy, const HttpFunction& fn,
                   json::value input, Completion done) {
    Checked c = check_url(fn.url, policy);
    if (!c.target) return done(Outcome::fail("url_validation_failed", c.error));
    HttpRequest req;
    req.target = std::move(*c.target);
    req.method = fn.method;
    req.timeout = fn.timeout;
    req.body = json::serialize(input);
    const std::string ts = std::to_string(std::time(nullptr));
    req.headers.reserve(fn.headers.size() + 5);
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("x-iii-Function-Path", fn.function_id);
    req.headers.emplace_back("x-iii-Invocation-ID", protocol::Uuid::random_v4().str());
    req.headers.emplace_back("x-iii-Timestamp", ts);
    for (const auto& h : fn.headers) req.headers.push_back(h);
    if (fn.hmac_secret)
      req.headers.emplace_back("x-iii-Signature", signature(*fn.hmac_secret, ts, req.body));
    client.send(std::move(req),
                [done = std::move(done)](std::optional<HttpFailure> f, HttpResponse r) {
                  if (f) return done(Outcome::fail(std::move(f->code), std::move(f->message)));
                  done(to_outcome(r));
                });
  }

  engine::Runtime& rt_;
  SecurityPolicy policy_;
  std::shared_ptr<HttpClient> client_;
};

}  // namespace
}  // namespace http_functions

std::unique_ptr<engine::BuiltinWorker> make_http_functions_worker(const config::WorkerEntry& entry,
                                                                  engine::Runtime& rt) {
  return std::make_unique<http_functions::HttpFunctionsWorker>(entry, rt);
}

}  // namespace iii::workers
