// Generic HTTP/1.1 server plumbing: accepts TCP connections (TCP_NODELAY on each), reads
// requests with bounded headers (431 beyond), bounded bodies (413 beyond) and a deadline for
// the request line and headers (408, or a plain close when nothing arrived), and hands each
// request to a router (after its body, or before it for requests the server is told to stream
// the body of). The router upgrades it to a WebSocket (release_socket), or answers it,
// now or later on the server's thread, whole (respond) or in pieces (start_response,
// write_body, end_response). Connections are kept alive (HTTP/1.1 unless `Connection: close`):
// the next request is read once the previous response has been written, so pipelined requests
// are answered in order. Used by the worker listener, the stream server and HTTP workers.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace iii::net {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpStatus = boost::beast::http::status;
using HttpFields = boost::beast::http::fields;

struct HttpServerOptions {
  std::string name = "http";  // for log lines: "<name> listening on host:port"
  std::string host = "0.0.0.0";
  uint16_t port = 0;                    // 0 picks one
  size_t max_header_bytes = 16 * 1024;  // request line + headers; 431 beyond
  size_t max_body_bytes = 1024 * 1024;  // 413 beyond (Content-Length or chunked)
  // From the moment a request is awaited (a new connection, or the end of the previous
  // response) until its headers are complete: 408 if part of a request came, else a close.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{30000};   // for the whole body; 408 beyond
  std::chrono::milliseconds write_timeout{30000};  // for each write of a response
  // Requests for which this returns true (say, by path) reach the router as soon as their
  // headers are in, with an empty body(): the router reads the body in pieces with read_body.
  std::function<bool(const HttpRequest&)> stream_body;
};

class HttpConnection;  // internal to http_server.cc

// One request and the right to answer it, handed to the router on the server's thread. Keep
// the shared_ptr to answer later (still on that thread). Exactly one answer: respond(), the
// streaming calls, or release_socket(); a request dropped unanswered gets a 500. The next
// request of the connection is read only once this one is answered and its response written.
class IncomingRequest : public std::enable_shared_from_this<IncomingRequest> {
 public:
  IncomingRequest(std::shared_ptr<HttpConnection> conn, HttpRequest&& req, std::string ip,
                  uint16_t remote_port);
  ~IncomingRequest();
  IncomingRequest(const IncomingRequest&) = delete;
  IncomingRequest& operator=(const IncomingRequest&) = delete;

  HttpRequest& request() { return req_; }
  std::string_view method() const;
  std::string_view target() const;
  std::string_view path() const;  // target without the query string
  const std::string& body() const { return req_.body(); }
  const std::string& ip() const { return ip_; }
  uint16_t remote_port() const { return remote_port_; }
  bool is_websocket_upgrade() const;
  // Whether the connection stays open after the response (HTTP/1.1, no `Connection: close`).
  bool keep_alive() const { return keep_alive_; }
  bool answered() const { return answered_; }
  // False once a write failed or timed out (the client is gone); later writes are dropped.
  bool connected() const;

  // The whole response. Content-Length and Server are set; `Connection: close` in `fields`
  // closes the connection after it. A HEAD request gets the headers only.
  void respond(HttpStatus status, std::string body, std::string_view content_type = "text/plain",
               HttpFields fields = {});

  // A response whose body follows in pieces: with Content-Length when `content_length` is
  // given, chunked otherwise (close-delimited for an HTTP/1.0 client).
  void start_response(HttpStatus status, HttpFields fields,
                      std::optional<uint64_t> content_length = std::nullopt);
  // Queues one piece of the body; `written(ok)` runs once it has left (ok = false: the client
  // is gone), which is the place to produce the next one. Pieces leave in order.
  void write_body(std::string piece, std::function<void(bool ok)> written = {});
  // Ends the body (the last chunk); then the connection reads its next request or closes.
  void end_response();
  // Bytes of this connection queued and not yet written.
  size_t queued_bytes() const;

  // For a request routed before its body (HttpServerOptions::stream_body): reads the next
  // piece of the body and calls `on_piece(ec, piece, last)` once; call again for the next one
  // (one read at a time; `Expect: 100-continue` is answered at the first). Errors:
  // http::error::body_limit (answer 413), beast::error::timeout (body_timeout passed; 408), or
  // the client went away. Answering before the body is read to its end closes the connection
  // after the response. Bodies read before routing (the default) report an empty last piece.
  void read_body(
      std::function<void(boost::system::error_code ec, std::string_view piece, bool last)>
          on_piece);

  // For an upgrade: takes the socket (the request stays readable). The connection is done.
  boost::asio::ip::tcp::socket release_socket();

 private:
  friend class HttpConnection;
  std::shared_ptr<HttpConnection> conn_;
  HttpRequest req_;
  std::string ip_;
  uint16_t remote_port_ = 0;
  bool keep_alive_ = false;
  bool answered_ = false;      // an answer has started
  bool body_pending_ = false;  // routed before its body, which is not read to its end yet
  boost::system::error_code body_error_;  // reading that body failed
  bool streaming_ = false;
  bool ended_ = false;
  std::optional<uint64_t> length_;  // declared Content-Length of a streamed body
  uint64_t sent_ = 0;               // body bytes queued so far
  int framing_ = 0;                 // of a streamed body: 0 length, 1 chunked, 2 close-delimited
};

using RequestRouter = std::function<void(std::shared_ptr<IncomingRequest>)>;

class HttpServer {
 public:
  // Binds host:port and logs "<name> listening on host:port".
  // Throws std::system_error when the address is invalid or cannot be bound.
  HttpServer(boost::asio::io_context& io, HttpServerOptions opts, RequestRouter router);
  ~HttpServer();
  uint16_t port() const;
  // Stops accepting and routing: requests already routed can still be answered; a connection
  // that sends another request is closed.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::net
