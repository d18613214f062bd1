#include "engine/engine.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace iii::engine {
namespace {

namespace json = boost::json;

class FakeConnection : public Connection {
 public:
  void send(SharedFrame f) override { frames.push_back(json::parse(*f).as_object()); }
  void close(uint16_t code, std::string_view) override { closed_with = code; }
  void hold() override { ++holds; }
  void release() override { ++releases; }
  int holds = 0, releases = 0;

  // Pops the oldest frame of the given type.
  json::object take(std::string_view type) {
    for (auto it = frames.begin(); it != frames.end(); ++it) {
      if (it->at("type").as_string() == type) {
        json::object o = std::move(*it);
        frames.erase(it);
        return o;
      }
    }
    ADD_FAILURE() << "no frame of type " << type;
    return {};
  }
  size_t count(std::string_view type) const {
    size_t n = 0;
    for (auto& f : frames) n += f.at("type").as_string() == type;
    return n;
  }

  std::vector<json::object> frames;
  int closed_with = 0;
};

constexpr const char* kInv = "11111111-2222-4333-8444-555555555555";

struct Peer {
  std::shared_ptr<FakeConnection> conn = std::make_shared<FakeConnection>();
  uint64_t handle = 0;
  std::string id;
};

class EngineTest : public ::testing::Test {
 protected:
  Peer connect() {
    Peer p;
    p.handle = engine.connect(p.conn, ConnectionInfo{"127.0.0.1", "iii-worker-manager"});
    p.id = std::string(p.conn->take("workerregistered").at("worker_id").as_string());
    return p;
  }
  void send(const Peer& p, const std::string& frame) { engine.on_frame(p.handle, frame); }
  void register_fn(const Peer& p, const std::string& id) {
    send(p, R"({"type":"registerfunction","id":")" + id + "\"}");
  }
  void call(const Peer& p, const std::string& fn, const std::string& data,
            const std::string& inv = kInv) {
    send(p, R"({"type":"invokefunction","invocation_id":")" + inv + R"(","function_id":")" + fn +
                R"(","data":)" + data + "}");
  }
  void answer(const Peer& p, const json::object& invoke, const std::string& body) {
    send(p, R"({"type":"invocationresult","invocation_id":")" +
                std::string(invoke.at("invocation_id").as_string()) + R"(","function_id":")" +
                std::string(invoke.at("function_id").as_string()) + "\"," + body + "}");
  }

  Engine engine;
};

TEST_F(EngineTest, ReattachTakesOverRegistrationsAndInvocationsOfTheOldConnection) {
  Peer caller = connect();
  Peer old;
  old.handle = engine.connect(old.conn, ConnectionInfo{"127.0.0.1", "iii-worker-manager"});
  const json::object hello = old.conn->take("workerregistered");
  old.id = std::string(hello.at("worker_id").as_string());
  const std::string token(hello.at("reattach_token").as_string());
  register_fn(old, "svc::f");
  call(caller, "svc::f", "{}");
  const json::object inv = old.conn->take("invokefunction");

  // A wrong token changes nothing.
  Peer fresh = connect();
  send(fresh, R"({"type":"reattach","previous_worker_id":")" + old.id +
                  R"(","reattach_token":"00000000-0000-4000-8000-000000000000"})");
  EXPECT_EQ(old.conn->closed_with, 0);
  ASSERT_NE(engine.find_worker(old.handle), nullptr);

  send(fresh, R"({"type":"reattach","previous_worker_id":")" + old.id + R"(","reattach_token":")" +
                  token + "\"}");
  EXPECT_EQ(old.conn->closed_with, 1000);
  EXPECT_EQ(engine.find_worker(old.handle), nullptr);
  EXPECT_EQ(engine.functions().serving("svc::f")->worker, fresh.handle);
  // The call the old connection was executing is answered from the new one.
  answer(fresh, inv, R"("result":42)");
  EXPECT_EQ(caller.conn->take("invocationresult").at("result").as_int64(), 42);
  // And new calls go there.
  call(caller, "svc::f", "{}", "11111111-2222-4333-8444-666666666666");
  EXPECT_EQ(fresh.conn->count("invokefunction"), 1u);
  // Caller metadata is passed on to the executor.
  send(caller, R"({"type":"invokefunction","function_id":"svc::f","data":{},"metadata":{"m":1}})");
  fresh.conn->take("invokefunction");
  EXPECT_EQ(json::serialize(fresh.conn->take("invokefunction").at("metadata")), R"({"m":1})");
}

