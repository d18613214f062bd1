// The iii-stream client WebSocket server (default port 3112): clients join/leave
// subscriptions to (stream, group[, item]) and receive pushed events. This layer owns the
// subscription index and fans each event out as one shared buffer; the sockets are the generic
// src/net pieces (HttpServer for the upgrade, a WsSession per client). What a join means (auth,
// stream:join triggers, the sync payload) is decided by the delegate (the stream worker).
#pragma once

#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "engine/connection.h"

namespace boost::asio {
class io_context;
}

namespace iii::workers::stream {

struct StreamSubscription {
  std::string subscription_id;
  std::string stream_name;
  std::string group_id;
  std::optional<std::string> item_id;
};

class StreamServerDelegate {
 public:
  virtual ~StreamServerDelegate() = default;
  // During the upgrade: `request` is {headers, path, query_params, addr}. `done` receives the
  // connection's context (null for none), or nullopt to refuse the upgrade (HTTP 401).
  virtual void authenticate(
      boost::json::object request,
      std::function<void(std::optional<boost::json::value> context)> done) = 0;
  // A join. `done(subscribe, reply)`: whether to store the subscription, and the frame to send
  // (sync or unauthorized; may be null to send nothing).
  virtual void join(const StreamSubscription& sub, const boost::json::value& context,
                    std::function<void(bool subscribe, engine::SharedFrame reply)> done) = 0;
  virtual void leave(const StreamSubscription& sub, const boost::json::value& context) = 0;
};

struct StreamServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 3112;
  size_t max_message_bytes = 1024 * 1024;
  std::chrono::milliseconds idle_timeout{60000};
  // A subscriber whose unsent events exceed this is disconnected (it can rejoin and resync)
  // instead of slowing everyone down or growing engine memory.
  size_t max_outbound_bytes = 8 * 1024 * 1024;
};

class StreamServer {
 public:
  virtual ~StreamServer() = default;
  virtual uint16_t port() const = 0;
  virtual void stop() = 0;
  // Sends `frame` once per matching subscription: same stream and group, and the
  // subscription is group-wide or its item equals `item_id`.
  virtual void publish(const std::string& stream_name, const std::string& group_id,
                       const std::optional<std::string>& item_id, engine::SharedFrame frame) = 0;
  virtual size_t subscription_count() const = 0;
};

// Binds and starts accepting; throws std::system_error when the address cannot be bound.
std::unique_ptr<StreamServer> start_stream_server(boost::asio::io_context& io,
                                                  StreamServerOptions opts,
                                                  StreamServerDelegate& delegate);

}  // namespace iii::workers::stream
