#include "workers/bridge/remote_engine.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <map>

#include "iii/iii.h"

namespace iii::workers::bridge {

namespace asio = boost::asio;
namespace json = boost::json;
using engine::Outcome;

struct RemoteEngine::Alive {
  bool on = true;  // engine thread only
};

struct RemoteEngine::Refs {
  std::map<std::string, iii::FunctionRef> functions;
  std::map<std::string, iii::TriggerRef> triggers;
};

namespace {

Outcome to_outcome(iii::TriggerOutcome o) {
  if (o.error) {
    Outcome out = Outcome::fail(o.error->code, o.error->message);
    out.error->stacktrace = o.error->stacktrace;
    return out;
  }
  return o.result ? Outcome::ok(std::move(*o.result)) : Outcome::empty();
}

}  // namespace

RemoteEngine::RemoteEngine(asio::io_context& io, std::string url, std::string worker_name)
    : io_(io),
      url_(std::move(url)),
      alive_(std::make_shared<Alive>()),
      refs_(std::make_unique<Refs>()) {
  iii::InitOptions opts;
  opts.worker_name = std::move(worker_name);
  // Quicker than the SDK default so a restarted remote engine is back within seconds.
  opts.reconnect.initial_delay_ms = 200;
  opts.reconnect.max_delay_ms = 5000;
  opts.reconnect.backoff_multiplier = 2.0;
  opts.handler_threads = 1;  // exposed functions are async handlers: no pool is ever started
  opts.log = [url = url_](iii::LogLevel level, const std::string& msg) {
    switch (level) {
      case iii::LogLevel::kDebug:
        spdlog::debug("bridge {}: {}", url, msg);
        break;
      case iii::LogLevel::kInfo:
        spdlog::info("bridge {}: {}", url, msg);
        break;
      case iii::LogLevel::kWarn:
        spdlog::warn("bridge {}: {}", url, msg);
        break;
      case iii::LogLevel::kError:
        spdlog::error("bridge {}: {}", url, msg);
        break;
    }
  };
  sdk_ = iii::register_worker(url_, std::move(opts));  // throws std::invalid_argument
}

RemoteEngine::~RemoteEngine() { shutdown(); }

std::shared_ptr<RemoteEngine> RemoteEngine::connect(asio::io_context& io, const std::string& url,
                                                    const std::string& worker_name) {
  return std::shared_ptr<RemoteEngine>(new RemoteEngine(io, url, worker_name));
}

void RemoteEngine::call(const std::string& function_id, json::value data,
                        std::optional<int> timeout_ms, engine::Completion done) {
  if (!alive_->on) return done(Outcome::fail("bridge_error", "the bridge is shut down"));
  iii::TriggerRequest req;
  req.function_id = function_id;
  req.payload = std::move(data);
  req.timeout_ms = timeout_ms;
  sdk_->trigger_async(
      req, [&io = io_, alive = alive_, done = std::move(done)](iii::TriggerOutcome o) mutable {
        asio::post(io, [alive, done = std::move(done), o = std::move(o)]() mutable {
          if (alive->on && done) done(to_outcome(std::move(o)));
        });
      });
}

void RemoteEngine::call_void(const std::string& function_id, json::value data) {
  if (!alive_->on) return;
  iii::TriggerRequest req;
  req.function_id = function_id;
  req.payload = std::move(data);
  req.action = iii::TriggerAction::Void();
  sdk_->trigger_async(req, [](iii::TriggerOutcome) {});
}

void RemoteEngine::expose(const std::string& remote_id, Handler handler) {
  auto shared = std::make_shared<Handler>(std::move(handler));
  refs_->functions[remote_id] = sdk_->register_function(
      remote_id, iii::AsyncHandler([&io = io_, alive = alive_, shared](const json::value& payload,
                                                                       iii::Responder reply) {
        asio::post(io, [alive, shared, payload, reply] {
          if (!alive->on) return reply.fail("the bridge is shutting down", "bridge_error");
          (*shared)(payload, [reply](Outcome o) {
            if (o.error) return reply.fail(o.error->message, o.error->code, o.error->stacktrace);
            o.materialise();
            reply.ok(std::move(o.result));
          });
        });
      }));
}

void RemoteEngine::unexpose(const std::string& remote_id) {
  auto it = refs_->functions.find(remote_id);
  if (it == refs_->functions.end()) return;
  it->second.unregister();
  refs_->functions.erase(it);
}

std::string RemoteEngine::add_remote_trigger(const std::string& type,
                                             const std::string& function_id, json::value config) {
  iii::TriggerRef ref =
      sdk_->register_trigger({type, function_id, std::move(config), std::nullopt});
  const std::string id = ref.id();
  refs_->triggers[id] = std::move(ref);
  return id;
}

void RemoteEngine::remove_remote_trigger(const std::string& trigger_id) {
  auto it = refs_->triggers.find(trigger_id);
  if (it == refs_->triggers.end()) return;
  it->second.unregister();
  refs_->triggers.erase(it);
}

void RemoteEngine::register_service(const std::string& id, const std::string& name) {
  sdk_->register_service({id, name, std::nullopt, std::nullopt});
}

bool RemoteEngine::connected() const { return sdk_ && sdk_->is_connected(); }

void RemoteEngine::shutdown() {
  alive_->on = false;
  if (sdk_) sdk_->shutdown();
}

}  // namespace iii::workers::bridge