TEST_F(EngineTest, RoutesSyncCallAndInjectsCallerId) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "math::add");
  call(caller, "math::add", R"({"a":1})");
  auto inv = worker.conn->take("invokefunction");
  EXPECT_EQ(inv.at("invocation_id").as_string(), kInv);
  EXPECT_EQ(inv.at("data").at("_caller_worker_id").as_string(), caller.id);
  EXPECT_FALSE(inv.contains("action"));
  EXPECT_EQ(engine.pending_count(), 1u);
  answer(worker, inv, R"("result":{"sum":3})");
  auto res = caller.conn->take("invocationresult");
  EXPECT_EQ(res.at("invocation_id").as_string(), kInv);
  EXPECT_EQ(res.at("result").at("sum").as_int64(), 3);
  EXPECT_EQ(engine.pending_count(), 0u);
}

TEST_F(EngineTest, NonObjectPayloadIsUntouched) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  call(caller, "f", "[1,2]");
  EXPECT_EQ(json::serialize(worker.conn->take("invokefunction").at("data")), "[1,2]");
}

TEST_F(EngineTest, AbsentResultStaysAbsentAndNullStaysNull) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  call(caller, "f", "1");
  answer(worker, worker.conn->take("invokefunction"), R"("x":1)");
  EXPECT_FALSE(caller.conn->take("invocationresult").contains("result"));
  call(caller, "f", "1");
  answer(worker, worker.conn->take("invokefunction"), R"("result":null)");
  auto r = caller.conn->take("invocationresult");
  ASSERT_TRUE(r.contains("result"));
  EXPECT_TRUE(r.at("result").is_null());
}

TEST_F(EngineTest, HandlerErrorsPassThroughUnchanged) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  call(caller, "f", "{}");
  answer(worker, worker.conn->take("invokefunction"),
         R"("error":{"code":"invocation_failed","message":"boom","stacktrace":"at x"})");
  auto err = caller.conn->take("invocationresult").at("error").as_object();
  EXPECT_EQ(err.at("code").as_string(), "invocation_failed");
  EXPECT_EQ(err.at("message").as_string(), "boom");
  EXPECT_EQ(err.at("stacktrace").as_string(), "at x");
}

TEST_F(EngineTest, UnknownFunctionIsReported) {
  Peer caller = connect();
  call(caller, "nope", "{}");
  auto err = caller.conn->take("invocationresult").at("error").as_object();
  EXPECT_EQ(err.at("code").as_string(), "function_not_found");
  EXPECT_EQ(err.at("message").as_string(), "Function nope not found");
}

TEST_F(EngineTest, VoidCallsGetNoReplyEvenOnError) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  send(caller, R"({"type":"invokefunction","invocation_id":")" + std::string(kInv) +
                   R"(","function_id":"f","data":{},"action":{"type":"void"}})");
  auto inv = worker.conn->take("invokefunction");
  EXPECT_EQ(inv.at("data").at("_caller_worker_id").as_string(), caller.id);
  answer(worker, inv, R"("result":1)");
  send(caller,
       R"({"type":"invokefunction","function_id":"missing","data":{},"action":{"type":"void"}})");
  EXPECT_EQ(caller.conn->count("invocationresult"), 0u);
}

TEST_F(EngineTest, ExecutorDisconnectStopsWaitingCallers) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "slow");
  call(caller, "slow", "{}");
  worker.conn->take("invokefunction");
  engine.disconnect(worker.handle);
  auto err = caller.conn->take("invocationresult").at("error").as_object();
  EXPECT_EQ(err.at("code").as_string(), "invocation_stopped");
  EXPECT_EQ(engine.pending_count(), 0u);
}

TEST_F(EngineTest, CallerDisconnectDropsTheReplyPathOnly) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "slow");
  call(caller, "slow", "{}");
  auto inv = worker.conn->take("invokefunction");
  engine.disconnect(caller.handle);
  answer(worker, inv, R"("result":1)");  // must not crash or reach anyone
  EXPECT_EQ(engine.pending_count(), 0u);
}

TEST_F(EngineTest, OnlyTheExecutorCanCompleteAnInvocation) {
  Peer worker = connect(), caller = connect(), intruder = connect();
  register_fn(worker, "f");
  call(caller, "f", "{}");
  auto inv = worker.conn->take("invokefunction");
  answer(intruder, inv, R"("result":"forged")");
  EXPECT_EQ(caller.conn->count("invocationresult"), 0u);
  answer(worker, inv, R"("result":"real")");
  EXPECT_EQ(caller.conn->take("invocationresult").at("result").as_string(), "real");
}

