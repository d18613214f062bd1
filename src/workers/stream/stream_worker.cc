#include "workers/stream/stream_worker.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>
#include <map>

#include "common/logging.h"
#include "config/config.h"
#include "engine/builtin_input.h"
#include "engine/engine.h"
#include "protocol/json_writer.h"
#include "protocol/uuid.h"
#include "storage/adapter_config.h"
#include "storage/kv_store.h"
#include "storage/redis/redis_client.h"
#include "workers/bridge/bridge_adapter.h"
#include "workers/bridge/remote_engine.h"
#include "workers/stream/stream_server.h"

namespace iii::workers {
namespace {

namespace json = boost::json;
using engine::BuiltinInput;
using engine::CallContext;
using engine::Completion;
using engine::Outcome;

std::string index_of(const std::string& stream, const std::string& group) {
  return "stream:" + stream + ":" + group;
}

json::value or_null(const std::optional<json::value>& v) { return v ? *v : json::value(nullptr); }

// The wrapper every client and `stream` trigger receives.
json::object wrapper(const std::string& stream, const std::string& group,
                     const std::optional<std::string>& id, json::object event) {
  return json::object{{"type", "stream"},
                      {"timestamp", engine::Engine::now_ms()},
                      {"streamName", stream},
                      {"groupId", group},
                      {"id", id ? json::value(*id) : json::value(nullptr)},
                      {"event", std::move(event)}};
}

engine::SharedFrame frame_of(const json::object& o) {
  std::string out;
  protocol::append_json(out, o);
  return engine::make_frame(std::move(out));
}

// The Redis Pub/Sub channel every engine on one Redis publishes its stream events to and
// delivers to its own clients from (the original's name: an original engine can share it).
constexpr const char* kEventsChannel = "stream::events";

// Validates the config of the stream trigger types; the engine keeps the bound ids.
class BoundSet : public engine::TriggerTypeHandler {
 public:
  explicit BoundSet(bool needs_stream_name) : needs_stream_name_(needs_stream_name) {}
  std::optional<std::string> bind(const engine::Trigger& t) override {
    if (needs_stream_name_) {
      const auto* c = t.config.if_object();
      const auto* name = c ? c->if_contains("stream_name") : nullptr;
      if (!name || !name->is_string())
        return "Failed to deserialize stream trigger: `stream_name` (string) is required";
      for (const char* k : {"group_id", "item_id"})
        if (auto* v = c->if_contains(k); v && !v->is_null() && !v->is_string())
          return std::string("Failed to deserialize stream trigger: `") + k + "` must be a string";
    }
    return std::nullopt;
  }
  void unbind(const engine::Trigger&) override {}

