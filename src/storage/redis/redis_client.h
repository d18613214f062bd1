// An asynchronous Redis client on an Asio io_context: hiredis parses replies (redisReader) and
// formats commands (redisFormatCommandArgv); the socket is Asio (plain TCP, or TLS for
// `rediss://`). Every callback runs on the io_context's thread. See docs/redis-seam.md.
//
// One RedisClient is one connection, in one of two modes:
//   kCommands:   command()/eval(), pipelined (replies are matched in order);
//   kSubscriber: subscribe()/unsubscribe() (Redis Pub/Sub); the channels are subscribed again
//                after every reconnect.
// A lost connection is re-established with exponential backoff. While it is down, calls fail
// at once (their callback gets an error Reply, posted) instead of waiting; calls made before
// the first connection attempt has finished wait for it (bounded by the connect timeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace iii::storage::redis {

// `redis://[[user]:password@]host[:port][/db]`, `rediss://...` for TLS (`#insecure` skips the
// server certificate check, as the original's redis crate does). Default port 6379, db 0.
struct RedisUrl {
  bool tls = false;
  bool tls_insecure = false;
  std::string host = "localhost";
  uint16_t port = 6379;
  std::string username;  // AUTH user password when both are set
  std::string password;  // AUTH password when only this is set
  int db = 0;
  // The URL with the password masked, for log lines and error messages.
  std::string display() const;
  // Throws std::invalid_argument with a message naming what is wrong.
  static RedisUrl parse(std::string_view url);
};

struct Reply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError (the message)
  int64_t integer = 0;
  std::vector<Reply> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
  bool is_string() const { return type == Type::kString; }
  static Reply error(std::string message) {
    Reply r;
    r.type = Type::kError;
    r.str = std::move(message);
    return r;
  }
};

using ReplyCallback = std::function<void(Reply)>;
// A Pub/Sub message: channel and payload (views valid during the call).
using MessageHandler = std::function<void(std::string_view channel, std::string_view payload)>;

// A Lua script run with EVALSHA once this connection has sent it with EVAL (so commands stay in
// order: no NOSCRIPT retry can overtake a later command).
class Script {
 public:
  explicit Script(std::string text);
  const std::string& text() const { return text_; }
  const std::string& sha1() const { return sha1_; }

 private:
  std::string text_;
  std::string sha1_;
};

struct ClientOptions {
  enum class Mode { kCommands, kSubscriber };
  std::string url = "redis://localhost:6379";
  Mode mode = Mode::kCommands;
  std::string name = "redis";  // names the connection in log lines, e.g. "iii-state"
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{2000};
  // A connection whose oldest command has waited this long is closed and re-opened (a server
  // that stopped answering fails its calls instead of hanging them). 0 disables.
  std::chrono::milliseconds command_timeout{10000};
};

class RedisClient {
 public:
  // Throws std::invalid_argument for a bad URL. Nothing connects before start().
  RedisClient(boost::asio::io_context& io, ClientOptions opts);
  ~RedisClient();  // stop()s
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Starts connecting (and reconnecting, until stop()).
  void start();
  // Closes the connection. Callbacks not yet called are dropped, never called.
  void stop();
  // Connected, authenticated and with the database selected.
  bool ready() const;
  const RedisUrl& url() const;

  // kCommands only. `args` is one command, e.g. {"HGET", key, field}.
  void command(std::vector<std::string> args, ReplyCallback cb);
  // EVALSHA (EVAL the first time on each connection) of `script` with KEYS and ARGV.
  void eval(const Script& script, std::vector<std::string> keys, std::vector<std::string> args,
            ReplyCallback cb);

  // kSubscriber only. One handler per channel (a second subscribe replaces it).
  void subscribe(const std::string& channel, MessageHandler handler);
  void unsubscribe(const std::string& channel);

  // Called on the io thread each time the connection becomes ready (first time and after
  // every reconnect), e.g. to resynchronise state that may have been missed meanwhile.
  void on_ready(std::function<void()> fn);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::storage::redis