TEST_F(EngineTest, ReusedInvocationIdGetsAFreshWireId) {
  Peer worker = connect(), a = connect(), b = connect();
  register_fn(worker, "f");
  call(a, "f", R"({"n":1})");
  call(b, "f", R"({"n":2})");
  auto i1 = worker.conn->take("invokefunction");
  auto i2 = worker.conn->take("invokefunction");
  EXPECT_NE(i1.at("invocation_id").as_string(), i2.at("invocation_id").as_string());
  answer(worker, i2, R"("result":2)");
  answer(worker, i1, R"("result":1)");
  auto ra = a.conn->take("invocationresult"), rb = b.conn->take("invocationresult");
  EXPECT_EQ(ra.at("invocation_id").as_string(), kInv);  // each caller sees its own id
  EXPECT_EQ(rb.at("invocation_id").as_string(), kInv);
  EXPECT_EQ(ra.at("result").as_int64(), 1);
  EXPECT_EQ(rb.at("result").as_int64(), 2);
}

TEST_F(EngineTest, DuplicateRegistrationFailsOverToRemainingWorker) {
  Peer w1 = connect(), w2 = connect(), caller = connect();
  register_fn(w1, "f");
  register_fn(w2, "f");
  call(caller, "f", "{}");
  EXPECT_EQ(w2.conn->count("invokefunction"), 1u);
  EXPECT_EQ(w1.conn->count("invokefunction"), 0u);
  engine.disconnect(w2.handle);
  EXPECT_EQ(caller.conn->take("invocationresult").at("error").at("code").as_string(),
            "invocation_stopped");
  call(caller, "f", "{}");
  answer(w1, w1.conn->take("invokefunction"), R"("result":"w1")");
  EXPECT_EQ(caller.conn->take("invocationresult").at("result").as_string(), "w1");
}

TEST_F(EngineTest, UnregisterOnlyAffectsOwnRegistration) {
  Peer w1 = connect(), w2 = connect(), caller = connect();
  register_fn(w1, "f");
  send(w2, R"({"type":"unregisterfunction","id":"f"})");
  EXPECT_TRUE(engine.functions().contains("f"));
  send(w1, R"({"type":"unregisterfunction","id":"f"})");
  EXPECT_FALSE(engine.functions().contains("f"));
}

TEST_F(EngineTest, EnqueueWithoutQueueWorkerIsAClearError) {
  Peer caller = connect();
  send(caller, R"({"type":"invokefunction","invocation_id":")" + std::string(kInv) +
                   R"(","function_id":"f","data":{},"action":{"type":"enqueue","queue":"q"}})");
  auto err = caller.conn->take("invocationresult").at("error").as_object();
  EXPECT_EQ(err.at("code").as_string(), "enqueue_error");
}

TEST_F(EngineTest, BadFramesGetWarningsAndAddressableErrors) {
  Peer caller = connect();
  send(caller, "{oops");
  send(caller, R"({"type":"teleport"})");
  send(caller, R"({"type":"registerfunction"})");
  EXPECT_EQ(caller.conn->frames.size(), 0u);
  send(caller,
       R"({"type":"invokefunction","invocation_id":"not-a-uuid","function_id":"f","data":1})");
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(r.at("invocation_id").as_string(), "not-a-uuid");
  EXPECT_EQ(r.at("error").at("code").as_string(), "invalid_message");
  EXPECT_EQ(engine.stats().decode_errors, 4u);
}

TEST_F(EngineTest, PingGetsPongAndTelemetryIsAccepted) {
  Peer w = connect();
  send(w, R"({"type":"ping"})");
  EXPECT_EQ(w.conn->count("pong"), 1u);
  send(w, "OTLP{}");
  EXPECT_EQ(engine.stats().telemetry_frames, 1u);
}

TEST_F(EngineTest, BuiltinsRunInProcessAndCannotBeHijacked) {
  engine.add_builtin_worker({"iii-engine-functions", "iii-engine-functions", true, {}});
  engine.register_builtin(FunctionInfo{"engine::echo", {}, {}, {}, {}}, "iii-engine-functions",
                          [](const CallContext& ctx, json::value in, Completion done) {
                            done(Outcome::ok(std::move(in)));
                          });
  Peer caller = connect();
  register_fn(caller, "engine::echo");
  call(caller, "engine::echo", R"({"x":1})");
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(r.at("result").at("x").as_int64(), 1);
  EXPECT_EQ(r.at("result").at("_caller_worker_id").as_string(), caller.id);
}

