#include "net/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <cerrno>
#include <map>
#include <stdexcept>
#include <unordered_map>

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kIdleLifetime = std::chrono::seconds(30);

struct Conn {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  Clock::time_point idle_since;

  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  void close() {
    error_code ec;
    tcp().socket().close(ec);
  }
  // An idle connection is usable only if the server has neither closed it nor sent anything
  // (a TLS close_notify counts as something).
  bool still_idle() {
    if (!tcp().socket().is_open()) return false;
    char b;
    const ssize_t n = ::recv(tcp().socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

std::string pool_key(const HttpTarget& t) {
  return (t.https ? "https://" : "http://") + t.host + ":" + t.port;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

std::string HttpTarget::url() const {
  return (https ? "https://" : "http://") + host_header + target;
}

HttpTarget parse_http_target(std::string_view url) {
  const std::string quoted = "'" + std::string(url) + "'";
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw std::invalid_argument(quoted + " is not a URL");
  const boost::urls::url_view u = *parsed;
  const auto scheme = u.scheme_id();
  if (scheme != boost::urls::scheme::http && scheme != boost::urls::scheme::https)
    throw std::invalid_argument(quoted + ": scheme must be http or https");
  if (!u.has_authority() || u.has_userinfo())
    throw std::invalid_argument(quoted + ": expected scheme://host[:port][/path]");
  HttpTarget t;
  t.https = scheme == boost::urls::scheme::https;
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      t.literal = asio::ip::address(asio::ip::make_address_v4(u.host_ipv4_address().to_uint()));
      t.host = t.literal->to_string();
      break;
    case boost::urls::host_type::ipv6: {
      asio::ip::address_v6::bytes_type bytes;
      const auto src = u.host_ipv6_address().to_bytes();
      std::copy(src.begin(), src.end(), bytes.begin());
      t.literal = asio::ip::address(asio::ip::address_v6(bytes));
      t.host = t.literal->to_string();
      break;
    }
    case boost::urls::host_type::name: {
      const auto h = u.encoded_host();
      if (h.empty()) throw std::invalid_argument(quoted + " has no host");
      if (h.find('%') != std::string_view::npos)
        throw std::invalid_argument(quoted + ": invalid host");
      t.host.assign(h.data(), h.size());
      for (char& c : t.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      // Numeric forms the resolver reads as IPv4 (127.1, 2130706433) are addresses.
      in_addr a4{};
      if (inet_aton(t.host.c_str(), &a4) == 1)
        t.literal = asio::ip::address(asio::ip::address_v4(ntohl(a4.s_addr)));
      break;
    }
    default:
      throw std::invalid_argument(quoted + ": invalid host");
  }
  t.port = u.has_port() ? std::string(u.port()) : (t.https ? "443" : "80");
  if (t.port.empty() || t.port.size() > 5 ||
      t.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(t.port) == 0 ||
      std::stoul(t.port) > 65535)
    throw std::invalid_argument(quoted + " has an invalid port");
  const auto target = u.encoded_target();
  t.target = target.empty() ? "/" : std::string(target.data(), target.size());
  if (t.target.front() != '/') t.target = "/" + t.target;
  t.host_header = t.literal && t.literal->is_v6() ? "[" + t.host + "]" : t.host;
  if (u.has_port()) t.host_header += ":" + t.port;
  return t;
}

std::optional<std::string_view> OutboundResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return std::string_view(v);
  return std::nullopt;
}

struct Exchange;

struct HttpClient::Impl : std::enable_shared_from_this<HttpClient::Impl> {
  Impl(asio::io_context& io, HttpClientHooks hooks) : io(io), hooks(std::move(hooks)) {
    ssl_ctx.set_default_verify_paths();  // honours SSL_CERT_FILE / SSL_CERT_DIR
    ssl_ctx.set_verify_mode(ssl::verify_peer);
    ssl_ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                        ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  }

  std::unique_ptr<Conn> take_idle(const std::string& key) {
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& list = it->second;
    const auto now = Clock::now();
    while (!list.empty()) {
      std::unique_ptr<Conn> c = std::move(list.back());
      list.pop_back();
      if (now - c->idle_since < kIdleLifetime && c->still_idle()) return c;
      c->close();
    }
    return nullptr;
  }

  void put_idle(const std::string& key, std::unique_ptr<Conn> c) {
    if (stopped) return c->close();
    auto& list = idle[key];
    const auto now = Clock::now();
    std::erase_if(list, [&](std::unique_ptr<Conn>& old) {
      if (now - old->idle_since < kIdleLifetime) return false;
      old->close();
      return true;
    });
    if (list.size() >= kMaxIdlePerHost) {
      list.front()->close();
      list.erase(list.begin());
    }
    c->idle_since = now;
    list.push_back(std::move(c));
  }

  asio::io_context& io;
  HttpClientHooks hooks;
  ssl::context ssl_ctx{ssl::context::tls_client};
  std::map<std::string, std::vector<std::unique_ptr<Conn>>> idle;
  std::unordered_map<Exchange*, std::weak_ptr<Exchange>> live;
  bool stopped = false;
  uint64_t opened = 0;
  uint64_t reused = 0;
};

// One request, from resolution to the response (retried once on a fresh connection when a
// reused one turns out to be dead before any response byte arrived).
struct Exchange : std::enable_shared_from_this<Exchange> {
  Exchange(std::shared_ptr<HttpClient::Impl> impl, OutboundRequest req, HttpClient::Done done)
      : impl(std::move(impl)),
        req(std::move(req)),
        done(std::move(done)),
        timer(this->impl->io),
        resolver(this->impl->io),
        key(pool_key(this->req.target)) {}

  void start() {
    impl->live.emplace(this, weak_from_this());
    timer.expires_after(req.timeout);
    timer.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec)
        self->fail("http_request_failed",
                   (self->connect_only ? "connection to " : "HTTP request to ") + self->url() +
                       " timed out after " + std::to_string(self->req.timeout.count()) + " ms");
    });
    if (connect_only) {
      if ((conn = impl->take_idle(key))) return connected();
      return resolve();
    }
    const auto verb = http::string_to_verb(req.method);
    msg.method(verb);
    msg.target(req.target.target);
    msg.version(11);
    msg.set(http::field::host, req.target.host_header);
    for (auto& [name, value] : req.headers) msg.set(name, value);
    msg.body() = std::move(req.body);
    msg.prepare_payload();
    if ((conn = impl->take_idle(key))) {
      reused = true;
      ++impl->reused;
      write();
    } else {
      resolve();
    }
  }

