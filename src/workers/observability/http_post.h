// A one-shot HTTP/1.1 POST on an io_context (Boost.Beast), for alert webhooks: connects,
// sends the body, reads the answer (bounded), all within one timeout; never blocks the
// thread that calls it. http:// only.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace iii::observability {

struct HttpTarget {
  std::string host, port, target;  // target: path and query, "/" at least
};
// Parses "http://host[:port][/path][?query]". Throws std::invalid_argument.
HttpTarget parse_http_url(std::string_view url);

// `done(status, error)`: status is the HTTP status (0 when none came), error says why when
// the request failed. Called on the io_context's thread.
void http_post(boost::asio::io_context& io, const HttpTarget& to, std::string body,
               std::string content_type, std::chrono::milliseconds timeout,
               std::function<void(int status, std::string error)> done);

}  // namespace iii::observability
