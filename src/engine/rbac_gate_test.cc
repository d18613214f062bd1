// The engine side of RBAC listeners (rbac_gate.cc) with in-memory connections: pausing while the
// auth function or a hook runs keeps frames in order, a connection that leaves meanwhile is
// forgotten, prefixes are stripped on the way to the executor.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "engine/engine.h"

namespace iii::engine {
namespace {

namespace json = boost::json;

class FakeConnection : public Connection {
 public:
  void send(SharedFrame f) override { frames.push_back(json::parse(*f).as_object()); }
  void close(uint16_t code, std::string_view reason) override {
    closed_with = code;
    close_reason = reason;
  }
  std::vector<json::object> of_type(std::string_view type) const {
    std::vector<json::object> out;
    for (auto& f : frames)
      if (f.at("type").as_string() == type) out.push_back(f);
    return out;
  }
  std::vector<json::object> frames;
  int closed_with = 0;
  std::string close_reason;
};

class RbacGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Built-in stand-ins for the auth function and a hook whose answers the test gives later.
    engine.register_builtin(FunctionInfo{"test::auth", {}, {}, {}, {}}, "test",
                            [this](const CallContext&, json::value in, Completion done) {
                              auth_inputs.push_back(std::move(in));
                              auth_done = std::move(done);
                            });
    engine.register_builtin(FunctionInfo{"test::on-fn", {}, {}, {}, {}}, "test",
                            [this](const CallContext&, json::value in, Completion done) {
                              hook_inputs.push_back(std::move(in));
                              hook_done = std::move(done);
                            });
    engine.register_builtin(FunctionInfo{"public::echo", {}, {}, {}, {}}, "test",
                            [](const CallContext&, json::value in, Completion done) {
                              done(Outcome::ok(std::move(in)));
                            });
  }

  std::shared_ptr<FakeConnection> open(std::shared_ptr<const ListenerPolicy> policy,
                                       uint64_t& handle) {
    auto conn = std::make_shared<FakeConnection>();
    ConnectionInfo info{"10.0.0.7",
                        "rbac-listener",
                        std::move(policy),
                        {{"X-Token", "t1"}, {"Host", "h"}},
                        "token=a%20b&x&=skip&token=c"};
    handle = engine.connect(conn, std::move(info));
    return conn;
  }
  void send(uint64_t h, const std::string& frame) { engine.on_frame(h, frame); }
  static std::string call(const std::string& inv, const std::string& fn) {
    return R"({"type":"invokefunction","invocation_id":")" + inv + R"(","function_id":")" + fn +
           R"(","data":{"v":1}})";
  }

  Engine engine;
  std::vector<json::value> auth_inputs, hook_inputs;
  Completion auth_done, hook_done;
};

constexpr const char* kInv1 = "11111111-2222-4333-8444-555555555551";
constexpr const char* kInv2 = "11111111-2222-4333-8444-555555555552";

std::shared_ptr<ListenerPolicy> rbac_policy() {
  auto p = std::make_shared<ListenerPolicy>();
  p->rbac = true;
  p->auth_function_id = "test::auth";
  ExposeRule r;
  r.id_glob = "public::*";
  p->expose.push_back(r);
  return p;
}

TEST_F(RbacGateTest, FramesBeforeTheAuthResultWaitAndKeepTheirOrder) {
  uint64_t h = 0;
  auto conn = open(rbac_policy(), h);
  ASSERT_NE(h, 0u);
  EXPECT_TRUE(conn->frames.empty()) << "no workerregistered before the AuthResult";
  ASSERT_EQ(auth_inputs.size(), 1u);
  EXPECT_EQ(json::serialize(auth_inputs[0]),
            R"({"headers":{"x-token":"t1","host":"h"},"query_params":{"token":["a%20b","c"],)"
            R"("x":[""]},"ip_address":"10.0.0.7"})");
  send(h, call(kInv1, "public::echo"));
  send(h, call(kInv2, "private::x"));
  EXPECT_TRUE(conn->frames.empty());

  auth_done(Outcome::ok(json::parse(R"({"context":{"u":1}})")));
  ASSERT_EQ(conn->frames.size(), 3u);
  EXPECT_EQ(conn->frames[0].at("type"), "workerregistered");
  EXPECT_EQ(conn->frames[1].at("invocation_id"), kInv1);
  EXPECT_EQ(conn->frames[1].at("result").at("v"), 1);
  EXPECT_EQ(conn->frames[2].at("invocation_id"), kInv2);
  EXPECT_EQ(conn->frames[2].at("error").at("code"), "FORBIDDEN");
  EXPECT_EQ(conn->frames[2].at("error").at("message"),
            "function 'private::x' not allowed (add to rbac.expose_functions)");
}

