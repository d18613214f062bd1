#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "engine/engine.h"

namespace iii::engine {
namespace {

namespace json = boost::json;

class FakeConnection : public Connection {
 public:
  void send(SharedFrame f) override { frames.push_back(json::parse(*f).as_object()); }
  void close(uint16_t, std::string_view) override {}
  std::vector<json::object> of_type(std::string_view type) const {
    std::vector<json::object> out;
    for (auto& f : frames)
      if (f.at("type").as_string() == type) out.push_back(f);
    return out;
  }
  std::vector<json::object> frames;
};

struct Peer {
  std::shared_ptr<FakeConnection> conn = std::make_shared<FakeConnection>();
  uint64_t handle = 0;
};

class RecordingType : public TriggerTypeHandler {
 public:
  std::optional<std::string> bind(const Trigger& t) override {
    if (t.config.is_object() && t.config.as_object().contains("bad")) return "bad config";
    bound.push_back(t.id);
    return std::nullopt;
  }
  void unbind(const Trigger& t) override { std::erase(bound, t.id); }
  std::vector<std::string> bound;
};

class TriggersTest : public ::testing::Test {
 protected:
  Peer connect() {
    Peer p;
    p.handle = engine.connect(p.conn, ConnectionInfo{"127.0.0.1", "wm"});
    return p;
  }
  void send(const Peer& p, const std::string& f) { engine.on_frame(p.handle, f); }
  void register_type(const Peer& p, const std::string& id) {
    send(p, R"({"type":"registertriggertype","id":")" + id + R"(","description":"d"})");
  }
  void register_trigger(const Peer& p, const std::string& id, const std::string& type,
                        const std::string& config = "{}") {
    send(p, R"({"type":"registertrigger","message_type":"registertrigger","id":")" + id +
                R"(","trigger_type":")" + type + R"(","function_id":"fn","config":)" + config +
                "}");
  }
  Trigger::State state(const std::string& id) { return engine.triggers().at(id).state; }

  Engine engine;
};

TEST_F(TriggersTest, CustomTypeOwnerGetsTriggersInBothOrders) {
  Peer owner = connect(), user = connect();
  register_trigger(user, "t-before", "custom.tick");  // before the type exists: kept, pending
  EXPECT_EQ(state("t-before"), Trigger::State::kPending);
  register_type(owner, "custom.tick");
  register_trigger(user, "t-after", "custom.tick", R"({"every":5})");
  auto regs = owner.conn->of_type("registertrigger");
  ASSERT_EQ(regs.size(), 2u);
  EXPECT_EQ(regs[0].at("id").as_string(), "t-before");
  EXPECT_EQ(regs[1].at("id").as_string(), "t-after");
  EXPECT_EQ(regs[1].at("config").at("every").as_int64(), 5);
  EXPECT_EQ(regs[1].at("function_id").as_string(), "fn");
  EXPECT_EQ(state("t-after"), Trigger::State::kBound);
}

TEST_F(TriggersTest, OwnerReconnectGetsEveryTriggerReplayed) {
  Peer owner = connect(), user = connect();
  register_type(owner, "custom.tick");
  register_trigger(user, "t1", "custom.tick");
  engine.disconnect(owner.handle);
  EXPECT_EQ(state("t1"), Trigger::State::kPending);
  EXPECT_TRUE(engine.trigger_types().find("custom.tick") == engine.trigger_types().end());
  Peer owner2 = connect();
  register_type(owner2, "custom.tick");
  ASSERT_EQ(owner2.conn->of_type("registertrigger").size(), 1u);
  EXPECT_EQ(state("t1"), Trigger::State::kBound);
}

TEST_F(TriggersTest, TypeOwnershipFailsOverToAnEarlierRegistrant) {
  Peer a = connect(), b = connect(), user = connect();
  register_type(a, "own.t");
  register_trigger(user, "x1", "own.t");
  register_type(b, "own.t");  // B takes over; A is told to stop firing x1
  EXPECT_EQ(a.conn->of_type("unregistertrigger").size(), 1u);
  EXPECT_EQ(b.conn->of_type("registertrigger").size(), 1u);
  engine.disconnect(b.handle);  // A still provides the type: it serves again
  EXPECT_EQ(engine.trigger_types().count("own.t"), 1u);
  EXPECT_EQ(a.conn->of_type("registertrigger").size(), 2u);
  EXPECT_EQ(state("x1"), Trigger::State::kBound);
}

