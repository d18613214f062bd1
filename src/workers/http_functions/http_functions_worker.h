#pragma once
#include <boost/json/value.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/builtin_worker.h"

namespace iii::workers {

// `iii-http-functions`: functions a worker registers with an `invocation` block are served by
// an HTTP(S) request to their URL instead of a WebSocket invocation.
std::unique_ptr<engine::BuiltinWorker> make_http_functions_worker(const config::WorkerEntry& entry,
                                                                  engine::Runtime& rt);

namespace http_functions {
// "sha256=" + hex(HMAC-SHA256(secret, "<timestamp>:" + base64(body))), the x-iii-Signature value.
std::string signature(std::string_view secret, std::string_view timestamp, std::string_view body);
}  // namespace http_functions

}  // namespace iii::workers
