// One WebSocket connection with one write in flight (Beast chat-multi style; FrameSocket queues
// the writes and batches them), reused by the worker listener and the stream server
// (src/workers/stream). What the frames mean is up to the handler.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "engine/connection.h"
#include "net/http_server.h"

namespace iii::net {

struct SessionOptions {
  std::string name;  // owner for log lines, e.g. "iii-worker-manager"
  size_t max_message_bytes = 64 * 1024 * 1024;
  std::chrono::milliseconds idle_timeout{60000};  // 0 = no liveness check
  size_t max_outbound_bytes = 256 * 1024 * 1024;
  uint16_t overflow_close_code = 1008;  // sent to a peer that stopped reading
};

class SessionHandler {
 public:
  virtual ~SessionHandler() = default;
  // The upgrade completed. `conn` can be used (send/close) until on_close.
  virtual uint64_t on_open(std::shared_ptr<engine::Connection> conn, const std::string& ip) = 0;
  virtual void on_frame(uint64_t id, std::string_view frame, bool binary) = 0;
  virtual void on_close(uint64_t id) = 0;
  // Describes a connection in log lines (e.g. a worker id).
  virtual std::string describe(uint64_t id) { return std::to_string(id); }
};

// Answers the upgrade `req` on `socket` (from IncomingRequest::release_socket) and runs the
// session. A non-empty `subprotocol` is selected in the answer (Sec-WebSocket-Protocol).
void run_ws_session(boost::asio::ip::tcp::socket&& socket, HttpRequest&& req, std::string ip,
                    std::shared_ptr<const SessionOptions> opts,
                    std::shared_ptr<SessionHandler> handler, std::string subprotocol = {});

}  // namespace iii::net
