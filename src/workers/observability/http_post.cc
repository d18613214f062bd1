#include "workers/observability/http_post.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>
#include <stdexcept>

namespace iii::observability {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

HttpTarget parse_http_url(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw std::invalid_argument("'" + std::string(url) + "' is not a URL");
  const auto& u = *parsed;
  if (u.scheme() != "http")
    throw std::invalid_argument("'" + std::string(url) + "': only http:// URLs are supported");
  HttpTarget t;
  t.host = std::string(u.encoded_host_address());
  if (!t.host.empty() && t.host.front() == '[' && t.host.back() == ']')
    t.host = t.host.substr(1, t.host.size() - 2);
  if (t.host.empty()) throw std::invalid_argument("'" + std::string(url) + "' has no host");
  t.port = u.has_port() ? std::string(u.port()) : std::string("80");
  t.target = std::string(u.encoded_target());
  if (t.target.empty() || t.target.front() != '/') t.target.insert(0, "/");
  return t;
}

namespace {

asio::awaitable<void> run_post(asio::io_context& io, HttpTarget to, std::string body,
                               std::string content_type, std::chrono::milliseconds timeout,
                               std::function<void(int, std::string)> done) {
  beast::error_code ec;
  beast::tcp_stream stream(io);
  asio::ip::tcp::resolver resolver(io);
  auto results = co_await resolver.async_resolve(to.host, to.port,
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    done(0, "cannot resolve " + to.host + ": " + ec.message());
    co_return;
  }
  stream.expires_after(timeout);
  co_await stream.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    done(0, "cannot connect: " + ec.message());
    co_return;
  }
  http::request<http::string_body> req{http::verb::post, to.target, 11};
  req.set(http::field::host, to.host + ":" + to.port);
  req.set(http::field::content_type, content_type);
  req.set(http::field::user_agent, "iii-engine");
  req.keep_alive(false);
  req.body() = std::move(body);
  req.prepare_payload();
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    done(0, ec == beast::error::timeout ? "timed out" : ec.message());
    co_return;
  }
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  co_await http::async_read(stream, buf, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    done(0, ec == beast::error::timeout ? "timed out" : ec.message());
    co_return;
  }
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  done(static_cast<int>(parser.get().result_int()), {});
}

}  // namespace

void http_post(asio::io_context& io, const HttpTarget& to, std::string body,
               std::string content_type, std::chrono::milliseconds timeout,
               std::function<void(int, std::string)> done) {
  asio::co_spawn(
      io, run_post(io, to, std::move(body), std::move(content_type), timeout, std::move(done)),
      asio::detached);
}

}  // namespace iii::observability
