// Accepts TCP connections and reads one HTTP request from each (bounded in size and time),
// then hands it to a router that upgrades it to a WebSocket or answers it. Shared by the
// worker listener and the stream server. Internal to src/net.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>

namespace iii::net {

class IncomingRequest : public std::enable_shared_from_this<IncomingRequest> {
 public:
  IncomingRequest(boost::beast::tcp_stream&& stream,
                  boost::beast::http::request<boost::beast::http::empty_body>&& req, std::string ip,
                  uint16_t remote_port);

  boost::beast::http::request<boost::beast::http::empty_body>& request() { return req_; }
  std::string_view target() const { return req_.target(); }
  std::string_view path() const;  // target without the query string
  const std::string& ip() const { return ip_; }
  uint16_t remote_port() const { return remote_port_; }
  bool is_websocket_upgrade() const;

  // Answers with a short text body and closes the connection.
  void respond(boost::beast::http::status status, std::string body);
  // For an upgrade: takes the socket (the request stays readable).
  boost::asio::ip::tcp::socket release_socket();

 private:
  boost::beast::tcp_stream stream_;
  boost::beast::http::request<boost::beast::http::empty_body> req_;
  std::string ip_;
  uint16_t remote_port_ = 0;
};

using RequestRouter = std::function<void(std::shared_ptr<IncomingRequest>)>;

class HttpServer {
 public:
  // Binds host:port (port 0 picks one) and logs "<name> listening on host:port".
  // Throws std::system_error when the address is invalid or cannot be bound.
  HttpServer(boost::asio::io_context& io, std::string name, const std::string& host,
             uint16_t port, RequestRouter router);
  ~HttpServer();
  uint16_t port() const;
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::net
