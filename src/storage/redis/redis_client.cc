#include "storage/redis/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

namespace iii::storage::redis {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// ---- URL ----

std::string RedisUrl::display() const {
  std::string out = tls ? "rediss://" : "redis://";
  if (!username.empty() || !password.empty()) {
    out += username;
    if (!password.empty()) out += ":***";
    out += "@";
  }
  out += host + ":" + std::to_string(port);
  if (db != 0) out += "/" + std::to_string(db);
  return out;
}

RedisUrl RedisUrl::parse(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("invalid redis_url '" + std::string(text) + "': " + why);
  };
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) throw bad(parsed.error().message());
  const auto& u = *parsed;
  RedisUrl out;
  if (u.scheme() == "redis")
    out.tls = false;
  else if (u.scheme() == "rediss")
    out.tls = true;
  else
    throw bad("the scheme must be redis:// or rediss://");
  if (!u.has_authority() || u.host().empty()) throw bad("missing host");
  out.host = u.host_address();
  if (u.host_type() == boost::urls::host_type::ipv6) {
    // host_address() of an IPv6 literal has no brackets already; keep it as is.
  }
  if (u.has_port()) {
    if (u.port_number() == 0) throw bad("bad port '" + std::string(u.port()) + "'");
    out.port = u.port_number();
  }
  if (u.has_userinfo()) {
    out.username = u.user();
    out.password = u.password();
  }
  std::string path = u.path();
  if (!path.empty() && path != "/") {
    std::string db = path.substr(path[0] == '/' ? 1 : 0);
    if (db.empty() || db.size() > 5 || db.find_first_not_of("0123456789") != std::string::npos)
      throw bad("the path must be a database number (e.g. /0)");
    out.db = std::stoi(db);
  }
  for (auto p : u.params()) {
    if (p.key == "db") {
      const std::string db = p.value;
      if (db.empty() || db.size() > 5 || db.find_first_not_of("0123456789") != std::string::npos)
        throw bad("db must be a number");
      out.db = std::stoi(db);
    } else if (p.key == "password") {
      out.password = p.value;
    } else if (p.key == "username" || p.key == "user") {
      out.username = p.value;
    } else {
      throw bad("unknown parameter '" + std::string(p.key) + "' (known: db, password, username)");
    }
  }
  if (u.has_fragment()) {
    if (u.fragment() != "insecure") throw bad("the only fragment understood is #insecure");
    out.tls_insecure = true;
  }
  return out;
}

// ---- Script ----

Script::Script(std::string text) : text_(std::move(text)) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text_.data()), text_.size(), digest);
  static const char* hex = "0123456789abcdef";
  sha1_.reserve(2 * SHA_DIGEST_LENGTH);
  for (unsigned char c : digest) {
    sha1_ += hex[c >> 4];
    sha1_ += hex[c & 15];
  }
}

// ---- Connection ----

namespace {

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::kNil;
  }
  return out;
}

void append_command(std::string& out, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const int n =
      redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
  if (n < 0 || !cmd) throw std::bad_alloc();
  out.append(cmd, static_cast<size_t>(n));
  redisFreeCommand(cmd);
}

}  // namespace

struct RedisClient::Impl : std::enable_shared_from_this<RedisClient::Impl> {
  enum class State { kIdle, kConnecting, kReady, kBackoff, kStopped };

  Impl(asio::io_context& io, ClientOptions o)
      : io(io),
        opts(std::move(o)),
        url(RedisUrl::parse(opts.url)),
        resolver(io),
        timer(io),
        watchdog(io),
        ssl_ctx(asio::ssl::context::tls_client) {
    if (url.tls) {
      ssl_ctx.set_default_verify_paths();
      ssl_ctx.set_verify_mode(url.tls_insecure ? asio::ssl::verify_none : asio::ssl::verify_peer);
    }
    backoff = opts.reconnect_min;
  }

  ~Impl() {
    if (reader) redisReaderFree(reader);
  }

