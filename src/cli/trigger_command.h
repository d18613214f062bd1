// `iii trigger`: invoke one function on a running engine and print its result.
#pragma once

#include <string>

namespace boost::json {
class value;
}

namespace iii::cli {

struct TriggerOptions {
  std::string function_id;
  std::string payload = "{}";
  std::string address = "localhost";  // bare host, or a full ws:// URL used as-is
  int port = 49134;
  int timeout_ms = 30000;
};

// Connects with the C++ SDK, makes one synchronous call and prints the result (2-space
// indented JSON; nothing for an absent or null result). Exit codes: 0 success, 1 remote error,
// connection failure or timeout, 2 invalid arguments (e.g. unparsable --payload).
int run_trigger(const TriggerOptions& opts);

// Exposed for tests.
std::string trigger_url(const TriggerOptions& opts);
std::string pretty_json(const boost::json::value& v);

}  // namespace iii::cli
