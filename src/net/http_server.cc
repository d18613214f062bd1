#include "net/http_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <cstdio>
#include <deque>

namespace iii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// After the last response of a connection that closes, what the client still sends (say the
// rest of a refused body) is read and dropped for a while, so that closing does not reset the
// connection before the client has read the response.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 4 * 1024 * 1024;

bool has_token(std::string_view value, std::string_view token) {
  auto lower = [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  for (size_t i = 0; i + token.size() <= value.size(); ++i) {
    size_t j = 0;
    while (j < token.size() && lower(value[i + j]) == token[j]) ++j;
    if (j == token.size()) return true;
  }
  return false;
}

// Status line and header fields, as written on the wire.
std::string serialize_head(HttpStatus status, const HttpFields& fields) {
  std::string out = "HTTP/1.1 ";
  out += std::to_string(static_cast<unsigned>(status));
  out += ' ';
  out += std::string_view(http::obsolete_reason(status));
  out += "\r\n";
  for (const auto& f : fields) {
    out += std::string_view(f.name_string());
    out += ": ";
    out += std::string_view(f.value());
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

bool has_no_body(HttpStatus s) {
  const unsigned code = static_cast<unsigned>(s);
  return code < 200 || code == 204 || code == 304;
}

}  // namespace

struct ServerShared {
  HttpServerOptions opts;
  RequestRouter router;
  // Set by HttpServer::stop(): the router (often a member of the server's owner) is not called
  // any more, even by connections that outlive the server.
  mutable bool stopped = false;
};

// One accepted connection: reads a request, hands it to the router, writes its response, and
// then reads the next one (or closes). At most one request is out with the router at a time.
class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(tcp::socket&& socket, std::shared_ptr<const ServerShared> shared, std::string ip,
                 uint16_t port)
      : socket_(std::move(socket)),
        shared_(std::move(shared)),
        opts_(shared_->opts),
        ip_(std::move(ip)),
        port_(port),
        read_timer_(socket_.get_executor()),
        write_timer_(socket_.get_executor()) {}

  void read_request() {
    if (released_ || broken_) return;
    // Headers are read through a small buffer (idle keep-alive connections hold little); a
    // body grew it, so give the memory back unless pipelined bytes still need it.
    if (buffer_.capacity() > kHeaderReadBuffer && buffer_.size() <= kHeaderReadBuffer)
      buffer_.shrink_to_fit();
    buffer_.max_size(std::max(kHeaderReadBuffer, buffer_.size()));
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(opts_.max_header_bytes));
    parser_->body_limit(opts_.max_body_bytes);
    arm_read(opts_.header_timeout);
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  // Queues bytes of a response: `head`, `body` and `tail` leave in one gather write. `last`
  // ends the response; then the connection reads its next request, or closes when `close`.
  void queue(std::string head, std::string body, std::string tail,
             std::function<void(bool)> written, bool last, bool close) {
    if (broken_ || released_) {
      if (written) asio::post(socket_.get_executor(), [w = std::move(written)] { w(false); });
      return;
    }
    queued_bytes_ += head.size() + body.size() + tail.size();
    out_.push_back(
        Out{std::move(head), std::move(body), std::move(tail), std::move(written), last, close});
    if (!writing_) write_next();
  }

  size_t queued_bytes() const { return queued_bytes_; }

  template <class F>
  void post(F&& f) {
    asio::post(socket_.get_executor(), std::forward<F>(f));
  }
  bool connected() const { return !broken_ && !released_; }

  tcp::socket release() {
    released_ = true;
    read_timer_.cancel();
    write_timer_.cancel();
    return std::move(socket_);
  }

 private:
  struct Out {
    std::string head, body, tail;
    std::function<void(bool)> written;
    bool last;
    bool close;
  };

  // A timer's handler can already be queued when the timer is cancelled: each arming has a
  // generation, and a handler of an older one does nothing.
  void arm_read(std::chrono::milliseconds after) {
    read_timed_out_ = false;
    read_timer_.expires_after(after);
    read_timer_.async_wait([weak = weak_from_this(), gen = ++read_gen_](beast::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || gen != self->read_gen_ || self->released_) return;
      self->read_timed_out_ = true;
      beast::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }

  // Beast reads at most the buffer's free capacity at a time: a body read through the 4 KiB
  // header buffer took one recv and one trip through Beast's composed read per 4 KiB (a quarter
  // of the engine's CPU for a 1 MiB body).
  void grow_for_body() {
    buffer_.max_size(std::max(kBodyReadBuffer, buffer_.size()));
    buffer_.reserve(kBodyReadBuffer);
  }

  void disarm_read() {
    ++read_gen_;
    read_timer_.cancel();
  }

  void on_header(beast::error_code ec) {
    disarm_read();
    if (ec) return on_read_error(ec, parser_->got_some() || buffer_.size() > 0);
    const auto& req = parser_->get();
    if (beast::websocket::is_upgrade(req) || parser_->is_done()) return dispatch();
    if (opts_.stream_body && opts_.stream_body(req)) return dispatch_head();
    if (has_token(req[http::field::expect], "100-continue"))
      queue("HTTP/1.1 100 Continue\r\n\r\n", {}, {}, {}, false, false);
    arm_read(opts_.body_timeout);
    grow_for_body();
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->disarm_read();
                       if (ec) return self->on_read_error(ec, true);
                       self->dispatch();
                     });
  }

  // `partial`: part of a request has arrived, so a client waiting for an answer gets one.
  void on_read_error(beast::error_code ec, bool partial) {
    if (released_ || broken_) return;
    if (read_timed_out_) {
      if (!partial) return close_now();
      spdlog::debug("{}: {} was too slow to send its request", opts_.name, ip_);
      return refuse(HttpStatus::request_timeout, "Request Timeout\n");
    }
    // Beast reports a single header line longer than its read buffer as buffer_overflow.
    if (ec == http::error::header_limit ||
        (ec == http::error::buffer_overflow && !parser_->is_header_done()))
      return refuse(HttpStatus::request_header_fields_too_large,
                    "Request header fields too large\n");
    if (ec == http::error::body_limit)
      return refuse(
          HttpStatus::payload_too_large,
          "Request body too large (limit " + std::to_string(opts_.max_body_bytes) + " bytes)\n");
    if (ec == asio::error::eof || ec == http::error::end_of_stream ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == http::error::partial_message)
      return close_now();  // the client went away
    spdlog::debug("{}: bad request from {}: {}", opts_.name, ip_, ec.message());
    refuse(HttpStatus::bad_request, "Bad Request\n");
  }

  // An answer of the server's own, after which the connection closes.
  void refuse(HttpStatus status, std::string body) {
    HttpFields f;
    f.set(http::field::server, "iii/" III_VERSION);
    f.set(http::field::content_type, "text/plain");
    f.set(http::field::content_length, std::to_string(body.size()));
    f.set(http::field::connection, "close");
    queue(serialize_head(status, f), std::move(body), {}, {}, true, true);
  }

  void dispatch() {
    if (shared_->stopped) return close_now();
    HttpRequest req = parser_->release();
    parser_.reset();
    auto r = std::make_shared<IncomingRequest>(shared_from_this(), std::move(req), ip_, port_);
    shared_->router(std::move(r));
  }

  // The router gets the headers now and reads the body with read_body_piece.
  void dispatch_head() {
    if (shared_->stopped) return close_now();
    http::request_header<> head = parser_->get().base();
    continue_due_ = has_token(head[http::field::expect], "100-continue");
    auto r = std::make_shared<IncomingRequest>(shared_from_this(), HttpRequest(std::move(head)),
                                               ip_, port_);
    r->body_pending_ = true;
    shared_->router(std::move(r));
  }

 public:
  // The next piece of a body the router reads itself (see stream_body).
  void read_body_piece(std::function<void(beast::error_code, std::string_view, bool)> cb) {
    if (broken_ || released_) {
      return post([cb = std::move(cb)] { cb(asio::error::operation_aborted, {}, false); });
    }
    if (!parser_ || body_reading_) {  // a read is under way
      return post([cb = std::move(cb)] { cb(asio::error::in_progress, {}, false); });
    }
    if (continue_due_) {
      continue_due_ = false;
      queue("HTTP/1.1 100 Continue\r\n\r\n", {}, {}, {}, false, false);
    }
    body_reading_ = true;
    arm_read(opts_.body_timeout);
    grow_for_body();
    http::async_read_some(
        socket_, buffer_, *parser_,
        [self = shared_from_this(), cb = std::move(cb)](beast::error_code ec, size_t) mutable {
          self->body_reading_ = false;
          self->disarm_read();
          if (self->released_ || !self->parser_)
            return cb(asio::error::operation_aborted, {}, false);
          if (self->read_timed_out_) ec = beast::error::timeout;
          if (ec) return cb(ec, {}, false);
          std::string piece = std::move(self->parser_->get().body());
          self->parser_->get().body().clear();
          const bool last = self->parser_->is_done();
          if (last) self->parser_.reset();
          if (piece.empty() && !last) return self->read_body_piece(std::move(cb));
          cb({}, piece, last);
        });
  }

 private:
  void write_next() {
    writing_ = true;
    Out& o = out_.front();
    write_timer_.expires_after(opts_.write_timeout);
    write_timer_.async_wait([weak = weak_from_this(), gen = ++write_gen_](beast::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || gen != self->write_gen_ || self->released_) return;
      spdlog::debug("{}: {} did not read its response in time", self->opts_.name, self->ip_);
      beast::error_code ignored;
      self->socket_.close(ignored);
    });
    std::array<asio::const_buffer, 3> bufs{asio::buffer(o.head), asio::buffer(o.body),
                                           asio::buffer(o.tail)};
    asio::async_write(socket_, bufs, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_written(ec);
    });
  }

  void on_written(beast::error_code ec) {
    writing_ = false;
    ++write_gen_;
    write_timer_.cancel();
    if (released_) return;
    Out o = std::move(out_.front());
    out_.pop_front();
    queued_bytes_ -= o.head.size() + o.body.size() + o.tail.size();
    if (ec) {
      fail_all(std::move(o));
      return close_now();
    }
    if (o.written) o.written(true);
    if (o.last) {
      // A body the router did not read to its end is not worth reading.
      if (o.close || parser_) return linger();
      // Whatever the router queues meanwhile is sent before the next response.
      read_request();
    }
    if (!writing_ && !out_.empty() && !broken_) write_next();
  }

  void fail_all(Out first) {
    broken_ = true;
    std::deque<Out> rest;
    rest.swap(out_);
    queued_bytes_ = 0;
    if (first.written) first.written(false);
    for (auto& o : rest)
      if (o.written) o.written(false);
  }

  // Stops sending, then drops what the client still sends until it closes, kLingerBytes have
  // come, or kLingerTime has passed.
  void linger() {
    broken_ = true;  // nothing more is written
    beast::error_code ignored;
    if (body_reading_) socket_.cancel(ignored);  // its handler tells the router
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    read_timer_.expires_after(kLingerTime);
    read_timer_.async_wait([weak = weak_from_this(), gen = ++read_gen_](beast::error_code ec) {
      if (auto self = weak.lock(); self && !ec && gen == self->read_gen_) self->close_now();
    });
    drain();
  }

  void drain() {
    socket_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->lingered_ += n;
                              if (ec || self->lingered_ > kLingerBytes) return self->close_now();
                              self->drain();
                            });
  }

  void close_now() {
    if (released_) return;
    broken_ = true;
    read_timer_.cancel();
    write_timer_.cancel();
    beast::error_code ignored;
    socket_.close(ignored);
    std::deque<Out> rest;
    rest.swap(out_);
    queued_bytes_ = 0;
    for (auto& o : rest)
      if (o.written) o.written(false);
  }

  tcp::socket socket_;
  std::shared_ptr<const ServerShared> shared_;
  const HttpServerOptions& opts_;
  std::string ip_;
  uint16_t port_;
  static constexpr size_t kHeaderReadBuffer = 4096;
  static constexpr size_t kBodyReadBuffer = 64 * 1024;
  beast::flat_buffer buffer_{kHeaderReadBuffer};
  std::optional<http::request_parser<http::string_body>> parser_;
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
  std::deque<Out> out_;
  size_t queued_bytes_ = 0;
  std::array<char, 4096> discard_;
  size_t lingered_ = 0;
  bool read_timed_out_ = false;
  bool body_reading_ = false;  // a read_body_piece is under way
  bool continue_due_ = false;  // 100 Continue is sent when the router first reads the body
  uint64_t read_gen_ = 0;
  uint64_t write_gen_ = 0;
  bool writing_ = false;
  bool broken_ = false;
  bool released_ = false;
};