  asio::io_context& io;
  ClientOptions opts;
  RedisUrl url;
  tcp::resolver resolver;
  asio::steady_timer timer;     // connect timeout, then reconnect backoff
  asio::steady_timer watchdog;  // command timeout
  asio::ssl::context ssl_ctx;
  std::optional<tcp::socket> plain;
  std::optional<asio::ssl::stream<tcp::socket>> secure;
  redisReader* reader = nullptr;
  uint64_t generation = 0;  // bumped at each (re)connect: stale handlers see a newer one
  State state = State::kIdle;
  bool first_attempt = true;  // calls made before the first attempt ends wait for it
  bool ever_ready = false;
  bool outage_warned = false;
  std::string last_error = "not connected yet";
  std::chrono::milliseconds backoff;

  struct Pending {
    ReplyCallback cb;  // empty for internal commands whose reply is ignored
    std::chrono::steady_clock::time_point sent;
  };
  std::deque<Pending> pending;  // sent, awaiting replies, in order
  struct Waiting {
    std::vector<std::string> args;
    ReplyCallback cb;
    std::optional<Script> script;  // a copy: the caller's may be gone by then
    std::vector<std::string> keys;
  };
  std::deque<Waiting> waiting;  // issued before the first connection was ready
  std::set<std::string> loaded_scripts;
  std::string out;      // commands formatted, not yet written
  std::string writing;  // the buffer of the write in flight
  bool write_in_flight = false;
  std::vector<char> rbuf = std::vector<char>(64 * 1024);

  std::map<std::string, MessageHandler> channels;
  std::vector<std::function<void()>> ready_handlers;

  bool is_subscriber() const { return opts.mode == ClientOptions::Mode::kSubscriber; }

  std::string unavailable() const {
    return "Redis is unavailable at " + url.display() + ": " + last_error;
  }

  void post_error(ReplyCallback cb, std::string message) {
    if (!cb) return;
    // Dropped if the client is stopped before it runs (its owner may be gone by then).
    asio::post(io,
               [self = shared_from_this(), cb = std::move(cb), m = std::move(message)]() mutable {
                 if (self->state != State::kStopped) cb(Reply::error(std::move(m)));
               });
  }

  // ---- connecting ----

  void start() {
    if (state != State::kIdle) return;
    connect();
  }

  void connect() {
    state = State::kConnecting;
    const uint64_t gen = ++generation;
    auto self = shared_from_this();
    timer.expires_after(opts.connect_timeout);
    timer.async_wait([this, self, gen](const error_code& ec) {
      if (ec || gen != generation || state != State::kConnecting) return;
      fail(gen, "Redis connection timed out after " +
                    std::to_string(opts.connect_timeout.count() / 1000) +
                    "s. Please ensure Redis is running at: " + url.display());
    });
    resolver.async_resolve(
        url.host, std::to_string(url.port),
        [this, self, gen](const error_code& ec, tcp::resolver::results_type results) {
          if (gen != generation || state != State::kConnecting) return;
          if (ec) return fail(gen, "cannot resolve " + url.host + ": " + ec.message());
          plain.reset();
          secure.reset();
          tcp::socket* sock;
          if (url.tls) {
            secure.emplace(io, ssl_ctx);
            sock = &secure->next_layer();
            if (!url.tls_insecure) {
              SSL_set_tlsext_host_name(secure->native_handle(), url.host.c_str());
              secure->set_verify_callback(asio::ssl::host_name_verification(url.host));
            }
          } else {
            plain.emplace(io);
            sock = &plain.value();
          }
          asio::async_connect(
              *sock, results, [this, self, gen, sock](const error_code& ec, const tcp::endpoint&) {
                if (gen != generation || state != State::kConnecting) return;
                if (ec) return fail(gen, ec.message());
                error_code ignored;
                sock->set_option(tcp::no_delay(true), ignored);
                sock->set_option(asio::socket_base::keep_alive(true), ignored);
                if (!url.tls) return connected(gen);
                secure->async_handshake(
                    asio::ssl::stream_base::client, [this, self, gen](const error_code& ec) {
                      if (gen != generation || state != State::kConnecting) return;
                      if (ec) return fail(gen, "TLS handshake failed: " + ec.message());
                      connected(gen);
                    });
              });
        });
  }