// A built-in may answer with pre-serialised JSON: a worker caller gets it verbatim as
// `result`, an in-process caller gets it parsed into `result`.
TEST_F(EngineTest, RawResultsReachWorkersVerbatimAndInternalCallersParsed) {
  engine.add_builtin_worker({"iii-engine-functions", "iii-engine-functions", true, {}});
  const auto text = std::make_shared<const std::string>(R"([{"a":1},"x\n",2.5E0,null])");
  engine.register_builtin(
      FunctionInfo{"engine::raw", {}, {}, {}, {}}, "iii-engine-functions",
      [text](const CallContext&, json::value, Completion done) { done(Outcome::ok_raw(text)); });
  Peer caller = connect();
  call(caller, "engine::raw", "{}");
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(json::serialize(r.at("result")), *text);
  EXPECT_EQ(r.at("invocation_id").as_string(), kInv);

  std::optional<Outcome> got;
  engine.invoke("engine::raw", json::object(), CallContext{},
                [&](Outcome o) { got = std::move(o); });
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->raw_result);
  ASSERT_TRUE(got->result);
  EXPECT_EQ(json::serialize(*got->result), *text);
  EXPECT_FALSE(got->error);
}

TEST_F(EngineTest, InternalInvokeCompletes) {
  Peer worker = connect();
  register_fn(worker, "f");
  std::optional<Outcome> got;
  engine.invoke("f", json::value(5), CallContext{}, [&](Outcome o) { got = std::move(o); });
  auto inv = worker.conn->take("invokefunction");
  EXPECT_EQ(inv.at("data").as_int64(), 5);
  answer(worker, inv, R"("result":6)");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->result->as_int64(), 6);
}

TEST_F(EngineTest, ShutdownStopsPendingAndClosesConnections) {
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  call(caller, "f", "{}");
  engine.shutdown();
  EXPECT_EQ(caller.conn->take("invocationresult").at("error").at("code").as_string(),
            "invocation_stopped");
  EXPECT_EQ(worker.conn->closed_with, 1012);
  call(caller, "f", "{}", "99999999-2222-4333-8444-555555555555");
  EXPECT_EQ(caller.conn->take("invocationresult").at("error").at("code").as_string(),
            "invocation_stopped");
}

TEST_F(EngineTest, WorkerMetadataAndListing) {
  Peer w = connect();
  register_fn(w, "svc::a");
  engine.add_builtin_worker({"iii-engine-functions", "iii-engine-functions", true, {}});
  auto* worker = engine.find_worker(w.handle);
  worker->name = "node-worker";
  worker->runtime = "node";
  worker->pid = 42;
  auto list = engine.list_workers(std::nullopt);
  auto& rows = list.at("workers").as_array();
  ASSERT_EQ(rows.size(), 2u);
  bool found = false;
  for (auto& r : rows) {
    if (r.at("id").as_string() != w.id) continue;
    found = true;
    EXPECT_EQ(r.at("pid").as_int64(), 42);
    EXPECT_EQ(r.at("function_count").as_uint64(), 1u);
    EXPECT_EQ(r.at("status").as_string(), "connected");
  }
  EXPECT_TRUE(found);
  auto fns = engine.list_functions(false);
  ASSERT_EQ(fns.at("functions").as_array().size(), 1u);
  EXPECT_TRUE(fns.at("functions").as_array()[0].at("description").is_null());
}

// ---- engine-side deadlines ----