 private:
  bool needs_stream_name_;
};

class StreamWorker : public engine::BuiltinWorker, public stream::StreamServerDelegate {
 public:
  StreamWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), eng_(rt.engine), name_(entry.instance_name) {
    config::WorkerConfigReader r(entry);
    server_opts_.host = r.get_string("host", "0.0.0.0");
    server_opts_.port = static_cast<uint16_t>(r.get_int("port", 3112, 0, 65535));
    auth_function_ = r.get_optional_string("auth_function");
    server_opts_.max_outbound_bytes = static_cast<size_t>(
        r.get_int("max_subscriber_buffer_bytes", 8LL * 1024 * 1024, 64 * 1024, 1LL << 32));
    bridge_url_ = bridge::read_bridge_adapter(r);
    if (!bridge_url_) store_opts_ = storage::read_adapter_config(r);
    r.finish();
    if (!bridge_url_)
      store_ = storage::open_store_for(entry, store_opts_, rt_.io);  // before any port is bound
    if (!bridge_url_ && store_opts_.method == storage::StoreOptions::Method::kRedis) {
      storage::redis::ClientOptions o;
      o.url = store_opts_.redis_url;
      o.name = entry.instance_name + " (events)";
      bus_pub_ = std::make_unique<storage::redis::RedisClient>(rt_.io, o);
      o.mode = storage::redis::ClientOptions::Mode::kSubscriber;
      bus_sub_ = std::make_unique<storage::redis::RedisClient>(rt_.io, o);
    }
    eng_.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~StreamWorker() override {
    if (store_) store_->close();
  }

  void start() override {
    auto& io = rt_.io;
    add_type("stream", "Fires on stream item changes and custom events", &stream_triggers_);
    add_type("stream:join", "Called when a client joins a stream subscription; may refuse it",
             &join_triggers_);
    add_type("stream:leave", "Called when a client leaves a stream subscription", &leave_triggers_);
    if (bridge_url_) {
      remote_ = bridge::RemoteEngine::connect(io, *bridge_url_, name_);
      spdlog::info("iii-stream: items served by the engine at {} (bridge adapter)", *bridge_url_);
      // Events travel through the remote engine's pubsub (topic stream.events), so every engine
      // bridged to it pushes them to its own subscribers, this one included.
      const std::string on_pub = "stream::bridge::on_pub::" + protocol::Uuid::random_v4().str();
      remote_->expose(on_pub, [this](json::value in, Completion done) {
        const json::object* w = in.if_object();
        const json::value* s = w ? w->if_contains("streamName") : nullptr;
        const json::value* g = w ? w->if_contains("groupId") : nullptr;
        if (!s || !s->is_string() || !g || !g->is_string())
          return done(Outcome::fail("DESERIALIZATION_ERROR",
                                    "stream event must be an object with streamName and groupId"));
        std::optional<std::string> id;
        if (const json::value* i = w->if_contains("id"); i && i->is_string())
          id = std::string(i->get_string());
        if (server_)
          server_->publish(std::string(s->get_string()), std::string(g->get_string()), id,
                           frame_of(*w));
        done(Outcome::ok(nullptr));
      });
      remote_->add_remote_trigger("subscribe", on_pub, json::object{{"topic", "stream.events"}});
    }
    register_functions();
    server_ = stream::start_stream_server(io, server_opts_, *this);
    if (bus_sub_) {
      bus_sub_->subscribe(kEventsChannel, [this](std::string_view, std::string_view payload) {
        deliver_from_redis(payload);
      });
      bus_sub_->start();
      bus_pub_->start();
    }
  }

  void stop() override {
    if (bus_sub_) bus_sub_->stop();
    if (server_) server_->stop();
    if (store_) store_->close();  // flushes accepted writes; their acknowledgements are posted
    if (remote_) remote_->shutdown();
  }

  // ---- stream::StreamServerDelegate ----
  void authenticate(json::object request,
                    std::function<void(std::optional<json::value>)> done) override {
    if (!auth_function_) return done(json::value(nullptr));
    eng_.invoke(*auth_function_, std::move(request), CallContext{},
                [done, fn = *auth_function_](Outcome o) {
                  // The auth function can never reject: failures mean "no context".
                  if (o.error) {
                    spdlog::warn("iii-stream: auth function {} failed ({}: {}); no context", fn,
                                 o.error->code, o.error->message);
                    return done(json::value(nullptr));
                  }
                  const json::object* obj = o.result ? o.result->if_object() : nullptr;
                  // Beyond the original: {allowed: false} refuses the upgrade (HTTP 401).
                  if (const json::value* a = obj ? obj->if_contains("allowed") : nullptr;
                      a && a->is_bool() && !a->get_bool()) {
                    spdlog::info("iii-stream: connection refused by auth function {}", fn);
                    return done(std::nullopt);
                  }
                  const json::value* ctx = obj ? obj->if_contains("context") : nullptr;
                  done(ctx ? *ctx : json::value(nullptr));
                });
  }

  void join(const stream::StreamSubscription& sub, const json::value& context,
            std::function<void(bool, engine::SharedFrame)> done) override {
    json::object event = membership_event(sub, context);
    // One count per fired trigger plus one for this loop, so `decide` runs once, after the
    // last answer, even when every answer comes synchronously.
    auto remaining = std::make_shared<size_t>(1);
    auto unauthorized = std::make_shared<bool>(false);
    auto decide = [this, sub, done, unauthorized] {
      if (*unauthorized) {
        return done(false, frame_of(wrapper(sub.stream_name, sub.group_id, sub.item_id,
                                            json::object{{"type", "unauthorized"}})));
      }
      send_sync(sub, done);
    };
    eng_.fire_type(
        "stream:join", event,
        [remaining](const engine::Trigger&) {
          ++*remaining;
          return true;
        },
        [remaining, unauthorized, decide](const std::string&, engine::FireStatus st, Outcome o) {
          if (st == engine::FireStatus::kInvoked && o.result && o.result->is_object()) {
            const auto* u = o.result->get_object().if_contains("unauthorized");
            if (u && u->is_bool() && u->get_bool()) *unauthorized = true;
          }
          if (--*remaining == 0) decide();
        });
    if (--*remaining == 0) decide();
  }

  void leave(const stream::StreamSubscription& sub, const json::value& context) override {
    eng_.fire_type("stream:leave", membership_event(sub, context));
  }

 private:
  static json::object membership_event(const stream::StreamSubscription& sub,
                                       const json::value& ctx) {
    return json::object{{"subscription_id", sub.subscription_id},
                        {"stream_name", sub.stream_name},
                        {"group_id", sub.group_id},
                        {"id", sub.item_id ? json::value(*sub.item_id) : json::value(nullptr)},
                        {"context", ctx}};
  }

  void send_sync(const stream::StreamSubscription& sub,
                 std::function<void(bool, engine::SharedFrame)> done) {
    auto reply = [sub, done](Outcome o, json::value fallback) {
      if (o.error) {
        spdlog::warn("iii-stream: sync for {}/{} failed: {}: {}", sub.stream_name, sub.group_id,
                     o.error->code, o.error->message);
        return done(true, nullptr);
      }
      if (o.raw_result && !o.result) {
        // A group's list as the store's JSON text: spliced in as `data`, so a large group is
        // not built as a json::array on the engine thread. The wrapper is written with a null
        // `data`, which is its last field (`..."data":null}}`), and the text replaces it.
        std::string out;
        protocol::append_json(out, wrapper(sub.stream_name, sub.group_id, sub.item_id,
                                           json::object{{"type", "sync"}, {"data", nullptr}}));
        constexpr std::string_view kTail = "null}}";
        if (out.size() >= kTail.size() && out.ends_with(kTail)) {
          out.resize(out.size() - kTail.size());
          out.reserve(out.size() + o.raw_result->size() + 2);
          out += *o.raw_result;
          out += "}}";
          return done(true, engine::make_frame(std::move(out)));
        }
        o.materialise();  // never reached: the wrapper always ends with its event
      }
      json::object event{{"type", "sync"}, {"data", o.result ? *o.result : std::move(fallback)}};
      done(true, frame_of(wrapper(sub.stream_name, sub.group_id, sub.item_id, std::move(event))));
    };
    if (sub.item_id) {
      json::object in{
          {"stream_name", sub.stream_name}, {"group_id", sub.group_id}, {"item_id", *sub.item_id}};
      op_get(in, [reply](Outcome o) { reply(std::move(o), nullptr); });
    } else {
      json::object in{{"stream_name", sub.stream_name}, {"group_id", sub.group_id}};
      op_list(in, true, [reply](Outcome o) { reply(std::move(o), json::array()); });
    }
  }

  void add_type(const char* id, const char* description, engine::TriggerTypeHandler* h) {
    engine::TriggerType tt;
    tt.id = id;
    tt.description = description;
    eng_.register_builtin_trigger_type(std::move(tt), h);
  }

  // A wrapper published on Redis by any engine (this one included): pushed to this engine's
  // subscribers as the very text received.
  void deliver_from_redis(std::string_view payload) {
    if (!server_) return;
    boost::system::error_code ec;
    json::value v = json::parse(payload, ec);
    const json::object* w = ec ? nullptr : v.if_object();
    const json::value* stream = w ? w->if_contains("streamName") : nullptr;
    const json::value* group = w ? w->if_contains("groupId") : nullptr;
    const json::value* id = w ? w->if_contains("id") : nullptr;
    if (!stream || !stream->is_string() || !group || !group->is_string() ||
        (id && !id->is_null() && !id->is_string())) {
      spdlog::warn("iii-stream: ignored a malformed event on Redis channel {}", kEventsChannel);
      return;
    }
    std::optional<std::string> item;
    if (id && id->is_string()) item = std::string(id->get_string());
    server_->publish(std::string(stream->get_string()), std::string(group->get_string()), item,
                     engine::make_frame(std::string(payload)));
  }

  // An item changed (or a custom event was sent): fire matching `stream` triggers, then push to
  // subscribers. The event is serialised once and the buffer shared by every subscriber. With
  // the redis adapter it goes to every engine's subscribers through Redis Pub/Sub; `sent` (if
  // any) learns whether it was published.
  void emit(const std::string& stream, const std::string& group,
            const std::optional<std::string>& id, json::object event,
            std::function<void(std::optional<std::string>)> sent = nullptr) {
    json::object w = wrapper(stream, group, id, std::move(event));
    if (!eng_.bound_triggers("stream").empty())
      eng_.fire_type("stream", w, [&](const engine::Trigger& t) {
        const auto& c = t.config.get_object();
        if (c.at("stream_name").get_string() != stream) return false;
        if (auto* g = c.if_contains("group_id");
            g && g->is_string() && !g->get_string().empty() && g->get_string() != group)
          return false;
        if (auto* i = c.if_contains("item_id");
            i && i->is_string() && !i->get_string().empty() && i->get_string() != id.value_or(""))
          return false;
        return true;
      });
    if (remote_) {
      remote_->call_void("publish", json::object{{"topic", "stream.events"}, {"data", w}});
      if (sent) sent(std::nullopt);
      return;
    }
    if (bus_pub_) {
      std::string text;
      protocol::append_json(text, w);
      bus_pub_->command({"PUBLISH", kEventsChannel, std::move(text)},
                        [this, sent = std::move(sent)](storage::redis::Reply r) {
                          if (r.is_error() && !sent)
                            if (auto suppressed = publish_failures_.admit())
                              spdlog::warn("iii-stream: event not published: {}{}", r.str,
                                           *suppressed ? " (" + std::to_string(*suppressed) +
                                                             " similar failures not logged)"
                                                       : std::string());
                          if (sent)
                            sent(r.is_error() ? std::optional<std::string>(r.str) : std::nullopt);
                        });
      return;
    }
    if (server_) server_->publish(stream, group, id, frame_of(w));
    if (sent) sent(std::nullopt);
  }

  void emit_change(const std::string& stream, const std::string& group, const std::string& item,
                   bool existed, const json::value& new_value) {
    emit(stream, group, item,
         json::object{{"type", existed ? "update" : "create"}, {"data", new_value}});
  }

  // A worker serving `stream::<op>(<stream_name>)` overrides storage for that stream. It gets
  // exactly the operation's fields (`fields`), never the caller's extra keys.
  bool custom(const std::string& op, const std::string& stream, json::object fields,
              Completion done) {
    const std::string fid = "stream::" + op + "(" + stream + ")";
    if (eng_.functions().contains(fid)) {
      eng_.invoke(fid, std::move(fields), CallContext{}, std::move(done));
      return true;
    }
    // `bridge` adapter: the remote engine's stream::<op> holds the items.
    if (remote_) {
      remote_->call("stream::" + op, std::move(fields), std::nullopt, std::move(done));
      return true;
    }
    return false;
  }

  static json::object item_fields(const std::string& stream, const std::string& group,
                                  const std::string& item) {
    return json::object{{"stream_name", stream}, {"group_id", group}, {"item_id", item}};
  }

  void op_get(const json::object& in_obj, Completion done) {
    json::value input = in_obj;
    BuiltinInput in("stream::get", input);
    auto stream = in.required_string("stream_name");
    auto group = in.required_string("group_id");
    auto item = in.required_string("item_id");
    if (!in.ok()) return done(in.failure());
    if (custom("get", stream, item_fields(stream, group, item), done)) return;
    store_->get(index_of(stream, group), item, [done](auto r) {
      if (!r.ok())
        return done(Outcome::fail("STREAM_GET_ERROR", "Failed to get value: " + *r.error));
      done(r.value ? Outcome::ok(std::move(*r.value)) : Outcome::empty());
    });
  }

  // `raw`: the caller only forwards the result (to a worker, or spliced into a sync event), so
  // the store may hand it over as JSON text (Outcome::raw_result, built off the engine thread)
  // instead of a json::array.
  void op_list(const json::object& in_obj, bool raw, Completion done) {
    json::value input = in_obj;
    BuiltinInput in("stream::list", input);
    auto stream = in.required_string("stream_name");
    auto group = in.required_string("group_id");
    if (!in.ok()) return done(in.failure());
    if (custom("list", stream, json::object{{"stream_name", stream}, {"group_id", group}}, done))
      return;
    const std::string index = index_of(stream, group);
    if (raw) {
      store_->list_raw(index, [done](storage::Stored<storage::KvStore::RawList> r) {
        if (!r.ok())
          return done(Outcome::fail("STREAM_GET_GROUP_ERROR", "Failed to get group: " + *r.error));
        done(Outcome::ok_raw(std::move(r.value)));
      });
      return;
    }
    store_->list(index, [done](auto r) {
      if (!r.ok())
        return done(Outcome::fail("STREAM_GET_GROUP_ERROR", "Failed to get group: " + *r.error));
      done(Outcome::ok(json::array(r.value.begin(), r.value.end())));
    });
  }

  void add(const char* id, const char* description, engine::BuiltinHandler h) {
    engine::FunctionInfo info;
    info.id = id;
    info.description = description;
    eng_.register_builtin(std::move(info), name_, std::move(h));
  }

  void register_functions() {
    add("stream::get", "Get a stream item (absent result when missing)",
        [this](const CallContext&, json::value input, Completion done) {
          if (!input.is_object()) return done(BuiltinInput("stream::get", input, false).failure());
          op_get(input.get_object(), std::move(done));
        });
    add("stream::list", "List the items of a stream group",
        [this](const CallContext&, json::value input, Completion done) {
          if (!input.is_object()) return done(BuiltinInput("stream::list", input, false).failure());
          op_list(input.get_object(), true, std::move(done));
        });

    add("stream::set", "Set a stream item; returns {old_value, new_value}",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::set", input, false);
          auto stream = in.required_string("stream_name");
          auto group = in.required_string("group_id");
          auto item = in.required_string("item_id");
          const json::value* data = in.required_value("data");
          if (!in.ok()) return done(in.failure());
          auto after = [this, stream, group, item, done](std::optional<json::value> old,
                                                         json::value now) {
            const bool existed = old && !old->is_null();
            done(Outcome::ok(json::object{{"old_value", or_null(old)}, {"new_value", now}}));
            emit_change(stream, group, item, existed, now);
          };
          json::object fields = item_fields(stream, group, item);
          fields["data"] = *data;
          if (custom("set", stream, std::move(fields), [after, done](Outcome o) {
                const json::object* r = o.result ? o.result->if_object() : nullptr;
                if (o.error)
                  return done(Outcome::fail(
                      "STREAM_SET_ERROR",
                      "Failed to set value: Failed to invoke function: " + o.error->message));
                if (!r || !r->contains("new_value"))
                  return done(Outcome::fail("STREAM_SET_ERROR",
                                            "Failed to set value: Function returned no result"));
                std::optional<json::value> old;
                if (auto* v = r->if_contains("old_value")) old = *v;
                after(std::move(old), r->at("new_value"));
              }))
            return;
          json::value value = *data;
          store_->set(index_of(stream, group), item, std::move(value), [after, done](auto r) {
            if (!r.ok())
              return done(Outcome::fail("STREAM_SET_ERROR", "Failed to set value: " + *r.error));
            after(std::move(r.value.old_value), std::move(r.value.new_value));
          });
        });

    add("stream::delete", "Delete a stream item; returns {old_value}",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::delete", input, false);
          auto stream = in.required_string("stream_name");
          auto group = in.required_string("group_id");
          auto item = in.required_string("item_id");
          if (!in.ok()) return done(in.failure());
          auto after = [this, stream, group, item, done](std::optional<json::value> old) {
            done(Outcome::ok(json::object{{"old_value", or_null(old)}}));
            if (old && !old->is_null())  // deleting a missing item emits nothing
              emit(stream, group, item, json::object{{"type", "delete"}, {"data", *old}});
          };
          if (custom("delete", stream, item_fields(stream, group, item), [after, done](Outcome o) {
                if (o.error)
                  return done(Outcome::fail(
                      "STREAM_DELETE_ERROR",
                      "Failed to delete value: Failed to invoke function: " + o.error->message));
                const json::object* r = o.result ? o.result->if_object() : nullptr;
                std::optional<json::value> old;
                if (r)
                  if (auto* v = r->if_contains("old_value")) old = *v;
                after(std::move(old));
              }))
            return;
          store_->del(index_of(stream, group), item, [after, done](auto r) {
            if (!r.ok())
              return done(
                  Outcome::fail("STREAM_DELETE_ERROR", "Failed to delete value: " + *r.error));
            after(std::move(r.value));
          });
        });

