// iii-http: each request goes through one Exchange, a small state machine on the engine thread:
// route → global middleware → channels → condition → route middleware → handler → response
// (the handler's value, or what its worker streams through the response channel). One timer
// bounds everything until the response starts; after that a streamed body (downloads, SSE)
// runs until the worker closes the channel or the client leaves.
#include "workers/http/http_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <unordered_map>

#include "config/config.h"
#include "engine/engine.h"
#include "net/http_server.h"
#include "protocol/codec.h"
#include "protocol/uuid.h"
#include "workers/http/api_message.h"
#include "workers/http/http_config.h"
#include "workers/http/route_table.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
namespace beast_http = boost::beast::http;
using engine::CallContext;
using engine::Outcome;
using http::EncodedResponse;
using http::HttpConfig;
using http::Route;
using http::RouteTable;

constexpr const char* kMethods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
// A streamed response stops taking frames from the channel while this much is unsent.
constexpr size_t kMaxQueuedResponseBytes = 1024 * 1024;
// A streamed request body is pushed into its channel in pieces of at most this size.
constexpr size_t kBodyPiece = 64 * 1024;

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool is_json_content_type(std::string_view content_type) {
  return lower(content_type).find("application/json") != std::string::npos;
}

json::object channel_ref(const engine::ChannelRefs& refs, const char* direction) {
  return json::object{
      {"channel_id", refs.channel_id}, {"access_key", refs.access_key}, {"direction", direction}};
}

class HttpWorker;

// One request from routing to the end of its response.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(HttpWorker& worker, std::shared_ptr<net::IncomingRequest> req, Route route,
           http::HeaderList path_params);
  void start();
  // The worker is going away (engine shutdown): end without touching it again.
  void detach() { worker_ = nullptr; }

 private:
  enum class Stage { kMiddleware, kCondition, kRouteMiddleware, kHandler, kStreaming, kDone };

  engine::Engine& engine();
  void run_global_middleware(size_t index);
  void open_channels();
  void start_request_body();
  void pump_request_body();
  void run_condition();
  void run_route_middleware(size_t index);
  // Runs middleware `fn`; `next` continues the chain when it says so.
  void run_middleware(const std::string& fn, std::function<void()> next);
  void run_handler();
  void on_handler_result(Outcome o);
  void on_response_data();
  void apply_control_message(std::string_view text);
  void start_streaming();
  void finish_streamed_response();
  void send(EncodedResponse r);
  void send_error(unsigned status, std::string_view message, json::object extra = {});
  void on_timeout();
  void finish();

  json::object request_without_channels() const;
  json::object middleware_input() const;

  HttpWorker* worker_;
  std::shared_ptr<net::IncomingRequest> req_;
  Route route_;
  http::HeaderList path_params_;
  http::HeaderList headers_;
  std::string request_id_;
  Stage stage_ = Stage::kMiddleware;
  json::value body_ = nullptr;  // parsed JSON body, or null
  bool stream_request_body_ = false;
  boost::asio::steady_timer timer_;

  // Channels: the worker reads the request body from `req_channel_` (we write) and writes the
  // response into `resp_channel_` (we read).
  engine::ChannelRefs req_refs_, resp_refs_;
  std::shared_ptr<engine::Channel> req_channel_, resp_channel_;
  bool body_reading_ = false;  // a read_body is in flight
  bool body_done_ = false;

  // Response state from the channel's control messages.
  unsigned status_ = 200;
  http::HeaderList resp_headers_;
  std::string text_message_;  // a text message being reassembled from fragments
  bool handler_returned_null_ = false;
  bool streaming_ = false;
  bool write_blocked_ = false;
};

class HttpWorker : public engine::BuiltinWorker, public engine::TriggerTypeHandler {
 public:
  HttpWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    cfg_ = http::read_http_config(r);
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~HttpWorker() override {
    for (auto& [raw, ex] : live_) ex->detach();
  }

