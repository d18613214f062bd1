// Outbound HTTP(S)/1.1 client on an io_context (the one Beast + OpenSSL client TU of the engine,
// used by iii-http-functions, the OTLP exporter and alert webhooks): resolve, check every
// resolved address with the caller's hook (if any), connect, TLS (OpenSSL, TLS 1.2+, peer
// verification against the system trust store — `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured —,
// SNI, host name or IP address checked against the certificate), one request, one response;
// redirects are never followed. Connections whose response allowed it are kept (at most
// kMaxIdlePerHost per scheme/host/port, 30 s) and reused. Not thread-safe: every call is made on
// the io_context's thread (or before it runs / after it stopped).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace iii::net {

// Where a request goes.
struct HttpTarget {
  bool https = false;
  std::string host;                                 // IPv6 literals without brackets, lowercase
  std::string port;                                 // explicit or the scheme's default
  std::string target;                               // path and query ("/" when empty)
  std::optional<boost::asio::ip::address> literal;  // the host, when it is an IP address
  std::string host_header;                          // host[:port] as the Host header wants it
  std::string url() const;                          // scheme://host_header + target
};

// Parses "http[s]://host[:port][/path][?query]" (no user info; a fragment is ignored). Throws
// std::invalid_argument naming what is wrong.
HttpTarget parse_http_target(std::string_view url);

struct OutboundRequest {
  HttpTarget target;
  std::string method = "POST";  // GET POST PUT PATCH DELETE ...
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};  // the whole exchange, connection included
  size_t max_response_bytes = 64u << 20;
  bool keep_response_headers = false;  // fill OutboundResponse::headers
};

struct OutboundResponse {
  unsigned status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // when asked for
  // The first header of that name (ASCII case-insensitive), if kept.
  std::optional<std::string_view> header(std::string_view name) const;
};

struct OutboundFailure {
  // http_request_failed (no response: DNS, connect, TLS, send, timeout) | http_response_failed
  // (the response broke off or was too large) | whatever a hook below returns.
  std::string code;
  std::string message;
};

struct HttpClientHooks {
  // Called with every address the host resolves to (or its literal address) before connecting;
  // a failure returned ends the request with it.
  std::function<std::optional<OutboundFailure>(const boost::asio::ip::address&)> check_address;
  // Replaces the default failure (http_request_failed, "DNS lookup of <host> failed: <why>")
  // when the host does not resolve.
  std::function<OutboundFailure(const std::string& host, const std::string& why)> dns_failure;
};

class HttpClient {
 public:
  static constexpr size_t kMaxIdlePerHost = 8;

  using Done = std::function<void(std::optional<OutboundFailure>, OutboundResponse)>;

  explicit HttpClient(boost::asio::io_context& io, HttpClientHooks hooks = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `done` runs exactly once, on the io_context's thread (at once when the client is stopped).
  void send(OutboundRequest req, Done done);
  // Makes sure a connection to `to` (TLS handshake done) is idle in the pool, opening one
  // unless a live one is there, so that a caller learns the server is unreachable before it
  // builds a request. `done(failure)` as for send().
  void connect(const HttpTarget& to, std::chrono::milliseconds timeout,
               std::function<void(std::optional<OutboundFailure>)> done);
  // Fails every request in flight and closes every connection; later calls fail at once.
  void stop();

  // Connections opened so far, and requests served on a reused connection (tests, docs).
  uint64_t connections_opened() const;
  uint64_t reuses() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::net