IncomingRequest::IncomingRequest(std::shared_ptr<HttpConnection> conn, HttpRequest&& req,
                                 std::string ip, uint16_t remote_port)
    : conn_(std::move(conn)),
      req_(std::move(req)),
      ip_(std::move(ip)),
      remote_port_(remote_port),
      keep_alive_(req_.version() == 11 && req_.keep_alive()) {}

IncomingRequest::~IncomingRequest() {
  if (!conn_) return;  // released for an upgrade
  if (!answered_) {
    respond(HttpStatus::internal_server_error, "The request was not answered\n");
  } else if (streaming_ && !ended_) {
    // The body is incomplete: the client learns it from the connection closing early.
    conn_->queue({}, {}, {}, {}, true, true);
  }
}

std::string_view IncomingRequest::method() const { return req_.method_string(); }
std::string_view IncomingRequest::target() const { return req_.target(); }

std::string_view IncomingRequest::path() const {
  std::string_view t = target();
  return t.substr(0, t.find('?'));
}

bool IncomingRequest::is_websocket_upgrade() const { return beast::websocket::is_upgrade(req_); }

bool IncomingRequest::connected() const { return conn_ && conn_->connected(); }

void IncomingRequest::read_body(
    std::function<void(boost::system::error_code, std::string_view, bool)> on_piece) {
  if (!conn_) return on_piece(asio::error::operation_aborted, {}, false);
  if (!body_pending_ || body_error_) {  // read before routing, to its end, or failed
    return conn_->post(
        [on_piece = std::move(on_piece), ec = body_error_] { on_piece(ec, {}, !ec); });
  }
  conn_->read_body_piece([self = shared_from_this(), on_piece = std::move(on_piece)](
                             beast::error_code ec, std::string_view piece, bool last) {
    // After an error the body stays pending: the connection closes after the response.
    if (ec)
      self->body_error_ = ec;
    else if (last)
      self->body_pending_ = false;
    on_piece(ec, piece, last);
  });
}