  // The socket is open: authenticate, select the database, then become ready.
  void connected(uint64_t gen) {
    if (reader) redisReaderFree(reader);
    reader = redisReaderCreate();
    loaded_scripts.clear();
    read_loop(gen);
    auto self = shared_from_this();
    auto check = [this, self, gen](const char* what) {
      return [this, self, gen, what](Reply r) {
        if (gen != generation) return;
        if (r.is_error()) fail(gen, std::string(what) + " failed: " + r.str);
      };
    };
    if (!url.password.empty()) {
      if (url.username.empty())
        send_internal({"AUTH", url.password}, check("AUTH"));
      else
        send_internal({"AUTH", url.username, url.password}, check("AUTH"));
    }
    if (url.db != 0) send_internal({"SELECT", std::to_string(url.db)}, check("SELECT"));
    // PING last: its reply means every handshake command above succeeded.
    send_internal({"PING"}, [this, self, gen](Reply r) {
      if (gen != generation || state != State::kConnecting) return;
      if (r.is_error()) return fail(gen, "PING failed: " + r.str);
      became_ready(gen);
    });
  }

  void became_ready(uint64_t gen) {
    timer.cancel();
    state = State::kReady;
    backoff = opts.reconnect_min;
    if (ever_ready)
      spdlog::info("{}: Redis connection to {} restored", opts.name, url.display());
    else
      spdlog::debug("{}: connected to Redis at {}", opts.name, url.display());
    ever_ready = true;
    first_attempt = false;
    outage_warned = false;
    if (is_subscriber() && !channels.empty()) {
      std::vector<std::string> args{"SUBSCRIBE"};
      for (const auto& [ch, h] : channels) args.push_back(ch);
      send_raw(args);
    }
    auto w = std::move(waiting);
    waiting.clear();
    for (auto& c : w) {
      if (c.script)
        eval(*c.script, std::move(c.keys), std::move(c.args), std::move(c.cb));
      else
        command(std::move(c.args), std::move(c.cb));
    }
    // A handler may stop the client: copy first.
    auto handlers = ready_handlers;
    for (auto& h : handlers) {
      if (gen != generation || state != State::kReady) break;
      h();
    }
  }

  // The connection failed or was lost: fail what was waiting, then retry after the backoff.
  void fail(uint64_t gen, const std::string& why) {
    if (gen != generation || state == State::kStopped || state == State::kBackoff) return;
    const bool was_ready = state == State::kReady;
    last_error = why;
    if (was_ready)
      spdlog::warn("{}: Redis connection to {} lost: {}; reconnecting", opts.name, url.display(),
                   why);
    else if (first_attempt || !outage_warned)
      spdlog::warn("{}: cannot connect to Redis at {}: {}; retrying", opts.name, url.display(),
                   why);
    else
      spdlog::debug("{}: cannot connect to Redis at {}: {}", opts.name, url.display(), why);
    first_attempt = false;
    outage_warned = true;  // one warning per outage; the retries that follow log at debug
    close_socket();
    ++generation;  // every handler of the old connection is now stale
    const std::string msg =
        was_ready ? "Redis connection to " + url.display() + " lost: " + why : unavailable();
    auto p = std::move(pending);
    pending.clear();
    auto w = std::move(waiting);
    waiting.clear();
    for (auto& e : p) post_error(std::move(e.cb), msg);
    for (auto& e : w) post_error(std::move(e.cb), msg);
    out.clear();
    state = State::kBackoff;
    watchdog.cancel();
    auto self = shared_from_this();
    timer.expires_after(backoff);
    timer.async_wait([this, self](const error_code& ec) {
      if (ec || state != State::kBackoff) return;
      connect();
    });
    backoff = std::min(backoff * 2, opts.reconnect_max);
  }

  void close_socket() {
    error_code ignored;
    resolver.cancel();
    if (plain) {
      plain->shutdown(tcp::socket::shutdown_both, ignored);
      plain->close(ignored);
    }
    if (secure) secure->next_layer().close(ignored);
    write_in_flight = false;
    writing.clear();
  }