TEST_F(EngineTest, InvocationPastItsDeadlineIsAnsweredTimeoutAndFreed) {
  std::vector<Engine::Clock::time_point> armed;
  engine.set_timer([&](Engine::Clock::time_point when) { armed.push_back(when); });
  engine.set_invocation_timeout(std::chrono::milliseconds(500));
  Peer worker = connect(), caller = connect();
  register_fn(worker, "slow::fn");
  const auto before = Engine::Clock::now();
  call(caller, "slow::fn", "{}");
  auto inv = worker.conn->take("invokefunction");
  ASSERT_EQ(armed.size(), 1u);
  EXPECT_GE(armed[0], before + std::chrono::milliseconds(500));
  engine.expire_due(armed[0] - std::chrono::milliseconds(1));  // not yet
  EXPECT_EQ(caller.conn->count("invocationresult"), 0u);
  engine.expire_due(armed[0]);
  auto err = caller.conn->take("invocationresult").at("error").as_object();
  EXPECT_EQ(err.at("code").as_string(), "timeout");
  EXPECT_NE(err.at("message").as_string().find("slow::fn"), json::string::npos);
  EXPECT_NE(err.at("message").as_string().find("500 ms"), json::string::npos);
  EXPECT_EQ(engine.pending_count(), 0u);
  EXPECT_EQ(engine.deadline_count(), 0u);
  EXPECT_EQ(engine.find_worker(worker.handle)->executing.size(), 0u);
  EXPECT_EQ(engine.find_worker(caller.handle)->waiting.size(), 0u);
  // The late answer is dropped, and the caller gets nothing more.
  answer(worker, inv, R"("result":1)");
  EXPECT_EQ(caller.conn->count("invocationresult"), 0u);
  EXPECT_EQ(engine.stats().late_results, 1u);
  EXPECT_EQ(engine.stats().timeouts, 1u);
}

TEST_F(EngineTest, AnsweredInvocationsLeaveNoDeadlineBehind) {
  int arms = 0;
  engine.set_timer([&](Engine::Clock::time_point) { ++arms; });
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  for (int i = 0; i < 100; ++i) {
    call(caller, "f", "{}");
    answer(worker, worker.conn->take("invokefunction"), R"("result":1)");
    caller.conn->take("invocationresult");
  }
  EXPECT_EQ(engine.deadline_count(), 0u);
  EXPECT_EQ(arms, 1);  // later deadlines than the armed one never re-arm the timer
}

TEST_F(EngineTest, FunctionMetadataTimeoutShortensTheEngineLimit) {
  std::vector<Engine::Clock::time_point> armed;
  engine.set_timer([&](Engine::Clock::time_point when) { armed.push_back(when); });
  Peer worker = connect(), caller = connect();
  send(worker, R"({"type":"registerfunction","id":"quick","metadata":{"timeout_ms":50}})");
  send(worker, R"({"type":"registerfunction","id":"lazy","metadata":{"timeout_ms":"soon"}})");
  const auto t0 = Engine::Clock::now();
  call(caller, "lazy", "{}", "aaaaaaaa-2222-4333-8444-555555555555");
  call(caller, "quick", "{}", "bbbbbbbb-2222-4333-8444-555555555555");
  ASSERT_EQ(armed.size(), 2u);  // the quick one is earlier: the timer moves
  EXPECT_LT(armed[1], t0 + std::chrono::milliseconds(1000));
  EXPECT_GE(armed[0], t0 + std::chrono::milliseconds(300000));  // invalid value: engine default
  engine.expire_due(armed[1]);
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(r.at("invocation_id").as_string(), "bbbbbbbb-2222-4333-8444-555555555555");
  EXPECT_EQ(r.at("error").at("code").as_string(), "timeout");
  EXPECT_EQ(engine.pending_count(), 1u);
  ASSERT_EQ(armed.size(), 3u);  // re-armed for the remaining deadline
  EXPECT_EQ(armed[2], armed[0]);
}

TEST_F(EngineTest, ZeroTimeoutMeansNoDeadline) {
  engine.set_invocation_timeout(std::chrono::milliseconds(0));
  Peer worker = connect(), caller = connect();
  register_fn(worker, "f");
  call(caller, "f", "{}");
  EXPECT_EQ(engine.deadline_count(), 0u);
  engine.expire_due(Engine::Clock::now() + std::chrono::hours(24 * 365));
  EXPECT_EQ(engine.pending_count(), 1u);
}

TEST_F(EngineTest, InternalCallersGetTimeoutsToo) {
  engine.set_invocation_timeout(std::chrono::milliseconds(10));
  Peer worker = connect();
  register_fn(worker, "f");
  std::optional<Outcome> got;
  engine.invoke("f", json::value(1), CallContext{}, [&](Outcome o) { got = std::move(o); });
  engine.expire_due(Engine::Clock::now() + std::chrono::seconds(1));
  ASSERT_TRUE(got);
  ASSERT_TRUE(got->error);
  EXPECT_EQ(got->error->code, "timeout");
}

// ---- JSON depth ----

TEST_F(EngineTest, TooDeepInvokeIsAnsweredInvalidMessage) {
  Peer caller = connect();
  const std::string deep = std::string(200, '[') + std::string(200, ']');
  call(caller, "f", deep);
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(r.at("invocation_id").as_string(), kInv);
  EXPECT_EQ(r.at("error").at("code").as_string(), "invalid_message");
  EXPECT_NE(r.at("error").at("message").as_string().find("128"), json::string::npos);
}