size_t IncomingRequest::queued_bytes() const { return conn_ ? conn_->queued_bytes() : 0; }

tcp::socket IncomingRequest::release_socket() {
  answered_ = true;
  auto conn = std::move(conn_);
  return conn->release();
}

void IncomingRequest::respond(HttpStatus status, std::string body, std::string_view content_type,
                              HttpFields fields) {
  if (answered_ || !conn_) return;
  answered_ = ended_ = true;
  // A body not read to its end is not worth reading: the connection closes.
  const bool close =
      !keep_alive_ || body_pending_ || has_token(fields[http::field::connection], "close");
  if (fields.find(http::field::server) == fields.end())
    fields.set(http::field::server, "iii/" III_VERSION);
  fields.erase(http::field::transfer_encoding);
  if (has_no_body(status)) {
    body.clear();
    fields.erase(http::field::content_length);
  } else {
    if (!content_type.empty() && fields.find(http::field::content_type) == fields.end())
      fields.set(http::field::content_type, content_type);
    fields.set(http::field::content_length, std::to_string(body.size()));
  }
  if (close) fields.set(http::field::connection, "close");
  if (req_.method() == http::verb::head) body.clear();
  conn_->queue(serialize_head(status, fields), std::move(body), {}, {}, true, close);
}

void IncomingRequest::start_response(HttpStatus status, HttpFields fields,
                                     std::optional<uint64_t> content_length) {
  if (answered_ || !conn_) return;
  answered_ = streaming_ = true;
  bool close = !keep_alive_ || body_pending_ || has_token(fields[http::field::connection], "close");
  if (fields.find(http::field::server) == fields.end())
    fields.set(http::field::server, "iii/" III_VERSION);
  fields.erase(http::field::transfer_encoding);
  fields.erase(http::field::content_length);
  length_ = content_length;
  if (content_length) {
    framing_ = 0;
    fields.set(http::field::content_length, std::to_string(*content_length));
  } else if (req_.version() == 11) {
    framing_ = 1;
    fields.set(http::field::transfer_encoding, "chunked");
  } else {
    framing_ = 2;  // HTTP/1.0 has no chunks: the body ends with the connection
    close = true;
  }
  if (close) fields.set(http::field::connection, "close");
  keep_alive_ = !close;
  conn_->queue(serialize_head(status, fields), {}, {}, {}, false, false);
}