  void start() override {
    engine::TriggerType tt;
    tt.id = "http";
    tt.description =
        "HTTP route: api_path, http_method, condition_function_id, "
        "middleware_function_ids";
    rt_.engine.register_builtin_trigger_type(std::move(tt), this);
    net::HttpServerOptions o;
    o.name = name_;
    o.host = cfg_.host;
    o.port = cfg_.port;
    o.max_body_bytes = cfg_.body_limit_bytes;
    o.header_timeout = cfg_.header_timeout;
    o.body_timeout = cfg_.default_timeout;
    // Bodies that are not JSON are streamed into the request channel as they arrive.
    o.stream_body = [](const net::HttpRequest& req) {
      const auto ct = req[beast_http::field::content_type];
      return !is_json_content_type(std::string_view(ct.data(), ct.size()));
    };
    server_ = std::make_unique<net::HttpServer>(
        rt_.io, std::move(o),
        [this](std::shared_ptr<net::IncomingRequest> req) { on_request(std::move(req)); });
  }

  void stop() override {
    if (server_) server_->stop();
  }

  void drain(std::function<void()> done) override {
    if (server_) server_->stop();
    if (in_flight_ == 0 && waiting_.empty()) return done();
    drained_ = std::move(done);
  }

  // ---- the `http` trigger type ----
  std::optional<std::string> bind(const engine::Trigger& t) override {
    const auto* c = t.config.if_object();
    if (!c) return "Failed to parse http trigger config: expected an object";
    const auto* path = c->if_contains("api_path");
    if (!path || path->is_null()) return "api_path is required for http triggers";
    if (!path->is_string() || path->get_string().empty())
      return "api_path must be a non-empty string";
    std::string method = "GET";
    if (const auto* m = c->if_contains("http_method"); m && !m->is_null()) {
      if (!m->is_string()) return "http_method must be a string";
      method = upper(m->get_string());
      if (std::find(std::begin(kMethods), std::end(kMethods), method) == std::end(kMethods))
        return "unsupported http_method '" + std::string(m->get_string()) +
               "' (supported: GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS)";
    }
    Route r;
    r.trigger_id = t.id;
    r.api_path = std::string(path->get_string());
    r.method = method;
    r.function_id = t.function_id;
    r.condition_function_id = t.condition_function_id();
    if (const auto* mw = c->if_contains("middleware_function_ids"); mw && !mw->is_null()) {
      if (!mw->is_array()) return "middleware_function_ids must be a list of function ids";
      for (const auto& id : mw->get_array()) {
        if (!id.is_string()) return "middleware_function_ids must be a list of function ids";
        r.middleware_function_ids.emplace_back(id.get_string());
      }
    }
    const std::string api_path = RouteTable::normalise_path(r.api_path);
    if (auto err = routes_.add(std::move(r))) return err;
    spdlog::debug("{}: route {} {} -> {}", name_, method, api_path, t.function_id);
    return std::nullopt;
  }

  void unbind(const engine::Trigger& t) override {
    const auto* c = t.config.if_object();
    const auto* path = c ? c->if_contains("api_path") : nullptr;
    if (!path || !path->is_string()) return;
    std::string method = "GET";
    if (const auto* m = c->if_contains("http_method"); m && m->is_string())
      method = upper(m->get_string());
    routes_.remove(std::string(path->get_string()), method, t.id);
  }

  // ---- requests ----
  void on_request(std::shared_ptr<net::IncomingRequest> req) {
    if (cors_preflight(*req)) return;
    if (in_flight_ >= cfg_.concurrency_request_limit) {
      waiting_.push_back(std::move(req));
      return;
    }
    begin(std::move(req));
  }

  void begin(std::shared_ptr<net::IncomingRequest> req) {
    const std::string method(req->method());
    const auto match = routes_.find(method, req->path());
    using Kind = RouteTable::Match::Kind;
    if (match.kind != Kind::kFound) {
      EncodedResponse r;
      if (match.kind == Kind::kNoPath) {
        r = http::error_response(404, "Not Found: no route for " + std::string(req->path()),
                                 json::object{{"method", method}, {"path", req->path()}});
      } else {
        std::string allow;
        for (const auto& m : match.allowed_methods) allow += (allow.empty() ? "" : ", ") + m;
        r = http::error_response(
            405, "Method " + method + " is not allowed on " + std::string(req->path()),
            json::object{{"allowed_methods", allow}});
        r.headers.emplace_back("allow", allow);
      }
      respond(*req, std::move(r), request_id_of(*req));
      return;
    }
    ++in_flight_;
    auto ex = std::make_shared<Exchange>(*this, std::move(req), *match.route, match.path_params);
    live_.emplace(ex.get(), ex);  // owned here until it finishes; callbacks hold weak refs
    ex->start();
  }