TEST_F(RbacGateTest, RefusedAuthSendsAuthErrorAndDropsLaterFrames) {
  uint64_t h = 0;
  auto conn = open(rbac_policy(), h);
  send(h, call(kInv1, "public::echo"));
  auth_done(Outcome::fail("invocation_failed", "bad token"));
  ASSERT_EQ(conn->frames.size(), 1u);
  EXPECT_EQ(conn->frames[0].at("type"), "error");
  EXPECT_EQ(conn->frames[0].at("error").at("code"), "AUTH_ERROR");
  EXPECT_NE(std::string(conn->frames[0].at("error").at("message").as_string()).find("bad token"),
            std::string::npos);
  EXPECT_EQ(conn->closed_with, 1008);
  EXPECT_EQ(conn->close_reason.rfind("AUTH_ERROR", 0), 0u);
  send(h, call(kInv2, "public::echo"));
  EXPECT_EQ(conn->frames.size(), 1u);
  engine.disconnect(h);
  EXPECT_EQ(engine.worker_count(), 0u);
}

TEST_F(RbacGateTest, ConnectionGoneBeforeTheAuthResultIsForgotten) {
  uint64_t h = 0;
  auto conn = open(rbac_policy(), h);
  engine.disconnect(h);
  auth_done(Outcome::ok(json::object()));  // must not touch the gone connection
  EXPECT_TRUE(conn->frames.empty());
  EXPECT_EQ(engine.worker_count(), 0u);
}

TEST_F(RbacGateTest, RegistrationHookPausesTheConnectionAndPrefixIsStrippedForTheExecutor) {
  auto policy = rbac_policy();
  policy->on_function_registration = "test::on-fn";
  uint64_t h = 0;
  auto conn = open(policy, h);
  auth_done(Outcome::ok(json::parse(R"({"function_registration_prefix":"pre"})")));
  send(h, R"({"type":"registerfunction","id":"echo","metadata":{"m":1}})");
  // While the hook runs, a call to the function being registered waits behind it.
  send(h, call(kInv1, "pre::echo"));
  ASSERT_EQ(hook_inputs.size(), 1u);
  EXPECT_EQ(json::serialize(hook_inputs[0]),
            R"({"function_id":"echo","description":null,"metadata":{"m":1},"context":{}})");
  EXPECT_EQ(engine.functions().serving("pre::echo"), nullptr);
  EXPECT_EQ(conn->of_type("invokefunction").size(), 0u);

  hook_done(Outcome::ok(json::object()));
  ASSERT_NE(engine.functions().serving("pre::echo"), nullptr);
  // The waiting call was processed after the registration; it is FORBIDDEN (not exposed), which
  // shows the frame was held, not dropped.
  auto results = conn->of_type("invocationresult");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].at("error").at("code"), "FORBIDDEN");

  // Another (trusted) connection calls it: the executor sees its own, unprefixed id.
  auto trusted = std::make_shared<FakeConnection>();
  const uint64_t t = engine.connect(trusted, ConnectionInfo{"127.0.0.1", "plain"});
  send(t, call(kInv2, "pre::echo"));
  auto invokes = conn->of_type("invokefunction");
  ASSERT_EQ(invokes.size(), 1u);
  EXPECT_EQ(invokes[0].at("function_id"), "echo");
  send(h, R"({"type":"invocationresult","invocation_id":")" +
              std::string(invokes[0].at("invocation_id").as_string()) +
              R"(","function_id":"echo","result":7})");
  auto answered = trusted->of_type("invocationresult");
  ASSERT_EQ(answered.size(), 1u);
  EXPECT_EQ(answered[0].at("function_id"), "pre::echo");
  EXPECT_EQ(answered[0].at("result"), 7);

  // Unregistering uses the prefix too.
  send(h, R"({"type":"unregisterfunction","id":"echo"})");
  EXPECT_EQ(engine.functions().serving("pre::echo"), nullptr);
}

TEST_F(RbacGateTest, HookRefusalDropsTheRegistrationAndResumes) {
  auto policy = rbac_policy();
  policy->on_function_registration = "test::on-fn";
  uint64_t h = 0;
  auto conn = open(policy, h);
  auth_done(Outcome::ok(json::object()));
  send(h, R"({"type":"registerfunction","id":"public::mine"})");
  send(h, call(kInv1, "public::echo"));
  hook_done(Outcome::ok(json::value("not an object")));
  EXPECT_EQ(engine.functions().serving("public::mine"), nullptr);
  ASSERT_EQ(conn->of_type("invocationresult").size(), 1u);
}

TEST_F(RbacGateTest, ConnectionsPerIpAndInvocationRate) {
  auto policy = std::make_shared<ListenerPolicy>();
  policy->limits.connections_per_ip = 1;
  policy->limits.invocations_per_second = 2;
  uint64_t a = 0, b = 0;
  auto ca = open(policy, a);
  auto cb = open(policy, b);
  EXPECT_NE(a, 0u);
  EXPECT_EQ(b, 0u);
  EXPECT_EQ(cb->closed_with, 1008);
  ASSERT_EQ(cb->of_type("error").size(), 1u);
  EXPECT_EQ(cb->of_type("error")[0].at("error").at("code"), "RATE_LIMITED");
  for (int i = 0; i < 5; ++i) send(a, call(kInv1, "public::echo"));
  int limited = 0;
  for (auto& r : ca->of_type("invocationresult"))
    limited += r.contains("error") && r.at("error").at("code") == "RATE_LIMITED";
  EXPECT_GE(limited, 3);
}

}  // namespace
}  // namespace iii::engine