void IncomingRequest::write_body(std::string piece, std::function<void(bool)> written) {
  if (!conn_ || !streaming_ || ended_) {  // no body is being sent
    if (written) written(false);
    return;
  }
  if (piece.empty() || req_.method() == http::verb::head) {  // nothing to send, in order
    if (written) conn_->queue({}, {}, {}, std::move(written), false, false);
    return;
  }
  if (length_ && sent_ + piece.size() > *length_) {
    spdlog::warn("{} {}: response body longer than its Content-Length; extra bytes dropped",
                 method(), target());
    piece.resize(static_cast<size_t>(*length_ - sent_));
  }
  sent_ += piece.size();
  if (framing_ == 1) {
    char size[32];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    conn_->queue(std::string(size, static_cast<size_t>(n)), std::move(piece), "\r\n",
                 std::move(written), false, false);
  } else {
    conn_->queue({}, std::move(piece), {}, std::move(written), false, false);
  }
}

void IncomingRequest::end_response() {
  if (!streaming_ || ended_ || !conn_) return;
  ended_ = true;
  // A body shorter than announced leaves the client waiting: only closing tells it.
  const bool short_body = length_ && sent_ != *length_ && req_.method() != http::verb::head;
  const bool close = !keep_alive_ || short_body;
  std::string last = framing_ == 1 && req_.method() != http::verb::head ? "0\r\n\r\n" : "";
  conn_->queue(std::move(last), {}, {}, {}, true, close);
}

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, HttpServerOptions o, RequestRouter r)
      : shared(std::make_shared<const ServerShared>(ServerShared{std::move(o), std::move(r)})),
        acceptor(io),
        retry(io) {}

  void do_accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      const auto& name = self->shared->opts.name;
      if (ec) {
        // Typically EMFILE: back off briefly instead of spinning on the error.
        spdlog::warn("{}: accept failed: {}", name, ec.message());
        self->retry.expires_after(std::chrono::milliseconds(50));
        self->retry.async_wait([self](beast::error_code e) {
          if (!e) self->do_accept();
        });
        return;
      }
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      const auto ep = socket.remote_endpoint(ignored);
      std::string ip = ignored ? std::string() : ep.address().to_string();
      const uint16_t port = ignored ? 0 : ep.port();
      std::make_shared<HttpConnection>(std::move(socket), self->shared, std::move(ip), port)
          ->read_request();
      self->do_accept();
    });
  }

  std::shared_ptr<const ServerShared> shared;
  tcp::acceptor acceptor;
  asio::steady_timer retry;
  uint16_t port = 0;
};

HttpServer::HttpServer(asio::io_context& io, HttpServerOptions opts, RequestRouter router)
    : impl_(std::make_shared<Impl>(io, std::move(opts), std::move(router))) {
  const auto& o = impl_->shared->opts;
  beast::error_code ec;
  const auto address = asio::ip::make_address(o.host, ec);
  if (ec) throw std::system_error(ec, "invalid host '" + o.host + "'");
  tcp::endpoint ep(address, o.port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep, ec);
  if (ec) throw std::system_error(ec, "cannot listen on " + o.host + ":" + std::to_string(o.port));
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  impl_->port = impl_->acceptor.local_endpoint().port();
  spdlog::info("{} listening on {}:{}", o.name, o.host, impl_->port);
  impl_->do_accept();
}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::stop() {
  impl_->shared->stopped = true;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->retry.cancel();
}

}  // namespace iii::net