  void exchange_done(Exchange* ex) {
    --in_flight_;
    auto keep = live_.extract(ex);  // destroyed when this returns, after the caller is done
    while (!waiting_.empty() && in_flight_ < cfg_.concurrency_request_limit) {
      auto next = std::move(waiting_.front());
      waiting_.pop_front();
      if (next->connected()) begin(std::move(next));
    }
    if (drained_ && in_flight_ == 0 && waiting_.empty()) std::exchange(drained_, nullptr)();
  }

  // Sends `r` with the CORS and request id headers.
  void respond(net::IncomingRequest& req, EncodedResponse r, const std::string& request_id) {
    net::HttpFields fields;
    for (const auto& [k, v] : r.headers) fields.insert(k, v);
    add_common_headers(req, fields, request_id);
    req.respond(static_cast<net::HttpStatus>(r.status), std::move(r.body), "", std::move(fields));
  }

  void add_common_headers(net::IncomingRequest& req, net::HttpFields& fields,
                          const std::string& request_id) {
    fields.set("x-request-id", request_id);
    const auto origin = req.request()[beast_http::field::origin];
    if (origin.empty()) return;
    if (!cfg_.cors.configured || cfg_.cors.any_origin()) {
      fields.set(beast_http::field::access_control_allow_origin, "*");
    } else if (origin_allowed(origin)) {
      fields.set(beast_http::field::access_control_allow_origin, origin);
      fields.set(beast_http::field::vary, "origin");
    }
  }

  static std::string request_id_of(net::IncomingRequest& req) {
    const auto given = req.request()["x-request-id"];
    if (!given.empty() && given.size() <= 200 && http::valid_header_value(given))
      return std::string(given);
    return protocol::Uuid::random_v4().str();
  }

  engine::Engine& engine() { return rt_.engine; }
  boost::asio::io_context& io() { return rt_.io; }
  const HttpConfig& config() const { return cfg_; }
  const std::string& name() const { return name_; }

 private:
  bool origin_allowed(std::string_view origin) const {
    for (const auto& o : cfg_.cors.allowed_origins)
      if (o == origin) return true;
    return false;
  }

  // Answers a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) before
  // routing, as the original's CORS layer does. Returns false for other requests.
  bool cors_preflight(net::IncomingRequest& req) {
    auto& r = req.request();
    if (r.method() != beast_http::verb::options) return false;
    const auto origin = r[beast_http::field::origin];
    const auto wanted = r[beast_http::field::access_control_request_method];
    if (origin.empty() || wanted.empty()) return false;
    net::HttpFields fields;
    fields.set("x-request-id", request_id_of(req));
    const bool permissive = !cfg_.cors.configured;
    if (permissive || cfg_.cors.any_origin()) {
      fields.set(beast_http::field::access_control_allow_origin, "*");
    } else if (origin_allowed(origin)) {
      fields.set(beast_http::field::access_control_allow_origin, origin);
      fields.set(beast_http::field::vary, "origin");
    }
    if (permissive || cfg_.cors.any_method()) {
      fields.set(beast_http::field::access_control_allow_methods, "*");
    } else {
      std::string methods;
      for (const auto& m : cfg_.cors.allowed_methods) methods += (methods.empty() ? "" : ",") + m;
      fields.set(beast_http::field::access_control_allow_methods, methods);
    }
    const auto headers = r[beast_http::field::access_control_request_headers];
    fields.set(beast_http::field::access_control_allow_headers,
               headers.empty() ? std::string("*") : std::string(headers));
    req.respond(net::HttpStatus::ok, "", "", std::move(fields));
    return true;
  }

  engine::Runtime& rt_;
  std::string name_;
  HttpConfig cfg_;
  RouteTable routes_;
  std::unique_ptr<net::HttpServer> server_;
  size_t in_flight_ = 0;
  std::deque<std::shared_ptr<net::IncomingRequest>> waiting_;
  std::unordered_map<Exchange*, std::shared_ptr<Exchange>> live_;
  std::function<void()> drained_;
};

// ---- Exchange ----

Exchange::Exchange(HttpWorker& worker, std::shared_ptr<net::IncomingRequest> req, Route route,
                   http::HeaderList path_params)
    : worker_(&worker),
      req_(std::move(req)),
      route_(std::move(route)),
      path_params_(std::move(path_params)),
      timer_(worker.io()) {
  for (const auto& f : req_->request()) headers_.emplace_back(f.name_string(), f.value());
  request_id_ = HttpWorker::request_id_of(*req_);
}