// ---- shutdown ----

TEST_F(EngineTest, ConnectionsArrivingDuringShutdownAreRefused) {
  engine.stop_accepting();
  auto conn = std::make_shared<FakeConnection>();
  EXPECT_EQ(engine.connect(conn, ConnectionInfo{"127.0.0.1", "iii-worker-manager"}), 0u);
  EXPECT_EQ(conn->closed_with, 1012);
  EXPECT_TRUE(conn->frames.empty());
  EXPECT_EQ(engine.worker_count(), 0u);
}

// ---- hooks for built-in workers ----

TEST_F(EngineTest, ActionHandlerOwnsEnqueue) {
  std::vector<std::string> queued;
  engine.set_action_handler(
      protocol::ActionType::kEnqueue,
      [&](const CallContext& ctx, protocol::InvokeFunction&& m, Completion done) {
        queued.push_back(m.action.queue + ":" + m.function_id);
        if (done) done(Outcome::ok(json::object{{"messageReceiptId", "r1"}}));
      });
  Peer caller = connect();
  send(caller, R"({"type":"invokefunction","invocation_id":")" + std::string(kInv) +
                   R"(","function_id":"f","data":{},"action":{"type":"enqueue","queue":"q"}})");
  auto r = caller.conn->take("invocationresult");
  EXPECT_EQ(r.at("result").at("messageReceiptId").as_string(), "r1");
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0], "q:f");
  engine.set_action_handler(protocol::ActionType::kEnqueue, {});
  send(caller, R"({"type":"invokefunction","invocation_id":")" + std::string(kInv) +
                   R"(","function_id":"f","data":{},"action":{"type":"enqueue","queue":"q"}})");
  EXPECT_EQ(caller.conn->take("invocationresult").at("error").at("code").as_string(),
            "enqueue_error");
}

TEST_F(EngineTest, InvocationRegistrarServesHttpInvokedFunctions) {
  const std::string reg =
      R"({"type":"registerfunction","id":"remote::fn","invocation":{"url":"https://x.test/"}})";
  Peer owner = connect(), caller = connect();
  send(owner, reg);  // no registrar: not registered
  EXPECT_FALSE(engine.functions().contains("remote::fn"));
  engine.set_invocation_registrar(
      [](const Worker&, const FunctionInfo& info, const json::value& invocation) {
        Engine::InvocationRegistration r;
        if (!invocation.as_object().contains("url")) {
          r.error = "url missing";
          return r;
        }
        r.handler = [url = std::string(invocation.at("url").as_string())](
                        const CallContext&, json::value, Completion done) {
          done(Outcome::ok(json::value(url)));
        };
        return r;
      });
  send(owner, R"({"type":"registerfunction","id":"bad::fn","invocation":{}})");
  EXPECT_FALSE(engine.functions().contains("bad::fn"));
  send(owner, reg);
  call(caller, "remote::fn", "{}");
  EXPECT_EQ(caller.conn->take("invocationresult").at("result").as_string(), "https://x.test/");
  engine.disconnect(owner.handle);  // owned by the connection: it goes with it
  EXPECT_FALSE(engine.functions().contains("remote::fn"));
}

TEST_F(EngineTest, CorkedInvocationsAreReleasedTogetherPerWorker) {
  Peer a = connect(), b = connect();
  register_fn(a, "a::f");
  register_fn(b, "b::f");
  {
    Engine::Cork outer(engine);
    {
      Engine::Cork inner(engine);
      for (int i = 0; i < 3; ++i) engine.invoke("a::f", json::value(i), CallContext{}, {});
      engine.invoke("b::f", json::value(9), CallContext{}, {});
    }
    EXPECT_EQ(a.conn->releases, 0);  // only the outermost uncork releases
    EXPECT_EQ(a.conn->holds, 1);     // once per worker, however many calls
    EXPECT_EQ(b.conn->holds, 1);
  }
  EXPECT_EQ(a.conn->releases, 1);
  EXPECT_EQ(b.conn->releases, 1);
  EXPECT_EQ(a.conn->count("invokefunction"), 3u);
  engine.invoke("a::f", json::value(4), CallContext{}, {});  // not corked: no hold
  EXPECT_EQ(a.conn->holds, 1);
}

}  // namespace
}  // namespace iii::engine
