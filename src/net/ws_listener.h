// WebSocket listener for worker connections (`/`), telemetry (`/otel`) and data channels
// (`/ws/channels/`). Callers see no Beast: the plumbing is in http_server, ws_session and
// channel_relay.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace iii::engine {
class Engine;
struct ListenerPolicy;
}  // namespace iii::engine

namespace iii::net {

struct ListenerOptions {
  std::string name = "iii-worker-manager";  // instance name, used in logs and ConnectionInfo
  std::string host = "0.0.0.0";
  uint16_t port = 49134;
  size_t max_message_bytes = 64 * 1024 * 1024;
  // Close a connection that sends nothing (not even a Pong to our Ping) for this long; 0 = off.
  std::chrono::milliseconds idle_timeout{60000};
  // Close a connection whose unsent outbound data exceeds this (a peer that stopped reading).
  size_t max_outbound_bytes = 256 * 1024 * 1024;
  // RBAC, middleware and limits for the connections on `/` (null: none).
  std::shared_ptr<const engine::ListenerPolicy> policy;
  // Upgrades whose Origin header is not one of these are refused with 403 (nullopt: any).
  std::optional<std::vector<std::string>> allowed_origins;
};

class Listener {
 public:
  virtual ~Listener() = default;
  virtual uint16_t port() const = 0;
  virtual void stop() = 0;
};

// Binds and starts accepting. Throws std::system_error when the address cannot be bound.
std::unique_ptr<Listener> start_ws_listener(boost::asio::io_context& io, engine::Engine& engine,
                                            ListenerOptions options);

}  // namespace iii::net