engine::Engine& Exchange::engine() { return worker_->engine(); }

void Exchange::start() {
  timer_.expires_after(worker_->config().default_timeout);
  timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (auto self = weak.lock(); self && !ec) self->on_timeout();
  });
  const auto ct = req_->request()[beast_http::field::content_type];
  if (is_json_content_type(std::string_view(ct.data(), ct.size()))) {
    boost::system::error_code ec;
    body_ = json::parse(req_->body(), ec, {}, protocol::json_parse_options());
    if (ec) {
      spdlog::debug("{}: {} {}: invalid JSON body ({}); body is null", worker_->name(),
                    req_->method(), req_->target(), ec.message());
      body_ = nullptr;
    }
  } else {
    stream_request_body_ = true;
  }
  run_global_middleware(0);
}

json::object Exchange::request_without_channels() const {
  return http::make_api_request(req_->method(), req_->target(), headers_, route_.api_path,
                                path_params_, body_);
}

json::object Exchange::middleware_input() const {
  json::object full = request_without_channels();
  json::object request{{"path_params", full["path_params"]},
                       {"query_params", full["query_params"]},
                       {"headers", full["headers"]},
                       {"method", full["method"]}};
  return json::object{
      {"phase", "preHandler"}, {"request", std::move(request)}, {"context", json::object()}};
}

void Exchange::run_global_middleware(size_t index) {
  const auto& mws = worker_->config().middleware;
  while (index < mws.size() && mws[index].phase != "preHandler") ++index;
  if (index >= mws.size()) return open_channels();
  run_middleware(mws[index].function_id,
                 [self = shared_from_this(), index] { self->run_global_middleware(index + 1); });
}

void Exchange::run_middleware(const std::string& fn, std::function<void()> next) {
  stage_ = Stage::kMiddleware;
  engine().invoke(fn, middleware_input(), CallContext{},
                  [weak = weak_from_this(), fn, next = std::move(next)](Outcome o) {
                    auto self = weak.lock();
                    if (!self || self->stage_ == Stage::kDone || !self->worker_) return;
                    if (o.error) {
                      spdlog::warn("{}: middleware {} failed: {}: {}", self->worker_->name(), fn,
                                   o.error->code, o.error->message);
                      return self->send_error(500, o.error->message,
                                              json::object{{"error_id", http::make_error_id()}});
                    }
                    const json::object* r = o.result ? o.result->if_object() : nullptr;
                    const json::value* action = r ? r->if_contains("action") : nullptr;
                    if (action && action->is_string() && action->get_string() == "respond") {
                      json::object resp;
                      if (const auto* given = r->if_contains("response");
                          given && given->is_object())
                        resp = given->get_object();
                      if (!resp.contains("status_code")) resp["status_code"] = 200;
                      if (!resp.contains("body")) resp["body"] = nullptr;
                      return self->send(http::encode_api_response(resp));
                    }
                    next();  // "continue", anything else, or no result
                  });
}

void Exchange::open_channels() {
  auto& channels = engine().channels();
  const int64_t now = engine::Engine::now_ms();
  req_refs_ = channels.create(std::nullopt, now);
  resp_refs_ = channels.create(std::nullopt, now);
  channels.find(req_refs_.channel_id, req_refs_.access_key, req_channel_);
  channels.find(resp_refs_.channel_id, resp_refs_.access_key, resp_channel_);
  req_channel_->writer_taken = true;
  resp_channel_->reader_taken = true;
  req_channel_->on_space = [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->pump_request_body();
  };
  req_channel_->on_reader_gone = [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->body_done_ = true;  // nobody reads it any more
  };
  resp_channel_->on_data = [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->on_response_data();
  };
  start_request_body();
  run_condition();
}

void Exchange::start_request_body() {
  if (!stream_request_body_) {
    body_done_ = true;
    req_channel_->close_writer();
    return;
  }
  pump_request_body();
}