  std::string url() const { return req.target.url(); }

  void resolve() {
    if (req.target.literal) {
      tcp::endpoint ep(*req.target.literal,
                       static_cast<unsigned short>(std::stoul(req.target.port)));
      return on_resolved(tcp::resolver::results_type::create(ep, req.target.host, req.target.port));
    }
    resolver.async_resolve(
        req.target.host, req.target.port,
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
          if (self->finished) return;
          if (ec) {
            if (self->impl->hooks.dns_failure)
              return self->finish(
                  self->impl->hooks.dns_failure(self->req.target.host, ec.message()), {});
            return self->fail("http_request_failed", "DNS lookup of " + self->req.target.host +
                                                         " failed: " + ec.message());
          }
          self->on_resolved(std::move(r));
        });
  }

  void on_resolved(tcp::resolver::results_type results) {
    if (impl->hooks.check_address)
      for (const auto& entry : results)
        if (auto refused = impl->hooks.check_address(entry.endpoint().address()))
          return finish(std::move(*refused), {});
    conn = std::make_unique<Conn>();
    if (req.target.https)
      conn->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(impl->io, impl->ssl_ctx);
    else
      conn->plain = std::make_unique<beast::tcp_stream>(impl->io);
    ++impl->opened;
    conn->tcp().async_connect(results,
                              [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
                                if (self->finished) return;
                                if (ec) return self->transport_error("connect", ec);
                                error_code ignored;
                                self->conn->tcp().socket().set_option(tcp::no_delay(true), ignored);
                                if (self->conn->tls)
                                  self->handshake();
                                else
                                  self->connected();
                              });
  }

  void handshake() {
    SSL* s = conn->tls->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(s);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (req.target.literal) {
      X509_VERIFY_PARAM_set1_ip_asc(param, req.target.host.c_str());
    } else {
      SSL_set_tlsext_host_name(s, req.target.host.c_str());
      X509_VERIFY_PARAM_set1_host(param, req.target.host.c_str(), 0);
    }
    conn->tls->async_handshake(ssl::stream_base::client,
                               [self = shared_from_this()](error_code ec) {
                                 if (self->finished) return;
                                 if (ec) return self->transport_error("TLS handshake", ec);
                                 self->connected();
                               });
  }

  void connected() {
    if (!connect_only) return write();
    impl->put_idle(key, std::move(conn));
    finish(std::nullopt, {});
  }

  void write() {
    parser.emplace();
    parser->body_limit(req.max_response_bytes);
    auto on_written = [self = shared_from_this()](error_code ec, size_t) {
      if (self->finished) return;
      if (ec) return self->transport_error("send", ec);
      self->read();
    };
    if (conn->tls)
      http::async_write(*conn->tls, msg, std::move(on_written));
    else
      http::async_write(*conn->plain, msg, std::move(on_written));
  }

  void read() {
    auto on_read = [self = shared_from_this()](error_code ec, size_t) {
      if (self->finished) return;
      if (ec) return self->transport_error("receive", ec);
      self->on_response();
    };
    if (conn->tls)
      http::async_read(*conn->tls, buf, *parser, std::move(on_read));
    else
      http::async_read(*conn->plain, buf, *parser, std::move(on_read));
  }

  void on_response() {
    auto& res = parser->get();
    OutboundResponse out;
    out.status = res.result_int();
    out.body = std::move(res.body());
    if (req.keep_response_headers)
      for (const auto& field : res)
        out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    if (parser->keep_alive() && buf.size() == 0) impl->put_idle(key, std::move(conn));
    finish(std::nullopt, std::move(out));
  }

  void transport_error(const char* step, error_code ec) {
    const bool got_response = parser && parser->got_some();
    if (reused && !retried && !got_response) {
      // The kept connection died under us (the server closed it as we sent): once more, fresh.
      retried = true;
      reused = false;
      conn->close();
      conn.reset();
      buf.clear();
      return resolve();
    }
    const bool headers_done = parser && parser->is_header_done();
    fail(headers_done ? "http_response_failed" : "http_request_failed",
         "HTTP request to " + url() + " failed (" + step + "): " + ec.message());
  }

  void fail(std::string code, std::string message) {
    finish(OutboundFailure{std::move(code), std::move(message)}, {});
  }

  void finish(std::optional<OutboundFailure> failure, OutboundResponse res) {
    if (finished) return;
    finished = true;
    impl->live.erase(this);
    timer.cancel();
    resolver.cancel();
    if (conn) conn->close();
    auto d = std::move(done);
    d(std::move(failure), std::move(res));
  }

  std::shared_ptr<HttpClient::Impl> impl;
  OutboundRequest req;
  HttpClient::Done done;
  asio::steady_timer timer;
  tcp::resolver resolver;
  std::string key;
  std::unique_ptr<Conn> conn;
  beast::flat_buffer buf;
  http::request<http::string_body> msg;
  std::optional<http::response_parser<http::string_body>> parser;
  bool connect_only = false;
  bool reused = false;
  bool retried = false;
  bool finished = false;
};

