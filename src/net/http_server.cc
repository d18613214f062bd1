#include "net/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(10);

// Reads the request line and headers of one connection.
class RequestReader : public std::enable_shared_from_this<RequestReader> {
 public:
  RequestReader(tcp::socket&& socket, std::shared_ptr<const RequestRouter> router)
      : stream_(std::move(socket)), router_(std::move(router)) {}

  void run() {
    parser_.header_limit(16 * 1024);
    parser_.body_limit(0);
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->on_read(ec);
                     });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec) return;  // the client went away or sent something that is not HTTP
    beast::error_code ignored;
    const auto ep = stream_.socket().remote_endpoint(ignored);
    std::string ip = ignored ? std::string() : ep.address().to_string();
    stream_.expires_never();
    const uint16_t port = ignored ? 0 : ep.port();
    (*router_)(std::make_shared<IncomingRequest>(std::move(stream_), parser_.release(),
                                                 std::move(ip), port));
  }

  beast::tcp_stream stream_;
  std::shared_ptr<const RequestRouter> router_;
  beast::flat_buffer buffer_{2048};
  http::request_parser<http::empty_body> parser_;
};

}  // namespace

IncomingRequest::IncomingRequest(beast::tcp_stream&& stream,
                                 http::request<http::empty_body>&& req, std::string ip,
                                 uint16_t remote_port)
    : stream_(std::move(stream)), req_(std::move(req)), ip_(std::move(ip)), remote_port_(remote_port) {}

std::string_view IncomingRequest::path() const {
  std::string_view t = target();
  return t.substr(0, t.find('?'));
}

bool IncomingRequest::is_websocket_upgrade() const { return beast::websocket::is_upgrade(req_); }

tcp::socket IncomingRequest::release_socket() { return stream_.release_socket(); }

void IncomingRequest::respond(http::status status, std::string body) {
  auto res = std::make_shared<http::response<http::string_body>>(status, 11);
  res->set(http::field::server, "iii/" III_VERSION);
  res->set(http::field::content_type, "text/plain");
  res->keep_alive(false);
  res->body() = std::move(body);
  res->prepare_payload();
  stream_.expires_after(kRequestTimeout);
  http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
    beast::error_code ignored;
    self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  });
}

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, std::string n, RequestRouter r)
      : name(std::move(n)),
        router(std::make_shared<const RequestRouter>(std::move(r))),
        acceptor(io),
        retry(io) {}

  void do_accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      if (ec) {
        // Typically EMFILE: back off briefly instead of spinning on the error.
        spdlog::warn("{}: accept failed: {}", self->name, ec.message());
        self->retry.expires_after(std::chrono::milliseconds(50));
        self->retry.async_wait([self](beast::error_code e) {
          if (!e) self->do_accept();
        });
        return;
      }
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<RequestReader>(std::move(socket), self->router)->run();
      self->do_accept();
    });
  }

  std::string name;
  std::shared_ptr<const RequestRouter> router;
  tcp::acceptor acceptor;
  asio::steady_timer retry;
  uint16_t port = 0;
};

HttpServer::HttpServer(asio::io_context& io, std::string name, const std::string& host,
                       uint16_t port, RequestRouter router)
    : impl_(std::make_shared<Impl>(io, std::move(name), std::move(router))) {
  beast::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::system_error(ec, "invalid host '" + host + "'");
  tcp::endpoint ep(address, port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep, ec);
  if (ec) throw std::system_error(ec, "cannot listen on " + host + ":" + std::to_string(port));
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  impl_->port = impl_->acceptor.local_endpoint().port();
  spdlog::info("{} listening on {}:{}", impl_->name, host, impl_->port);
  impl_->do_accept();
}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::stop() {
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->retry.cancel();
}

}  // namespace iii::net