  void stop() {
    if (state == State::kStopped) return;
    state = State::kStopped;
    ++generation;
    timer.cancel();
    watchdog.cancel();
    close_socket();
    pending.clear();
    waiting.clear();
    channels.clear();
    ready_handlers.clear();
  }

  // ---- reading ----

  template <typename Fn>
  void async_read_some(Fn&& fn) {
    if (secure)
      secure->async_read_some(asio::buffer(rbuf), std::forward<Fn>(fn));
    else
      plain->async_read_some(asio::buffer(rbuf), std::forward<Fn>(fn));
  }

  void read_loop(uint64_t gen) {
    auto self = shared_from_this();
    async_read_some([this, self, gen](const error_code& ec, size_t n) {
      if (gen != generation) return;
      if (ec) {
        return fail(gen, ec == asio::error::eof ? std::string("connection closed by the server")
                                                : ec.message());
      }
      if (redisReaderFeed(reader, rbuf.data(), n) != REDIS_OK)
        return fail(gen, std::string("protocol error: ") + reader->errstr);
      for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(reader, &raw) != REDIS_OK)
          return fail(gen, std::string("protocol error: ") + reader->errstr);
        if (!raw) break;
        Reply r = convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        dispatch(std::move(r));
        if (gen != generation) return;  // a callback failed or stopped the connection
      }
      read_loop(gen);
    });
  }

  void dispatch(Reply r) {
    if (is_subscriber() && r.type == Reply::Type::kArray && !r.elements.empty() &&
        r.elements[0].is_string()) {
      const std::string& kind = r.elements[0].str;
      if (kind == "message" && r.elements.size() == 3) {
        auto it = channels.find(r.elements[1].str);
        if (it != channels.end()) {
          MessageHandler h = it->second;  // the handler may unsubscribe
          h(r.elements[1].str, r.elements[2].str);
        }
        return;
      }
      if (kind == "subscribe" || kind == "unsubscribe") return;  // confirmations
    }
    if (pending.empty()) {
      spdlog::warn("{}: unexpected reply from Redis dropped", opts.name);
      return;
    }
    Pending p = std::move(pending.front());
    pending.pop_front();
    if (p.cb) p.cb(std::move(r));
  }

  // ---- writing ----

  void send_raw(const std::vector<std::string>& args) {
    append_command(out, args);
    flush();
  }

  void send_internal(const std::vector<std::string>& args, ReplyCallback cb) {
    pending.push_back({std::move(cb), std::chrono::steady_clock::now()});
    append_command(out, args);
    flush();
    arm_watchdog();
  }

  void flush() {
    if (write_in_flight || out.empty()) return;
    writing.swap(out);
    out.clear();
    write_in_flight = true;
    const uint64_t gen = generation;
    auto self = shared_from_this();
    auto on_written = [this, self, gen](const error_code& ec, size_t) {
      if (gen != generation) return;
      write_in_flight = false;
      writing.clear();
      if (ec) return fail(gen, ec.message());
      flush();
    };
    if (secure)
      asio::async_write(*secure, asio::buffer(writing), std::move(on_written));
    else
      asio::async_write(*plain, asio::buffer(writing), std::move(on_written));
  }

  void arm_watchdog() {
    if (opts.command_timeout.count() == 0 || watchdog_armed) return;
    watchdog_armed = true;
    auto self = shared_from_this();
    const uint64_t gen = generation;
    watchdog.expires_after(opts.command_timeout);
    watchdog.async_wait([this, self, gen](const error_code& ec) {
      watchdog_armed = false;
      if (ec || gen != generation) return;
      if (pending.empty()) return;
      const auto age = std::chrono::steady_clock::now() - pending.front().sent;
      if (age >= opts.command_timeout)
        return fail(gen, "no reply within " + std::to_string(opts.command_timeout.count()) + " ms");
      arm_watchdog();
    });
  }
  bool watchdog_armed = false;

  // ---- public operations ----

  // Whether a call made now must wait for the connection (true), fail (false), or go (ready).
  bool must_wait() const {
    return state == State::kIdle || (state == State::kConnecting && first_attempt);
  }

  void command(std::vector<std::string> args, ReplyCallback cb) {
    if (state == State::kReady) {
      pending.push_back({std::move(cb), std::chrono::steady_clock::now()});
      append_command(out, args);
      flush();
      arm_watchdog();
      return;
    }
    if (state == State::kStopped) return post_error(std::move(cb), "Redis client stopped");
    if (must_wait()) {
      waiting.push_back({std::move(args), std::move(cb), std::nullopt, {}});
      return;
    }
    post_error(std::move(cb), unavailable());
  }

  void eval(const Script& script, std::vector<std::string> keys, std::vector<std::string> args,
            ReplyCallback cb) {
    if (state != State::kReady) {
      if (state != State::kStopped && must_wait()) {
        waiting.push_back({std::move(args), std::move(cb), script, std::move(keys)});
        return;
      }
      return post_error(std::move(cb), state == State::kStopped
                                           ? std::string("Redis client stopped")
                                           : unavailable());
    }
    std::vector<std::string> argv;
    argv.reserve(3 + keys.size() + args.size());
    const bool loaded = loaded_scripts.count(script.sha1()) > 0;
    argv.push_back(loaded ? "EVALSHA" : "EVAL");
    argv.push_back(loaded ? script.sha1() : script.text());
    argv.push_back(std::to_string(keys.size()));
    for (auto& k : keys) argv.push_back(std::move(k));
    for (auto& a : args) argv.push_back(std::move(a));
    loaded_scripts.insert(script.sha1());
    const std::string sha = script.sha1();
    command(std::move(argv), [this, sha, cb = std::move(cb)](Reply r) {
      // Someone flushed the script cache: the next call sends the text again.
      if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0) loaded_scripts.erase(sha);
      if (cb) cb(std::move(r));
    });
  }

  void subscribe(const std::string& channel, MessageHandler h) {
    const bool fresh = channels.find(channel) == channels.end();
    channels[channel] = std::move(h);
    if (fresh && state == State::kReady) send_raw({"SUBSCRIBE", channel});
  }

  void unsubscribe(const std::string& channel) {
    if (channels.erase(channel) && state == State::kReady) send_raw({"UNSUBSCRIBE", channel});
  }
};