HttpClient::HttpClient(asio::io_context& io, HttpClientHooks hooks)
    : impl_(std::make_shared<Impl>(io, std::move(hooks))) {}

HttpClient::~HttpClient() { stop(); }

void HttpClient::send(OutboundRequest req, Done done) {
  if (impl_->stopped) {
    return done(OutboundFailure{"http_request_failed", "the engine is shutting down"}, {});
  }
  auto ex = std::make_shared<Exchange>(impl_, std::move(req), std::move(done));
  ex->start();
}

void HttpClient::connect(const HttpTarget& to, std::chrono::milliseconds timeout,
                         std::function<void(std::optional<OutboundFailure>)> done) {
  if (impl_->stopped)
    return done(OutboundFailure{"http_request_failed", "the engine is shutting down"});
  OutboundRequest req;
  req.target = to;
  req.timeout = timeout;
  auto ex = std::make_shared<Exchange>(
      impl_, std::move(req),
      [done = std::move(done)](std::optional<OutboundFailure> f, OutboundResponse) {
        done(std::move(f));
      });
  ex->connect_only = true;
  ex->start();
}

void HttpClient::stop() {
  impl_->stopped = true;
  for (auto& [key, list] : impl_->idle)
    for (auto& c : list) c->close();
  impl_->idle.clear();
  std::vector<std::shared_ptr<Exchange>> live;
  for (auto& [ptr, weak] : impl_->live)
    if (auto ex = weak.lock()) live.push_back(std::move(ex));
  for (auto& ex : live) ex->fail("http_request_failed", "the engine is shutting down");
}

uint64_t HttpClient::connections_opened() const { return impl_->opened; }
uint64_t HttpClient::reuses() const { return impl_->reused; }

}  // namespace iii::net
