// The iii-http worker's `config:` block (modules.md §7.1), validated with file:line errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace iii::config {
class WorkerConfigReader;
}

namespace iii::workers::http {

struct GlobalMiddleware {
  std::string function_id;
  std::string phase = "preHandler";  // the only phase the original runs
  int64_t priority = 0;              // lower runs first; ties keep config order
};

struct CorsConfig {
  bool configured = false;                   // absent: fully permissive, as in the original
  std::vector<std::string> allowed_origins;  // empty or "*": any
  std::vector<std::string> allowed_methods;  // empty or "*": any
  bool any_origin() const;
  bool any_method() const;
};

struct HttpConfig {
  std::string host = "0.0.0.0";
  uint16_t port = 3111;
  std::chrono::milliseconds default_timeout{30000};  // whole request, and each middleware
  size_t concurrency_request_limit = 1024;           // excess requests wait their turn
  size_t body_limit_bytes = 64 * 1024 * 1024;        // ours: 413 beyond
  std::chrono::milliseconds header_timeout{10000};   // ours: slow clients get 408
  CorsConfig cors;
  std::vector<GlobalMiddleware> middleware;  // sorted by priority (stable)
};

// Reads and validates; throws config::ConfigError naming the file, line and key.
HttpConfig read_http_config(config::WorkerConfigReader& r);

}  // namespace iii::workers::http