TEST_F(TriggersTest, SameOwnerReRegisteringTheTypeGetsNoDuplicates) {
  Peer a = connect(), user = connect();
  register_type(a, "own.t");
  register_trigger(user, "x1", "own.t");
  register_type(a, "own.t");
  EXPECT_EQ(a.conn->of_type("registertrigger").size(), 1u);
}

TEST_F(TriggersTest, UnregisterTriggerIsForwardedToTheOwner) {
  Peer owner = connect(), user = connect();
  register_type(owner, "custom.tick");
  register_trigger(user, "t1", "custom.tick");
  send(user, R"({"type":"unregistertrigger","id":"t1","trigger_type":"custom.tick"})");
  auto un = owner.conn->of_type("unregistertrigger");
  ASSERT_EQ(un.size(), 1u);
  EXPECT_EQ(un[0].at("id").as_string(), "t1");
  EXPECT_EQ(un[0].at("trigger_type").as_string(), "custom.tick");
  EXPECT_EQ(engine.triggers().count("t1"), 0u);
}

TEST_F(TriggersTest, RegistrantDisconnectRemovesItsTriggers) {
  Peer owner = connect(), user = connect();
  register_type(owner, "custom.tick");
  register_trigger(user, "t1", "custom.tick");
  engine.disconnect(user.handle);
  EXPECT_EQ(engine.triggers().count("t1"), 0u);
  EXPECT_EQ(owner.conn->of_type("unregistertrigger").size(), 1u);
}

TEST_F(TriggersTest, ReRegistrationFromANewConnectionIsIdempotent) {
  Peer owner = connect(), user = connect();
  register_type(owner, "custom.tick");
  register_trigger(user, "t1", "custom.tick");
  Peer user2 = connect();  // the SDK reconnects and replays the same trigger id
  register_trigger(user2, "t1", "custom.tick");
  EXPECT_EQ(owner.conn->of_type("registertrigger").size(), 1u);
  engine.disconnect(user.handle);  // the old connection's cleanup must not remove it
  EXPECT_EQ(engine.triggers().count("t1"), 1u);
  EXPECT_EQ(owner.conn->of_type("unregistertrigger").size(), 0u);
}

TEST_F(TriggersTest, UnregisterTriggerTypeKeepsTriggersForALaterOwner) {
  Peer owner = connect(), user = connect();
  register_type(owner, "custom.tick");
  register_trigger(user, "t1", "custom.tick");
  send(user, R"({"type":"unregistertriggertype","id":"custom.tick"})");  // not the owner
  EXPECT_EQ(engine.trigger_types().count("custom.tick"), 1u);
  send(owner, R"({"type":"unregistertriggertype","id":"custom.tick","description":"d"})");
  EXPECT_EQ(engine.trigger_types().count("custom.tick"), 0u);
  EXPECT_EQ(state("t1"), Trigger::State::kPending);
  Peer other = connect();
  register_type(other, "custom.tick");
  EXPECT_EQ(other.conn->of_type("registertrigger").size(), 1u);
}

TEST_F(TriggersTest, BuiltinTypesCannotBeHijacked) {
  RecordingType builtin;
  TriggerType tt;
  tt.id = "engine::workers-available";
  engine.register_builtin_trigger_type(tt, &builtin);
  Peer w = connect();
  register_type(w, "http");  // reserved even though no http worker is loaded
  register_type(w, "engine::workers-available");
  EXPECT_EQ(engine.trigger_types().count("http"), 0u);
  EXPECT_EQ(engine.trigger_types().at("engine::workers-available").builtin, &builtin);
  register_trigger(w, "h1", "http", R"({"api_path":"x"})");
  EXPECT_EQ(state("h1"), Trigger::State::kPending);
}