// Moves the next piece of the request body into its channel while the channel has room.
void Exchange::pump_request_body() {
  if (body_done_ || body_reading_ || stage_ == Stage::kDone || !req_channel_) return;
  if (req_channel_->reader_gone) {
    body_done_ = true;
    return;
  }
  if (req_channel_->full()) return;  // on_space calls again
  body_reading_ = true;
  req_->read_body([weak = weak_from_this()](boost::system::error_code ec, std::string_view piece,
                                            bool last) {
    auto self = weak.lock();
    if (!self) return;
    self->body_reading_ = false;
    if (self->stage_ == Stage::kDone) return;
    if (ec) {
      self->body_done_ = true;
      self->req_channel_->close_writer(engine::Channel::WriterEnd::kBrokenOff);
      if (ec == beast_http::error::body_limit)
        return self->send_error(413, "Request body is larger than body_limit_bytes (" +
                                         std::to_string(self->worker_->config().body_limit_bytes) +
                                         " bytes)");
      if (ec == boost::beast::error::timeout)
        return self->send_error(408, "Request body did not arrive in time");
      return self->finish();  // the client went away
    }
    while (!piece.empty()) {
      const size_t n = std::min(piece.size(), kBodyPiece);
      self->req_channel_->push(
          engine::ChannelFrame::message(std::string(piece.substr(0, n)), true));
      piece.remove_prefix(n);
    }
    self->req_channel_->publish();
    if (last) {
      self->body_done_ = true;
      self->req_channel_->close_writer();
      return;
    }
    self->pump_request_body();
  });
}

void Exchange::run_condition() {
  if (!route_.condition_function_id) return run_route_middleware(0);
  stage_ = Stage::kCondition;
  engine().invoke(*route_.condition_function_id, request_without_channels(), CallContext{},
                  [weak = weak_from_this()](Outcome o) {
                    auto self = weak.lock();
                    if (!self || self->stage_ == Stage::kDone || !self->worker_) return;
                    if (o.error)
                      return self->send_error(500, o.error->message,
                                              json::object{{"error_id", http::make_error_id()}});
                    if (o.result && o.result->is_bool() && !o.result->get_bool())
                      return self->send_error(422, "Request condition not met",
                                              json::object{{"skipped", true}});
                    self->run_route_middleware(0);
                  });
}

void Exchange::run_route_middleware(size_t index) {
  if (index >= route_.middleware_function_ids.size()) return run_handler();
  run_middleware(route_.middleware_function_ids[index],
                 [self = shared_from_this(), index] { self->run_route_middleware(index + 1); });
}

void Exchange::run_handler() {
  stage_ = Stage::kHandler;
  // The body is not needed here any more: move it (a 1 MiB body is not copied again).
  json::object request = http::make_api_request(req_->method(), req_->target(), headers_,
                                                route_.api_path, path_params_, std::move(body_));
  body_ = nullptr;
  request["request_body"] = channel_ref(req_refs_, "read");
  request["response"] = channel_ref(resp_refs_, "write");
  engine().invoke(route_.function_id, std::move(request), CallContext{},
                  [weak = weak_from_this()](Outcome o) {
                    if (auto self = weak.lock()) self->on_handler_result(std::move(o));
                  });
  on_response_data();  // the worker may have written before we got here
}

void Exchange::on_handler_result(Outcome o) {
  if (stage_ == Stage::kDone || stage_ == Stage::kStreaming || !worker_) return;
  if (o.error) {
    spdlog::debug("{}: {} {} -> {} failed: {}: {}", worker_->name(), req_->method(),
                  route_.api_path, route_.function_id, o.error->code, o.error->message);
    return send_error(500, o.error->message, json::object{{"error_id", http::make_error_id()}});
  }
  if (o.result && !o.result->is_null()) return send(http::encode_api_response(*o.result));
  // null: the response comes through the response channel.
  handler_returned_null_ = true;
  on_response_data();
}

void Exchange::apply_control_message(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  const json::value* type = o ? o->if_contains("type") : nullptr;
  if (!type || !type->is_string()) {
    spdlog::debug(
        "{}: ignoring a text message on the response channel that is not a control "
        "message",
        worker_->name());
    return;
  }
  if (type->get_string() == "set_status") {
    const json::value* code = o->if_contains("status_code");
    if (code && code->is_int64() && code->get_int64() >= 100 && code->get_int64() <= 599)
      status_ = static_cast<unsigned>(code->get_int64());
  } else if (type->get_string() == "set_headers") {
    const json::value* hs = o->if_contains("headers");
    if (hs && hs->is_object())
      for (const auto& kv : hs->get_object()) {
        if (!kv.value().is_string() || !http::valid_header_name(kv.key()) ||
            !http::valid_header_value(kv.value().get_string()))
          continue;
        const std::string name = lower(kv.key());
        std::erase_if(resp_headers_, [&](const auto& h) { return lower(h.first) == name; });
        resp_headers_.emplace_back(std::string(kv.key()), std::string(kv.value().get_string()));
      }
  }
}

