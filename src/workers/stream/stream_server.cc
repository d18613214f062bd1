#include "workers/stream/stream_server.h"

#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>
#include <boost/json/parse.hpp>
#include <map>
#include <unordered_map>

#include "common/logging.h"
#include "net/http_server.h"
#include "net/ws_session.h"
#include "protocol/codec.h"

namespace iii::workers::stream {

namespace asio = boost::asio;
using net::HttpServer;
using net::IncomingRequest;
using net::run_ws_session;
using net::SessionHandler;
using net::SessionOptions;
namespace json = boost::json;

namespace {

// {headers, path, query_params, addr} as the original passes to auth_function: header names
// lower-case, query values not percent-decoded, repeated keys accumulate.
json::object describe_request(IncomingRequest& r) {
  json::object headers;
  for (const auto& f : r.request()) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers[name] = std::string(f.value());
  }
  json::object query;
  std::string_view t = r.target();
  if (auto q = t.find('?'); q != std::string_view::npos) {
    std::string_view rest = t.substr(q + 1);
    while (!rest.empty()) {
      std::string_view part = rest.substr(0, rest.find('&'));
      rest = part.size() < rest.size() ? rest.substr(part.size() + 1) : std::string_view();
      const auto eq = part.find('=');
      std::string_view key = part.substr(0, eq);
      std::string_view value = eq == std::string_view::npos ? "" : part.substr(eq + 1);
      if (key.empty()) continue;
      auto& slot = query[key];
      if (!slot.is_array()) slot = json::array();
      slot.get_array().push_back(json::value(value));
    }
  }
  return json::object{{"headers", std::move(headers)},
                      {"path", std::string(r.path())},
                      {"query_params", std::move(query)},
                      {"addr", r.ip() + ":" + std::to_string(r.remote_port())}};
}

// Browsers cannot set headers on a WebSocket upgrade, only subprotocols: a client that offers
// `Sec-WebSocket-Protocol: Authorization, <token>` gets "Authorization" selected in the answer
// (a browser drops a connection whose answer selects none of its offers), and its token is
// handed to the auth function as the `authorization` header (unless the request had one).
std::optional<std::string> subprotocol_token(const net::HttpRequest& req) {
  auto it = req.find(boost::beast::http::field::sec_websocket_protocol);
  if (it == req.end()) return std::nullopt;
  std::string_view v = it->value();
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  const auto comma = v.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view first = trim(v.substr(0, comma));
  std::string_view token = trim(v.substr(comma + 1));
  if (first.size() != 13 || !boost::beast::iequals(first, "Authorization") || token.empty() ||
      token.find(',') != std::string_view::npos)
    return std::nullopt;
  return std::string(token);
}

std::optional<StreamSubscription> parse_subscription(const json::object& msg, std::string& error) {
  const json::value* data = msg.if_contains("data");
  if (!data || !data->is_object()) {
    error = "missing object field 'data'";
    return std::nullopt;
  }
  const auto& d = data->get_object();
  StreamSubscription s;
  for (auto [field, out] :
       {std::pair{"subscriptionId", &s.subscription_id}, std::pair{"streamName", &s.stream_name},
        std::pair{"groupId", &s.group_id}}) {
    const json::value* v = d.if_contains(field);
    if (!v || !v->is_string()) {
      error = std::string("data.") + field + " must be a string";
      return std::nullopt;
    }
    *out = std::string(v->get_string());
  }
  if (const json::value* id = d.if_contains("id"); id && !id->is_null()) {
    if (!id->is_string()) {
      error = "data.id must be a string or null";
      return std::nullopt;
    }
    s.item_id = std::string(id->get_string());
  }
  return s;
}

std::string group_key(std::string_view stream, std::string_view group) {
  std::string k;
  k.reserve(stream.size() + group.size() + 1);
  k.append(stream).push_back('\0');
  k.append(group);
  return k;
}

// Subscriptions and connections of the stream server. Sessions reach it through weak
// pointers so that no reference cycle outlives the server.
class Core : public std::enable_shared_from_this<Core> {
 public:
  explicit Core(StreamServerDelegate& d) : delegate_(d) {}

  uint64_t open(std::shared_ptr<engine::Connection> conn, json::value context) {
    const uint64_t id = ++next_id_;
    clients_.emplace(id,
                     Client{std::move(conn), std::move(context), {}, logging::WarningLimiter()});
    return id;
  }

