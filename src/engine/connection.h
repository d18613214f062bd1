// The engine's view of a transport connection. Implemented by src/net (Beast); the engine
// core never sees sockets, so it stays testable with an in-memory fake and cheap to compile.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iii::engine {

// Frames are immutable once built so one buffer can be shared by many connections.
using SharedFrame = std::shared_ptr<const std::string>;

inline SharedFrame make_frame(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

class Connection {
 public:
  virtual ~Connection() = default;
  // Queues one text frame. Never blocks; called on the engine thread.
  virtual void send(SharedFrame frame) = 0;
  // Starts a graceful close (after queued frames are written).
  virtual void close(uint16_t code, std::string_view reason) = 0;
  // Between hold() and release(), frames sent are only queued; release() writes them together
  // (one gather write instead of one per frame). Optional for a transport.
  virtual void hold() {}
  virtual void release() {}
};

struct ListenerPolicy;  // engine/rbac.h

struct ConnectionInfo {
  std::string ip_address;
  std::string listener;  // worker-manager instance name, e.g. "iii-worker-manager#1"
  // The listener's RBAC/middleware policy; null = none (everything allowed, as the original).
  std::shared_ptr<const ListenerPolicy> policy;
  // The upgrade request, for the auth function: headers as received (names lower-cased by the
  // engine) and the raw query string (after '?', not decoded).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string query;
};

}  // namespace iii::engine
