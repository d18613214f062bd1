// JSON <-> typed message conversion for the worker protocol.
#pragma once

#include <boost/json/parse_options.hpp>
#include <string>
#include <string_view>
#include <variant>

#include "protocol/messages.h"

namespace iii::protocol {

using DecodeResult = std::variant<Message, DecodeError>;

// Deepest JSON nesting accepted in a payload or stored value: serde_json's limit, which the
// original engine enforces on whole frames, so anything it accepts parses here too.
inline constexpr size_t kMaxJsonDepth = 128;
// Parse options with that limit, for every boost::json::parse of untrusted or stored text.
boost::json::parse_options json_parse_options();

// Parses one frame. Never throws; malformed input yields DecodeError with a readable reason.
DecodeResult decode(std::string_view frame);
// Decodes from an already parsed object (used by tests and internal callers).
DecodeResult decode(boost::json::object&& obj);

// True if `s` is a UUID in any of the accepted forms (hyphenated, simple, braced, urn).
bool is_uuid(std::string_view s);

// Encoders for engine -> worker frames. All return one compact JSON text.
std::string encode_worker_registered(std::string_view worker_id);
// With the token a newer SDK sends back in `reattach` after a reconnect.
std::string encode_worker_registered(std::string_view worker_id, std::string_view reattach_token);
std::string encode_pong();
std::string encode_invoke(std::string_view invocation_id, std::string_view function_id,
                          const boost::json::value& data,
                          const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage,
                          const std::optional<boost::json::value>& metadata = std::nullopt);
std::string encode_result(std::string_view invocation_id, std::string_view function_id,
                          const std::optional<boost::json::value>& result,
                          const std::optional<ErrorBody>& error,
                          const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage);
// The same frame with a successful result given as compact JSON text, written verbatim (the
// caller guarantees it is one valid JSON value). A large result is then one copy.
std::string encode_result_raw(std::string_view invocation_id, std::string_view function_id,
                              std::string_view result_json,
                              const std::optional<std::string>& traceparent,
                              const std::optional<std::string>& baggage);
std::string encode_register_trigger(const RegisterTrigger& t);
std::string encode_unregister_trigger(std::string_view id, std::string_view trigger_type);
std::string encode_error_frame(std::string_view code, std::string_view message);

boost::json::object error_to_json(const ErrorBody& e);

// Client-side (SDK) encoders for worker -> engine frames.
std::string encode(const Message& m);

}  // namespace iii::protocol