  void on_frame(uint64_t id, std::string_view frame) {
    if (frame.find_first_not_of(" \t\r\n") == std::string_view::npos) return;
    boost::system::error_code ec;
    json::value v = json::parse(frame, ec, {}, protocol::json_parse_options());
    const json::object* msg = ec ? nullptr : v.if_object();
    const json::value* type = msg ? msg->if_contains("type") : nullptr;
    if (!type || !type->is_string()) {
      warn_client(id,
                  "iii-stream: client {} sent an invalid message (expected {{type, data}} JSON); "
                  "ignored",
                  id);
      return;
    }
    std::string error;
    auto sub = parse_subscription(*msg, error);
    if (!sub) {
      warn_client(id, "iii-stream: client {} sent an invalid {}: {}; ignored", id,
                  std::string(type->get_string()), error);
      return;
    }
    if (type->get_string() == "join")
      join(id, std::move(*sub));
    else if (type->get_string() == "leave")
      leave(id, sub->subscription_id);
    else
      warn_client(id, "iii-stream: client {} sent unknown message type '{}'; ignored", id,
                  std::string(type->get_string()));
  }

  void join(uint64_t id, StreamSubscription sub) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    std::weak_ptr<Core> weak = shared_from_this();
    delegate_.join(sub, it->second.context,
                   [weak, id, sub](bool subscribe, engine::SharedFrame reply) {
                     auto self = weak.lock();
                     if (!self) return;
                     auto c = self->clients_.find(id);
                     if (c == self->clients_.end()) return;  // left while the join was decided
                     if (subscribe) self->subscribe(id, c->second, sub);
                     if (reply) c->second.conn->send(std::move(reply));
                   });
  }

  void leave(uint64_t id, const std::string& subscription_id) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    auto s = it->second.subs.find(subscription_id);
    if (s == it->second.subs.end()) return;
    delegate_.leave(s->second, it->second.context);
    unindex(id, s->second);
    it->second.subs.erase(s);
  }

  void close(uint64_t id) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    Client client = std::move(it->second);
    clients_.erase(it);
    for (auto& [sid, sub] : client.subs) {
      unindex(id, sub);
      delegate_.leave(sub, client.context);
    }
  }

  void publish(const std::string& stream, const std::string& group,
               const std::optional<std::string>& item, const engine::SharedFrame& frame) {
    auto it = index_.find(group_key(stream, group));
    if (it == index_.end()) return;
    // A snapshot of the targets (reference counts only): a send that closes a slow client may
    // edit the index, and a target removed meanwhile is marked inactive.
    const auto targets = it->second;
    for (const auto& t : targets) {
      if (!t->active || (t->item_id && (!item || *t->item_id != *item))) continue;
      t->conn->send(frame);
    }
  }

  size_t subscription_count() const {
    size_t n = 0;
    for (const auto& [k, v] : index_) n += v.size();
    return n;
  }

 private:
  struct Client {
    std::shared_ptr<engine::Connection> conn;
    json::value context;
    std::map<std::string, StreamSubscription> subs;
    logging::WarningLimiter invalid_messages;  // a client sending garbage cannot flood the log
  };

  // Logs a bad message from client `id`, rate-limited per client with a count.
  template <typename... Args>
  void warn_client(uint64_t id, fmt::format_string<Args...> f, Args&&... args) {
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    auto& limiter = it->second.invalid_messages;
    if (!limiter.has_summary())
      limiter.set_summary("iii-stream: client " + std::to_string(id) + ": invalid messages");
    const auto suppressed = limiter.admit();
    if (!suppressed) return;
    const std::string text = fmt::format(f, std::forward<Args>(args)...);
    if (*suppressed == 0)
      spdlog::warn("{}", text);
    else
      spdlog::warn("{} ({} more suppressed before this one)", text, *suppressed);
  }
  // One subscription in the fan-out index: what publish needs, without looking anything up.
  struct Target {
    uint64_t client;
    std::string subscription_id;
    std::shared_ptr<engine::Connection> conn;
    std::optional<std::string> item_id;
    bool active = true;
  };

  void subscribe(uint64_t id, Client& c, const StreamSubscription& sub) {
    if (auto old = c.subs.find(sub.subscription_id); old != c.subs.end()) {
      unindex(id, old->second);
      c.subs.erase(old);
    }
    c.subs[sub.subscription_id] = sub;
    index_[group_key(sub.stream_name, sub.group_id)].push_back(
        std::make_shared<Target>(Target{id, sub.subscription_id, c.conn, sub.item_id}));
  }

  void unindex(uint64_t id, const StreamSubscription& sub) {
    auto it = index_.find(group_key(sub.stream_name, sub.group_id));
    if (it == index_.end()) return;
    std::erase_if(it->second, [&](const std::shared_ptr<Target>& t) {
      if (t->client != id || t->subscription_id != sub.subscription_id) return false;
      t->active = false;
      return true;
    });
    if (it->second.empty()) index_.erase(it);
  }

  StreamServerDelegate& delegate_;
  std::unordered_map<uint64_t, Client> clients_;
  std::unordered_map<std::string, std::vector<std::shared_ptr<Target>>> index_;
  uint64_t next_id_ = 0;
};