void Exchange::start_streaming() {
  stage_ = Stage::kStreaming;
  streaming_ = true;
  timer_.cancel();  // a streamed body (a download, SSE) lasts as long as the worker writes
  net::HttpFields fields;
  for (const auto& [k, v] : resp_headers_) fields.insert(k, v);
  worker_->add_common_headers(*req_, fields, request_id_);
  req_->start_response(static_cast<net::HttpStatus>(status_), std::move(fields));
}

// Takes what the worker wrote into the response channel: control messages until the body
// starts, then body pieces, as fast as the client takes them.
void Exchange::on_response_data() {
  if (!resp_channel_ || !worker_ || stage_ == Stage::kDone) return;
  if (stage_ != Stage::kHandler && stage_ != Stage::kStreaming) return;  // not yet asked
  while (!resp_channel_->empty() && !write_blocked_) {
    engine::ChannelFrame f = resp_channel_->pop();
    if (!f.binary) {
      if (f.first) text_message_.clear();
      text_message_.append(f.view());
      if (f.last) apply_control_message(text_message_);
      continue;
    }
    if (!streaming_) start_streaming();
    req_->write_body(std::string(f.view()));
    if (req_->queued_bytes() > kMaxQueuedResponseBytes) {
      write_blocked_ = true;
      req_->write_body({}, [weak = weak_from_this()](bool ok) {
        auto self = weak.lock();
        if (!self) return;
        self->write_blocked_ = false;
        if (!ok) return self->finish();  // the client left
        self->on_response_data();
      });
    }
  }
  if (!resp_channel_->drained() || write_blocked_) return;
  if (streaming_) return finish_streamed_response();
  if (handler_returned_null_) {
    // The worker closed the channel without a body: status and headers alone.
    EncodedResponse r;
    r.status = status_;
    r.headers = resp_headers_;
    send(r);
  }
}

void Exchange::finish_streamed_response() {
  req_->end_response();
  finish();
}

void Exchange::send(EncodedResponse r) {
  if (stage_ == Stage::kDone || streaming_ || !worker_) return;
  worker_->respond(*req_, std::move(r), request_id_);
  finish();
}

void Exchange::send_error(unsigned status, std::string_view message, json::object extra) {
  send(http::error_response(status, message, std::move(extra)));
}

void Exchange::on_timeout() {
  if (stage_ == Stage::kDone || streaming_ || !worker_) return;
  const auto ms = worker_->config().default_timeout.count();
  if (stage_ == Stage::kMiddleware) return send_error(504, "Middleware timeout");
  spdlog::warn("{}: {} {} -> {}: no response within default_timeout ({} ms)", worker_->name(),
               req_->method(), route_.api_path, route_.function_id, ms);
  send_error(504, "No response within " + std::to_string(ms) + " ms (default_timeout)",
             json::object{{"function_id", route_.function_id}});
}

void Exchange::finish() {
  if (stage_ == Stage::kDone) return;
  stage_ = Stage::kDone;
  timer_.cancel();
  if (req_channel_) {
    req_channel_->on_space = nullptr;
    req_channel_->on_reader_gone = nullptr;
    if (!req_channel_->writer_closed())
      req_channel_->close_writer(engine::Channel::WriterEnd::kBrokenOff);
  }
  if (resp_channel_) {
    resp_channel_->on_data = nullptr;
    resp_channel_->drop_reader();  // a worker still writing is told to stop
  }
  if (worker_) {
    if (!req_->answered())
      worker_->respond(*req_, http::error_response(499, "Client closed the request"), request_id_);
    if (req_channel_) engine().channels().remove(req_refs_.channel_id);
    if (resp_channel_) engine().channels().remove(resp_refs_.channel_id);
    worker_->exchange_done(this);
  }
}

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_http_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt) {
  return std::make_unique<HttpWorker>(entry, rt);
}

}  // namespace iii::workers
