#include "workers/bridge/bridge_worker.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "workers/bridge/remote_engine.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

struct Expose {
  std::string local_function;
  std::string remote_function;
};
struct Forward {
  std::string local_function;
  std::string remote_function;
  std::optional<int> timeout_ms;
};

std::string scalar(config::WorkerConfigReader& r, const YAML::Node& n, const std::string& what) {
  if (!n || !n.IsScalar() || n.Scalar().empty()) r.fail_at(n, what + " must be a non-empty string");
  return n.Scalar();
}

class BridgeWorker : public engine::BuiltinWorker {
 public:
  BridgeWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    const char* env_url = std::getenv("III_URL");
    url_ = r.get_string("url", env_url && *env_url ? env_url : "ws://0.0.0.0:49134");
    service_id_ = r.get_optional_string("service_id");
    service_name_ = r.get_optional_string("service_name");
    const YAML::Node expose = r.get_node("expose");
    const YAML::Node forward = r.get_node("forward");
    r.finish();
    if (url_.rfind("ws://", 0) != 0 && url_.rfind("http://", 0) != 0)
      r.fail("url", "url must be a ws:// URL (got '" + url_ + "')");
    if (expose && !expose.IsNull()) {
      if (!expose.IsSequence()) r.fail_at(expose, "expose must be a list");
      for (const auto& e : expose) {
        if (!e.IsMap())
          r.fail_at(e, "expose entries must be mappings {local_function, remote_function?}");
        Expose x;
        for (const auto& kv : e) {
          const auto k = kv.first.as<std::string>("");
          if (k == "local_function")
            x.local_function = scalar(r, kv.second, "expose.local_function");
          else if (k == "remote_function")
            x.remote_function = scalar(r, kv.second, "expose.remote_function");
          else
            r.fail_at(kv.first, "expose: unknown key '" + k +
                                    "' (known keys: local_function, remote_function)");
        }
        if (x.local_function.empty()) r.fail_at(e, "expose: missing key 'local_function'");
        if (x.remote_function.empty()) x.remote_function = x.local_function;
        expose_.push_back(std::move(x));
      }
    }
    if (forward && !forward.IsNull()) {
      if (!forward.IsSequence()) r.fail_at(forward, "forward must be a list");
      for (const auto& e : forward) {
        if (!e.IsMap())
          r.fail_at(
              e, "forward entries must be mappings {local_function, remote_function, timeout_ms?}");
        Forward f;
        for (const auto& kv : e) {
          const auto k = kv.first.as<std::string>("");
          if (k == "local_function") {
            f.local_function = scalar(r, kv.second, "forward.local_function");
          } else if (k == "remote_function") {
            f.remote_function = scalar(r, kv.second, "forward.remote_function");
          } else if (k == "timeout_ms") {
            int64_t ms = -1;
            try {
              ms = kv.second.as<int64_t>();
            } catch (const YAML::Exception&) {
            }
            if (ms <= 0 || ms > 86400000)
              r.fail_at(kv.second, "forward.timeout_ms must be a positive integer (milliseconds)");
            f.timeout_ms = static_cast<int>(ms);
          } else {
            r.fail_at(kv.first, "forward: unknown key '" + k +
                                    "' (known keys: local_function, remote_function, timeout_ms)");
          }
        }
        if (f.local_function.empty()) r.fail_at(e, "forward: missing key 'local_function'");
        if (f.remote_function.empty()) r.fail_at(e, "forward: missing key 'remote_function'");
        forward_.push_back(std::move(f));
      }
    }
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  void start() override {
    // The worker name there is the service name (default: the service id, then "iii-bridge").
    const std::string worker_name = service_name_.value_or(service_id_.value_or("iii-bridge"));
    remote_ = bridge::RemoteEngine::connect(rt_.io, url_, worker_name);
    if (service_id_) remote_->register_service(*service_id_, service_name_.value_or(*service_id_));
    auto& eng = rt_.engine;
    for (const auto& x : expose_) {
      remote_->expose(x.remote_function,
                      [&eng, local = x.local_function](json::value in, Completion done) {
                        eng.invoke(local, std::move(in), CallContext{}, std::move(done));
                      });
    }
    for (const auto& f : forward_) {
      add(f.local_function, "Forwarded to " + f.remote_function + " on " + url_,
          [remote = remote_, f](const CallContext&, json::value in, Completion done) {
            remote->call(f.remote_function, std::move(in), f.timeout_ms, std::move(done));
          });
    }
    add("bridge.invoke", "Invoke a function on the bridged engine and return its result",
        [remote = remote_](const CallContext&, json::value in, Completion done) {
          auto parsed = parse_invoke(in);
          if (!parsed.function_id) return done(std::move(parsed.failure));
          remote->call(
              *parsed.function_id, std::move(parsed.data), parsed.timeout_ms, [done](Outcome o) {
                if (o.error)
                  return done(
                      Outcome::fail("bridge_error", o.error->code + ": " + o.error->message));
                done(std::move(o));
              });
        });
    add("bridge.invoke_async", "Invoke a function on the bridged engine without waiting",
        [remote = remote_](const CallContext&, json::value in, Completion done) {
          auto parsed = parse_invoke(in);
          if (!parsed.function_id) return done(std::move(parsed.failure));
          remote->call_void(*parsed.function_id, std::move(parsed.data));
          done(Outcome::ok(nullptr));
        });
    spdlog::info("iii-bridge: connecting to {} ({} exposed, {} forwarded)", url_, expose_.size(),
                 forward_.size());
  }

  void stop() override {
    if (remote_) remote_->shutdown();
  }

 private:
  struct Invoke {
    std::optional<std::string> function_id;
    json::value data;
    std::optional<int> timeout_ms;
    Outcome failure;
  };

  static Invoke parse_invoke(const json::value& in) {
    Invoke out;
    auto bad = [&](const std::string& why) {
      out.function_id.reset();
      out.failure = Outcome::fail("deserialization_error", "Failed to parse invoke input: " + why);
      return out;
    };
    if (!in.is_object()) return bad("expected an object");
    const auto& o = in.get_object();
    const auto* fid = o.if_contains("function_id");
    if (!fid || !fid->is_string()) return bad("missing field `function_id`");
    if (const auto* d = o.if_contains("data")) out.data = *d;
    if (const auto* t = o.if_contains("timeout_ms"); t && !t->is_null()) {
      if (!t->is_int64() && !t->is_uint64()) return bad("`timeout_ms` must be an integer");
      const int64_t ms = t->is_int64() ? t->get_int64() : -1;
      if (ms <= 0 || ms > 86400000) return bad("`timeout_ms` out of range");
      out.timeout_ms = static_cast<int>(ms);
    } else {
      out.timeout_ms = 30000;
    }
    out.function_id = std::string(fid->get_string());
    return out;
  }

  void add(const std::string& id, const std::string& description, engine::BuiltinHandler h) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    rt_.engine.register_builtin(std::move(info), name_, std::move(h));
  }

  engine::Runtime& rt_;
  std::string name_;
  std::string url_;
  std::optional<std::string> service_id_, service_name_;
  std::vector<Expose> expose_;
  std::vector<Forward> forward_;
  std::shared_ptr<bridge::RemoteEngine> remote_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_bridge_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<BridgeWorker>(entry, rt);
}

}  // namespace iii::workers
