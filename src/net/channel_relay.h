// WebSocket relays for data channels (`/ws/channels/{id}?key=..&dir=read|write`). Internal to
// src/net: included only by the listener and its implementation.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "engine/channels.h"
#include "net/http_server.h"
#include "net/ws_listener.h"

namespace iii::engine {
class Engine;
}

namespace iii::net {

// Upgrades `socket` and relays frames: a writer pushes into the channel (pausing its reads
// while the channel is full), a reader drains it and is closed once the writer is done.
void start_channel_relay(boost::asio::ip::tcp::socket&& socket, HttpRequest&& req,
                         std::shared_ptr<engine::Channel> channel, bool writer,
                         engine::Engine& engine, std::shared_ptr<const ListenerOptions> opts);

}  // namespace iii::net
