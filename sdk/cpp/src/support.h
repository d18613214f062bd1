// SDK internals that need no networking: URL parsing, ids, frame encoding, worker metadata.
// Kept apart from client.cc so they are cheap to compile and to unit-test.
#pragma once

#include <boost/json/object.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "iii/iii.h"

namespace iii::detail {

struct WsUrl {
  std::string host;         // for the resolver (IPv6 without brackets)
  std::string port;         // numeric service, "80" when absent
  std::string host_header;  // value of the Host header (host[:port])
  std::string target;       // path + query, at least "/"
};

// Accepts ws:// (and http:// as an alias). Returns nullopt and sets *error otherwise.
std::optional<WsUrl> parse_ws_url(std::string_view url, std::string* error);

// Random (version 4) UUID in lower-case hyphenated form.
std::string make_uuid_v4();

// "<hostname>:<pid>", the Node/Python default worker name.
std::string default_worker_name();
// "linux 6.1.0 (x64)": platform, release, Node-style arch name.
std::string os_description();
// Payload of the `engine::workers::register` call made after each connect.
boost::json::object worker_metadata(const std::string& worker_name);

// Frames are written with protocol::append_json (src/protocol/json_writer.h), which matches
// boost::json::serialize byte for byte but serialises large payloads straight into the frame.

// One `invokefunction` frame. `invocation_id` is omitted for void calls.
std::string encode_invoke_frame(const std::optional<std::string>& invocation_id,
                                std::string_view function_id, const boost::json::value& payload,
                                const TriggerAction& action);
// One `invocationresult` frame: `error` wins over `result`; an empty `result` is omitted.
std::string encode_result_frame(std::string_view invocation_id, std::string_view function_id,
                                const std::optional<boost::json::value>& result,
                                const std::optional<std::string>& error_code,
                                const std::string& error_message,
                                const std::optional<std::string>& stacktrace,
                                const std::optional<std::string>& traceparent,
                                const std::optional<std::string>& baggage);
std::string encode_register_function(std::string_view id, const FunctionOptions& opts);
std::string encode_unregister_function(std::string_view id);
std::string encode_register_trigger(std::string_view id, const TriggerConfig& t);
std::string encode_unregister_trigger(std::string_view id, std::string_view type);

}  // namespace iii::detail