TEST_F(TriggersTest, BuiltinTypeBindsValidatesAndUnbinds) {
  RecordingType builtin;
  TriggerType tt;
  tt.id = "rec";
  Peer w = connect();
  register_trigger(w, "early", "rec");
  engine.register_builtin_trigger_type(tt, &builtin);  // pending trigger binds when type appears
  EXPECT_EQ(builtin.bound, std::vector<std::string>{"early"});
  register_trigger(w, "bad", "rec", R"({"bad":true})");
  EXPECT_EQ(state("bad"), Trigger::State::kFailed);
  EXPECT_EQ(engine.triggers().at("bad").error, "bad config");
  engine.disconnect(w.handle);
  EXPECT_TRUE(builtin.bound.empty());
}

TEST_F(TriggersTest, ConditionFunctionsPassSkipAndFail) {
  std::vector<std::string> calls;
  auto add = [&](const std::string& id, std::function<Outcome()> result) {
    engine.register_builtin(FunctionInfo{id, {}, {}, {}, {}}, "x",
                            [&calls, id, result](const CallContext&, json::value, Completion d) {
                              calls.push_back(id);
                              d(result());
                            });
  };
  add("handler", [] { return Outcome::ok(json::value("ran")); });
  add("cond::true", [] { return Outcome::ok(json::value(true)); });
  add("cond::null", [] { return Outcome::ok(nullptr); });
  add("cond::false", [] { return Outcome::ok(json::value(false)); });
  add("cond::string-false", [] { return Outcome::ok(json::value("false")); });
  add("cond::error", [] { return Outcome::fail("invocation_failed", "nope"); });

  auto fire = [&](const std::string& cond) {
    Trigger t;
    t.id = "t";
    t.function_id = "handler";
    t.config = json::object{{"condition_function_id", cond}};
    std::optional<FireStatus> status;
    engine.fire(t, json::object{{"x", 1}}, [&](FireStatus s, Outcome) { status = s; });
    return status;
  };
  EXPECT_EQ(fire("cond::true"), FireStatus::kInvoked);
  EXPECT_EQ(fire("cond::null"), FireStatus::kInvoked);
  EXPECT_EQ(fire("cond::string-false"), FireStatus::kInvoked);
  EXPECT_EQ(fire("cond::false"), FireStatus::kSkipped);
  EXPECT_EQ(fire("cond::error"), FireStatus::kConditionFailed);
  EXPECT_EQ(fire("cond::missing"), FireStatus::kConditionFailed);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "handler"), 3);
}

TEST_F(TriggersTest, ServicesAreListedAndRemovedWithTheirWorker) {
  Peer w = connect();
  send(w, R"({"type":"registerservice","id":"billing","description":"money"})");
  send(
      w,
      R"({"type":"registerservice","id":"billing.invoices","name":"invoices","parent_service_id":"billing"})");
  auto list = engine.list_services().at("services").as_array();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].at("name").as_string(), "billing");  // name defaults to id
  EXPECT_EQ(list[1].at("parent_service_id").as_string(), "billing");
  engine.disconnect(w.handle);
  EXPECT_TRUE(engine.list_services().at("services").as_array().empty());
}

TEST_F(TriggersTest, FunctionSetChangesAreNotifiedOncePerChange) {
  int notified = 0;
  engine.on_functions_changed([&] { ++notified; });
  Peer w = connect();
  send(w, R"({"type":"registerfunction","id":"a"})");
  EXPECT_EQ(notified, 1);
  send(w, R"({"type":"registerfunction","id":"a","description":"again"})");  // same set
  EXPECT_EQ(notified, 1);
  engine.disconnect(w.handle);
  EXPECT_EQ(notified, 2);
}

TEST_F(TriggersTest, ListsHideInternalEntriesUnlessAsked) {
  RecordingType builtin;
  TriggerType tt;
  tt.id = "engine::functions-available";
  engine.register_builtin_trigger_type(tt, &builtin);
  Peer w = connect();
  register_trigger(w, "t1", "engine::functions-available");
  EXPECT_EQ(engine.list_trigger_types(false).at("trigger_types").as_array().size(), 0u);
  EXPECT_EQ(engine.list_trigger_types(true).at("trigger_types").as_array().size(), 1u);
  auto triggers = engine.list_triggers(false).at("triggers").as_array();
  ASSERT_EQ(triggers.size(), 1u);
  EXPECT_EQ(triggers[0].at("state").as_string(), "bound");
}

