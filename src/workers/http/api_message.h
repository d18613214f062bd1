// The JSON shapes of iii-http (modules.md §7.4, §7.5): the request object a handler receives and
// the response it may return. Pure functions, no sockets.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iii::workers::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// {query_params, path_params, headers, path, method, body, trigger}: `headers` lower-cased (last
// duplicate wins, values that are not UTF-8 become ""), `query_params` URL-decoded from `target`
// (last wins), `path` the registered template. The channel refs are added by the caller.
boost::json::object make_api_request(std::string_view method, std::string_view target,
                                     const HeaderList& headers, std::string_view api_path,
                                     const HeaderList& path_params, boost::json::value body);

// The decoded query string of a request target.
boost::json::object query_params(std::string_view target);

// A response ready to send.
struct EncodedResponse {
  unsigned status = 200;
  HeaderList headers;
  std::string body;
};

// A handler's non-null result (`status_code`, `headers` as an object or "Name: value" list,
// `body`), encoded by the original's rules; invalid status codes become 200 and invalid
// header names or values are skipped.
EncodedResponse encode_api_response(const boost::json::value& result);

// A JSON error body {"error": message, ...extra} with `status`.
EncodedResponse error_response(unsigned status, std::string_view message,
                               boost::json::object extra = {});

// The original's error_id: the low 48 bits of a nanosecond clock, in hex.
std::string make_error_id();

bool valid_header_name(std::string_view name);
bool valid_header_value(std::string_view value);

}  // namespace iii::workers::http