    add("stream::update", "Apply atomic update ops to a stream item",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::update", input, false);
          auto stream = in.required_string("stream_name");
          auto group = in.required_string("group_id");
          auto item = in.required_string("item_id");
          const json::value* ops = in.required_value("ops", false);
          storage::ParsedUpdateOps parsed;
          if (in.ok()) {
            parsed = storage::parse_update_ops(*ops);
            if (!parsed.ok()) in.fail(parsed.error);
          }
          if (!in.ok()) return done(in.failure());
          json::object fields = item_fields(stream, group, item);
          fields["ops"] = *ops;
          if (custom("update", stream, std::move(fields),
                     [this, stream, group, item, done](Outcome o) {
                       if (o.error)
                         return done(
                             Outcome::fail("STREAM_UPDATE_ERROR",
                                           "Failed to update value: Failed to invoke function: " +
                                               o.error->message));
                       const json::object* r = o.result ? o.result->if_object() : nullptr;
                       if (!r || !r->contains("new_value"))
                         return done(
                             Outcome::fail("STREAM_UPDATE_ERROR",
                                           "Failed to update value: Function returned no result"));
                       // Normalised like a built-in update result: {old_value, new_value, errors?}.
                       const json::value* old = r->if_contains("old_value");
                       const bool existed = old && !old->is_null();
                       json::value now = r->at("new_value");
                       json::object out{{"old_value", old ? *old : json::value(nullptr)},
                                        {"new_value", now}};
                       if (const json::value* errs = r->if_contains("errors");
                           errs && errs->is_array() && !errs->get_array().empty())
                         out["errors"] = *errs;
                       done(Outcome::ok(std::move(out)));
                       emit_change(stream, group, item, existed, now);
                     }))
            return;
          store_->update(index_of(stream, group), item, std::move(parsed.ops),
                         [this, stream, group, item, done](auto r) {
                           if (!r.ok())
                             return done(Outcome::fail("STREAM_UPDATE_ERROR",
                                                       "Failed to update value: " + *r.error));
                           for (const auto& w : r.value.warnings)
                             spdlog::warn("stream::update: {}", w);
                           const bool existed = r.value.old_value && !r.value.old_value->is_null();
                           done(Outcome::ok(r.value.to_json()));
                           emit_change(stream, group, item, existed, r.value.new_value);
                         });
        });

