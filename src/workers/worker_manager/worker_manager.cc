#include "workers/worker_manager/worker_manager.h"

#include <boost/json/parse.hpp>

#include "config/config.h"
#include "engine/engine.h"
#include "engine/rbac.h"
#include "net/ws_listener.h"

namespace iii::workers {
namespace {

namespace json = boost::json;

// A YAML value as JSON (for expose_functions metadata values): plain scalars are typed like
// YAML 1.2's core schema (null, booleans, numbers), quoted ones stay strings.
json::value yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : n) o[kv.first.Scalar()] = yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& item : n) a.push_back(yaml_to_json(item));
      return a;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return json::value(s);  // quoted
      if (s == "null" || s == "~") return nullptr;
      if (s == "true") return true;
      if (s == "false") return false;
      boost::system::error_code ec;
      json::value v = json::parse(s, ec);
      if (!ec && v.is_number()) return v;
      return json::value(s);
    }
    default:
      return nullptr;
  }
}

// A nested block read with the same unknown-key checks as a worker entry.
config::WorkerEntry sub_entry(const config::WorkerEntry& parent, const YAML::Node& block) {
  // Built field by field: assigning to a copied YAML::Node would overwrite the parent's node.
  const int line = block.Mark().line >= 0 ? block.Mark().line + 1 : parent.line;
  return config::WorkerEntry{parent.name, parent.instance_name, block, parent.source, line};
}

std::optional<std::string> function_id_key(config::WorkerConfigReader& r, const std::string& key) {
  auto v = r.get_optional_string(key);
  if (v && v->empty()) r.fail(key, "key '" + key + "' must be a non-empty function id");
  return v;
}

engine::ExposeRule read_expose_rule(config::WorkerConfigReader& r, const YAML::Node& item) {
  engine::ExposeRule rule;
  if (item.IsScalar()) {
    rule.id_glob = engine::parse_match(item.Scalar());
    if (!rule.id_glob)
      r.fail_at(item, "rbac.expose_functions: '" + item.Scalar() +
                          "' must be match(\"pattern\") or {metadata: {key: value}}");
    return rule;
  }
  if (!item.IsMap() || !item["metadata"] || !item["metadata"].IsMap())
    r.fail_at(item,
              "rbac.expose_functions items must be match(\"pattern\") or {metadata: {key: value}}");
  for (const auto& kv : item["metadata"]) {
    engine::ExposeRule::MetaCond c;
    c.key = kv.first.Scalar();
    if (kv.second.IsScalar()) c.glob = engine::parse_match(kv.second.Scalar());
    if (!c.glob) c.exact = yaml_to_json(kv.second);
    rule.metadata.push_back(std::move(c));
  }
  return rule;
}

class WorkerManager : public engine::BuiltinWorker {
 public:
  WorkerManager(const config::WorkerEntry& entry, engine::Runtime& rt) : rt_(rt) {
    config::WorkerConfigReader r(entry);
    opts_.name = entry.instance_name;
    opts_.host = r.get_string("host", "0.0.0.0");
    opts_.port = static_cast<uint16_t>(r.get_int("port", 49134, 0, 65535));
    opts_.max_message_bytes =
        static_cast<size_t>(r.get_int("max_message_bytes", 64LL * 1024 * 1024, 1024, 1LL << 31));
    opts_.idle_timeout =
        std::chrono::milliseconds(r.get_int("idle_timeout_ms", 60000, 0, 24LL * 3600 * 1000));
    opts_.max_outbound_bytes = static_cast<size_t>(
        r.get_int("max_outbound_bytes", 256LL * 1024 * 1024, 1024 * 1024, 1LL << 40));
    // Engine-wide (one table of pending invocations), so every listener must agree on it.
    const int64_t timeout_ms = r.get_int("invocation_timeout_ms", -1, 0, 24LL * 3600 * 1000);
    if (timeout_ms >= 0) {
      if (rt_.engine.invocation_timeout_configured() &&
          rt_.engine.invocation_timeout().count() != timeout_ms)
        r.fail("invocation_timeout_ms",
               "invocation_timeout_ms is engine-wide: every iii-worker-manager that sets it must "
               "use the same value (another entry set " +
                   std::to_string(rt_.engine.invocation_timeout().count()) + ")");
      rt_.engine.set_invocation_timeout(std::chrono::milliseconds(timeout_ms));
    }
    auto policy = std::make_shared<engine::ListenerPolicy>();
    policy->middleware_function_id = function_id_key(r, "middleware_function_id");
    if (const YAML::Node rbac = r.get_node("rbac"); !rbac.IsNull()) {
      if (!rbac.IsMap()) r.fail("rbac", "key 'rbac' must be a mapping");
      config::WorkerEntry sub = sub_entry(entry, rbac);
      config::WorkerConfigReader rr(sub);
      policy->rbac = true;
      policy->auth_function_id = function_id_key(rr, "auth_function_id");
      policy->on_function_registration =
          function_id_key(rr, "on_function_registration_function_id");
      policy->on_trigger_registration = function_id_key(rr, "on_trigger_registration_function_id");
      policy->on_trigger_type_registration =
          function_id_key(rr, "on_trigger_type_registration_function_id");
      if (const YAML::Node expose = rr.get_node("expose_functions"); !expose.IsNull()) {
        if (!expose.IsSequence())
          rr.fail("expose_functions", "rbac.expose_functions must be a list");
        for (const auto& item : expose) policy->expose.push_back(read_expose_rule(rr, item));
      }
      rr.finish();
    }
    if (const YAML::Node limits = r.get_node("limits"); !limits.IsNull()) {
      if (!limits.IsMap()) r.fail("limits", "key 'limits' must be a mapping");
      config::WorkerEntry sub = sub_entry(entry, limits);
      config::WorkerConfigReader lr(sub);
      policy->limits.connections_per_ip =
          static_cast<uint32_t>(lr.get_int("connections_per_ip", 0, 0, 1000000));
      policy->limits.invocations_per_second =
          static_cast<uint32_t>(lr.get_int("invocations_per_second", 0, 0, 100000000));
      policy->limits.registrations =
          static_cast<uint32_t>(lr.get_int("registrations", 0, 0, 100000000));
      lr.finish();
    }
    if (policy->rbac || policy->middleware_function_id || policy->limits.connections_per_ip ||
        policy->limits.invocations_per_second || policy->limits.registrations)
      opts_.policy = std::move(policy);
    if (const YAML::Node origins = r.get_node("allowed_origins"); !origins.IsNull()) {
      if (!origins.IsSequence())
        r.fail("allowed_origins", "key 'allowed_origins' must be a list of origins");
      std::vector<std::string> list;
      for (const auto& o : origins) {
        if (!o.IsScalar() || o.Scalar().empty())
          r.fail_at(o, "allowed_origins items must be origins such as \"https://app.example\"");
        list.push_back(o.Scalar());
      }
      opts_.allowed_origins = std::move(list);
    }
    r.finish();
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, true, {}});
  }

  void start() override { listener_ = net::start_ws_listener(rt_.io, rt_.engine, opts_); }
  void stop() override {
    if (listener_) listener_->stop();
  }

 private:
  engine::Runtime& rt_;
  net::ListenerOptions opts_;
  std::unique_ptr<net::Listener> listener_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_worker_manager(const config::WorkerEntry& entry,
                                                           engine::Runtime& rt) {
  return std::make_unique<WorkerManager>(entry, rt);
}

}  // namespace iii::workers
