// The outbound HTTP(S) client of iii-http-functions (the one Beast TU of that worker). Runs on
// the engine's io_context: resolve, check every resolved address against the policy, connect,
// TLS (OpenSSL, peer verification against the system trust store, SNI and host name check),
// one request, one response; redirects are never followed. Connections whose response allowed
// it are kept (at most kMaxIdlePerHost per scheme/host/port, 30 s) and reused.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "workers/http_functions/url_policy.h"

namespace boost::asio {
class io_context;
}

namespace iii::workers::http_functions {

struct HttpRequest {
  Target target;
  std::string method;  // GET POST PUT PATCH DELETE
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
};

struct HttpFailure {
  std::string code;  // url_validation_failed | http_request_failed | http_response_failed
  std::string message;
};

class HttpClient {
 public:
  static constexpr size_t kMaxIdlePerHost = 8;
  static constexpr size_t kMaxResponseBytes = 64u << 20;

  using Done = std::function<void(std::optional<HttpFailure>, HttpResponse)>;

  HttpClient(boost::asio::io_context& io, bool block_private_ips);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `done` runs exactly once, on the io_context's thread.
  void send(HttpRequest req, Done done);
  // Fails every request in flight and closes every connection; later sends fail at once.
  void stop();

  // Connections opened so far, and requests served on a reused connection (tests, docs).
  uint64_t connections_opened() const;
  uint64_t reuses() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::workers::http_functions