    add("stream::list_groups", "List the groups of a stream",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::list_groups", input, false);
          auto stream = in.required_string("stream_name");
          if (!in.ok()) return done(in.failure());
          if (custom("list_groups", stream, json::object{{"stream_name", stream}}, done)) return;
          const std::string prefix = "stream:" + stream + ":";
          store_->list_indexes(prefix, [prefix, done](auto r) {
            if (!r.ok())
              return done(
                  Outcome::fail("STREAM_LIST_GROUPS_ERROR", "Failed to list groups: " + *r.error));
            json::array groups;
            for (const auto& idx : r.value)
              groups.push_back(json::value(idx.substr(prefix.size())));
            done(Outcome::ok(std::move(groups)));
          });
        });

    add("stream::list_all", "List every stream with its groups",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::list_all", input, false);
          if (!in.ok()) return done(in.failure());
          if (!store_)  // bridge adapter: like the original, nothing is listed
            return done(Outcome::ok(json::object{{"stream", json::array()}, {"count", 0}}));
          store_->list_indexes("stream:", [done](auto r) {
            if (!r.ok())
              return done(
                  Outcome::fail("STREAM_LIST_ALL_ERROR", "Failed to list stream: " + *r.error));
            // Index names are "stream:<name>:<group>"; a group may itself contain ':'.
            std::map<std::string, json::array> streams;
            for (const auto& idx : r.value) {
              const std::string rest = idx.substr(7);
              const auto colon = rest.find(':');
              if (colon == std::string::npos) continue;
              streams[rest.substr(0, colon)].push_back(json::value(rest.substr(colon + 1)));
            }
            json::array out;
            for (auto& [name, groups] : streams)
              out.push_back(json::object{{"id", name}, {"groups", std::move(groups)}});
            const size_t n = out.size();
            done(Outcome::ok(json::object{{"stream", std::move(out)}, {"count", n}}));
          });
        });

    add("stream::send", "Send a custom event to a stream group (or item) without storing it",
        [this](const CallContext&, json::value input, Completion done) {
          BuiltinInput in("stream::send", input, false);
          auto stream = in.required_string("stream_name");
          auto group = in.required_string("group_id");
          auto type = in.required_string("type");
          const json::value* data = in.required_value("data");
          auto id = in.optional_string("id");
          if (!in.ok()) return done(in.failure());
          json::object event{{"type", "event"},
                             {"event", json::object{{"type", type}, {"data", *data}}}};
          if (!bus_pub_) {
            done(Outcome::empty());
            return emit(stream, group, id, std::move(event));
          }
          // Through Redis the call fails when the event could not be published.
          emit(stream, group, id, std::move(event), [done](std::optional<std::string> error) {
            if (error)
              return done(Outcome::fail("STREAM_SEND_ERROR", "Failed to send event: " + *error));
            done(Outcome::empty());
          });
        });
  }

  engine::Runtime& rt_;
  engine::Engine& eng_;
  std::string name_;
  stream::StreamServerOptions server_opts_;
  std::optional<std::string> auth_function_;
  storage::StoreOptions store_opts_;
  std::unique_ptr<storage::KvStore> store_;
  std::optional<std::string> bridge_url_;
  std::shared_ptr<bridge::RemoteEngine> remote_;
  std::unique_ptr<stream::StreamServer> server_;
  std::unique_ptr<storage::redis::RedisClient> bus_pub_;  // redis adapter: PUBLISH
  std::unique_ptr<storage::redis::RedisClient> bus_sub_;  // redis adapter: SUBSCRIBE
  logging::WarningLimiter publish_failures_{5, std::chrono::seconds(10)};
  BoundSet stream_triggers_{true};
  BoundSet join_triggers_{false};
  BoundSet leave_triggers_{false};
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_stream_worker(const config::WorkerEntry& entry,
                                                          engine::Runtime& rt) {
  return std::make_unique<StreamWorker>(entry, rt);
}

}  // namespace iii::workers