RedisClient::RedisClient(asio::io_context& io, ClientOptions opts)
    : impl_(std::make_shared<Impl>(io, std::move(opts))) {}

RedisClient::~RedisClient() { impl_->stop(); }

void RedisClient::start() { impl_->start(); }
void RedisClient::stop() { impl_->stop(); }
bool RedisClient::ready() const { return impl_->state == Impl::State::kReady; }
const RedisUrl& RedisClient::url() const { return impl_->url; }

void RedisClient::command(std::vector<std::string> args, ReplyCallback cb) {
  if (impl_->is_subscriber())
    return impl_->post_error(std::move(cb), "command() on a Pub/Sub connection");
  impl_->command(std::move(args), std::move(cb));
}

void RedisClient::eval(const Script& script, std::vector<std::string> keys,
                       std::vector<std::string> args, ReplyCallback cb) {
  if (impl_->is_subscriber())
    return impl_->post_error(std::move(cb), "eval() on a Pub/Sub connection");
  impl_->eval(script, std::move(keys), std::move(args), std::move(cb));
}

void RedisClient::subscribe(const std::string& channel, MessageHandler handler) {
  if (!impl_->is_subscriber()) throw std::logic_error("subscribe() on a commands connection");
  impl_->subscribe(channel, std::move(handler));
}

void RedisClient::unsubscribe(const std::string& channel) {
  if (!impl_->is_subscriber()) throw std::logic_error("unsubscribe() on a commands connection");
  impl_->unsubscribe(channel);
}

void RedisClient::on_ready(std::function<void()> fn) {
  impl_->ready_handlers.push_back(std::move(fn));
}

}  // namespace iii::storage::redis