TEST_F(TriggersTest, OnlyTheOwnerCanReplaceOrUnregisterATrigger) {
  Peer owner = connect(), other = connect(), type_owner = connect();
  register_type(type_owner, "custom");
  register_trigger(owner, "t1", "custom", R"({"v":1})");
  // Another worker cannot rebind it...
  register_trigger(other, "t1", "custom", R"({"v":2})");
  EXPECT_EQ(engine.triggers().at("t1").config.at("v").as_int64(), 1);
  EXPECT_EQ(engine.triggers().at("t1").owner, owner.handle);
  auto refusals = other.conn->of_type("triggerregistrationresult");
  ASSERT_EQ(refusals.size(), 1u);
  EXPECT_EQ(refusals[0].at("error").at("code").as_string(), "forbidden");
  // ...nor remove it.
  send(other, R"({"type":"unregistertrigger","id":"t1"})");
  EXPECT_TRUE(engine.triggers().count("t1"));
  // The owner can do both.
  register_trigger(owner, "t1", "custom", R"({"v":3})");
  EXPECT_EQ(engine.triggers().at("t1").config.at("v").as_int64(), 3);
  send(owner, R"({"type":"unregistertrigger","id":"t1"})");
  EXPECT_FALSE(engine.triggers().count("t1"));
}

TEST_F(TriggersTest, BuiltinTriggersCannotBeTakenOverOrRemoved) {
  RecordingType handler;
  TriggerType tt;
  tt.id = "state";
  engine.register_builtin_trigger_type(std::move(tt), &handler);
  Trigger t;
  t.id = "in-process";
  t.trigger_type = "state";
  t.function_id = "fn";
  t.config = json::object();
  engine.register_trigger(std::move(t));
  Peer w = connect();
  register_trigger(w, "in-process", "state");  // identical binding: still refused
  EXPECT_EQ(engine.triggers().at("in-process").owner, 0u);
  send(w, R"({"type":"unregistertrigger","id":"in-process"})");
  EXPECT_TRUE(engine.triggers().count("in-process"));
  engine.disconnect(w.handle);
  EXPECT_TRUE(engine.triggers().count("in-process"));
}

TEST_F(TriggersTest, FireTypeFiresMatchingBoundTriggersOfABuiltinType) {
  RecordingType handler;
  TriggerType tt;
  tt.id = "tick";
  engine.register_builtin_trigger_type(std::move(tt), &handler);
  Peer w = connect();
  send(w, R"({"type":"registerfunction","id":"fn"})");
  register_trigger(w, "a", "tick", R"({"k":1})");
  register_trigger(w, "b", "tick", R"({"k":2})");
  register_trigger(w, "c", "tick", R"({"bad":true})");  // refused by the handler: never fired
  EXPECT_EQ(engine.bound_triggers("tick"), (std::vector<std::string>{"a", "b"}));
  std::vector<std::string> done;
  engine.fire_type(
      "tick", json::value(7), [](const Trigger& t) { return t.config.at("k").as_int64() == 2; },
      [&](const std::string& id, FireStatus st, Outcome) {
        done.push_back(id);
        EXPECT_EQ(st, FireStatus::kInvoked);
      });
  auto invokes = w.conn->of_type("invokefunction");
  ASSERT_EQ(invokes.size(), 1u);
  EXPECT_EQ(invokes[0].at("data").as_int64(), 7);
  engine.on_frame(w.handle, R"({"type":"invocationresult","invocation_id":")" +
                                std::string(invokes[0].at("invocation_id").as_string()) +
                                R"(","function_id":"fn","result":1})");
  EXPECT_EQ(done, (std::vector<std::string>{"b"}));
  send(w, R"({"type":"unregistertrigger","id":"b"})");
  EXPECT_EQ(engine.bound_triggers("tick"), (std::vector<std::string>{"a"}));
  engine.disconnect(w.handle);
  EXPECT_TRUE(engine.bound_triggers("tick").empty());
  EXPECT_TRUE(handler.bound.empty());
}

}  // namespace
}  // namespace iii::engine