class ClientHandler : public SessionHandler {
 public:
  ClientHandler(std::weak_ptr<Core> core, json::value context,
                std::optional<StreamSubscription> auto_join)
      : core_(std::move(core)), context_(std::move(context)), auto_join_(std::move(auto_join)) {}

  uint64_t on_open(std::shared_ptr<engine::Connection> conn, const std::string&) override {
    auto core = core_.lock();
    if (!core) return 0;
    const uint64_t id = core->open(std::move(conn), std::move(context_));
    if (auto_join_) core->join(id, std::move(*auto_join_));
    return id;
  }
  void on_frame(uint64_t id, std::string_view frame, bool) override {
    if (auto core = core_.lock()) core->on_frame(id, frame);
  }
  void on_close(uint64_t id) override {
    if (auto core = core_.lock()) core->close(id);
  }
  std::string describe(uint64_t id) override { return "stream client " + std::to_string(id); }

 private:
  std::weak_ptr<Core> core_;
  json::value context_;
  std::optional<StreamSubscription> auto_join_;
};

// Only upgrades are served: a request body is never needed.
net::HttpServerOptions http_options(const StreamServerOptions& o) {
  net::HttpServerOptions h;
  h.name = "iii-stream";
  h.host = o.host;
  h.port = o.port;
  h.max_body_bytes = 64 * 1024;
  return h;
}

class StreamServerImpl : public StreamServer {
 public:
  StreamServerImpl(asio::io_context& io, StreamServerOptions opts, StreamServerDelegate& delegate)
      : delegate_(delegate),
        core_(std::make_shared<Core>(delegate)),
        session_opts_(std::make_shared<const SessionOptions>(
            SessionOptions{"iii-stream", opts.max_message_bytes, opts.idle_timeout,
                           opts.max_outbound_bytes, 1013})),
        server_(io, http_options(opts),
                [this](std::shared_ptr<IncomingRequest> r) { route(std::move(r)); }) {}

  uint16_t port() const override { return server_.port(); }
  void stop() override { server_.stop(); }
  void publish(const std::string& stream, const std::string& group,
               const std::optional<std::string>& item, engine::SharedFrame frame) override {
    core_->publish(stream, group, item, frame);
  }
  size_t subscription_count() const override { return core_->subscription_count(); }

 private:
  void route(std::shared_ptr<IncomingRequest> r) {
    std::optional<StreamSubscription> auto_join;
    const std::string_view path = r->path();
    if (path != "/") {
      // The documented form /stream/{stream_name}/{group_id}/ joins that group directly.
      constexpr std::string_view kPrefix = "/stream/";
      std::string_view rest = path.substr(0, kPrefix.size()) == kPrefix
                                  ? path.substr(kPrefix.size())
                                  : std::string_view();
      if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
      const auto slash = rest.find('/');
      if (rest.empty() || slash == std::string_view::npos || slash == 0 ||
          slash + 1 == rest.size() || rest.find('/', slash + 1) != std::string_view::npos)
        return r->respond(net::HttpStatus::not_found, "Not Found\n");
      auto_join = StreamSubscription{std::string(rest), std::string(rest.substr(0, slash)),
                                     std::string(rest.substr(slash + 1)), std::nullopt};
    }
    if (!r->is_websocket_upgrade())
      return r->respond(net::HttpStatus::upgrade_required,
                        "This endpoint expects a WebSocket upgrade\n");
    std::weak_ptr<Core> core = core_;
    auto opts = session_opts_;
    json::object request = describe_request(*r);
    std::string subprotocol;
    if (auto token = subprotocol_token(r->request())) {
      subprotocol = "Authorization";
      auto& headers = request["headers"].get_object();
      if (!headers.contains("authorization")) headers["authorization"] = *token;
    }
    delegate_.authenticate(
        std::move(request), [r, core, opts, auto_join, subprotocol = std::move(subprotocol)](
                                std::optional<json::value> context) {
          if (!context) return r->respond(net::HttpStatus::unauthorized, "Unauthorized\n");
          run_ws_session(r->release_socket(), std::move(r->request()), r->ip(), opts,
                         std::make_shared<ClientHandler>(core, std::move(*context), auto_join),
                         subprotocol);
        });
  }

  StreamServerDelegate& delegate_;
  std::shared_ptr<Core> core_;
  std::shared_ptr<const SessionOptions> session_opts_;
  HttpServer server_;
};

}  // namespace

std::unique_ptr<StreamServer> start_stream_server(asio::io_context& io, StreamServerOptions opts,
                                                  StreamServerDelegate& delegate) {
  return std::make_unique<StreamServerImpl>(io, std::move(opts), delegate);
}

}  // namespace iii::workers::stream
