// Engine-free unit tests for the SDK's helpers (URL parsing, ids, frame encoding).
#include "../src/support.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <set>

namespace iii::detail {
namespace {

namespace json = boost::json;

TEST(ParseWsUrl, HostAndPort) {
  std::string err;
  auto u = parse_ws_url("ws://127.0.0.1:49134", &err);
  ASSERT_TRUE(u) << err;
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "49134");
  EXPECT_EQ(u->host_header, "127.0.0.1:49134");
  EXPECT_EQ(u->target, "/");
}

TEST(ParseWsUrl, DefaultPortPathAndQuery) {
  auto u = parse_ws_url("ws://localhost/base?token=a%20b", nullptr);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "localhost");
  EXPECT_EQ(u->port, "80");
  EXPECT_EQ(u->host_header, "localhost");
  EXPECT_EQ(u->target, "/base?token=a%20b");
}

TEST(ParseWsUrl, Ipv6Literal) {
  auto u = parse_ws_url("ws://[::1]:5000/x", nullptr);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->host_header, "[::1]:5000");
  EXPECT_EQ(u->target, "/x");
}

TEST(ParseWsUrl, Rejects) {
  std::string err;
  EXPECT_FALSE(parse_ws_url("wss://example.com", &err));
  EXPECT_NE(err.find("TLS"), std::string::npos);
  EXPECT_FALSE(parse_ws_url("tcp://example.com:1", &err));
  EXPECT_NE(err.find("scheme"), std::string::npos);
  EXPECT_FALSE(parse_ws_url("localhost:49134 nope", &err));
  EXPECT_FALSE(parse_ws_url("ws:///path", &err));
}

TEST(Uuid, Version4Format) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = make_uuid_v4();
    ASSERT_EQ(id.size(), 36u);
    EXPECT_EQ(id[8], '-');
    EXPECT_EQ(id[13], '-');
    EXPECT_EQ(id[14], '4');
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(EncodeInvoke, SyncVoidEnqueue) {
  json::value payload = {{"a", 1}};
  auto sync = json::parse(encode_invoke_frame(std::string("id-1"), "f::x", payload, {}));
  EXPECT_EQ(sync.at("type"), "invokefunction");
  EXPECT_EQ(sync.at("invocation_id"), "id-1");
  EXPECT_EQ(sync.at("function_id"), "f::x");
  EXPECT_EQ(sync.at("data"), payload);
  EXPECT_FALSE(sync.as_object().contains("action"));

  auto v = json::parse(encode_invoke_frame(std::nullopt, "f::x", nullptr, TriggerAction::Void()));
  EXPECT_FALSE(v.as_object().contains("invocation_id"));
  EXPECT_TRUE(v.at("data").is_null());  // the engine requires `data`, even if null
  EXPECT_EQ(v.at("action").at("type"), "void");

  auto q = json::parse(
      encode_invoke_frame(std::string("id-2"), "f::x", payload, TriggerAction::Enqueue("jobs")));
  EXPECT_EQ(q.at("action").at("type"), "enqueue");
  EXPECT_EQ(q.at("action").at("queue"), "jobs");
}

TEST(EncodeRegistration, FunctionAndTrigger) {
  FunctionOptions fo;
  fo.description = "d";
  fo.metadata = json::object{{"k", "v"}};
  auto f = json::parse(encode_register_function("f::x", fo));
  EXPECT_EQ(f.at("type"), "registerfunction");
  EXPECT_EQ(f.at("id"), "f::x");
  EXPECT_EQ(f.at("description"), "d");
  EXPECT_FALSE(f.as_object().contains("request_format"));

  TriggerConfig t;
  t.type = "subscribe";
  t.function_id = "f::x";
  auto tr = json::parse(encode_register_trigger("t-1", t));
  EXPECT_EQ(tr.at("trigger_type"), "subscribe");
  EXPECT_TRUE(tr.at("config").is_object());  // absent config is sent as {}
}

TEST(WorkerMetadata, Fields) {
  auto m = worker_metadata("w1");
  EXPECT_EQ(m.at("runtime"), "cpp");
  EXPECT_EQ(m.at("name"), "w1");
  EXPECT_TRUE(m.at("pid").is_int64());
  EXPECT_TRUE(m.at("os").is_string());
  EXPECT_EQ(m.at("version"), sdk_version());
}

TEST(InvocationError, WhatIsCodeColonMessage) {
  InvocationError e("TIMEOUT", "invocation timed out after 5ms", std::nullopt, "f::x");
  EXPECT_STREQ(e.what(), "TIMEOUT: invocation timed out after 5ms");
  EXPECT_EQ(e.function_id, "f::x");
}

}  // namespace
}  // namespace iii::detail

namespace iii::detail {
namespace {

// The writer itself is tested in src/protocol/json_writer_test.cc; this pins that frames embed
// the payload exactly as boost::json::serialize would write it.
TEST(EncodeFrames, PayloadBytesMatchBoostSerialize) {
  json::value payload = {{"s", "q\"uote\\ \n\x01 caf\xc3\xa9 \xff"},
                         {"n", {1, -2, 3.5, 1e300, 0.1, -0.0, nullptr, true}},
                         {"u", json::value(uint64_t(18446744073709551615ull))},
                         {"empty", json::object()}};
  EXPECT_EQ(encode_invoke_frame(std::string("id"), "f", payload, TriggerAction::Enqueue("q")),
            R"({"type":"invokefunction","invocation_id":"id","function_id":"f","data":)" +
                json::serialize(payload) + R"(,"action":{"type":"enqueue","queue":"q"}})");
  EXPECT_EQ(encode_result_frame("id", "f", payload, std::nullopt, {}, std::nullopt, std::nullopt,
                                std::nullopt),
            R"({"type":"invocationresult","invocation_id":"id","function_id":"f","result":)" +
                json::serialize(payload) + "}");
}

TEST(EncodeResult, ResultErrorAndAbsent) {
  auto ok = json::parse(encode_result_frame("i", "f", json::value(5), std::nullopt, {},
                                            std::nullopt, std::string("tp"), std::nullopt));
  EXPECT_EQ(ok.at("result"), 5);
  EXPECT_EQ(ok.at("traceparent"), "tp");
  EXPECT_FALSE(ok.as_object().contains("error"));

  auto none = json::parse(encode_result_frame("i", "f", std::nullopt, std::nullopt, {},
                                              std::nullopt, std::nullopt, std::nullopt));
  EXPECT_FALSE(none.as_object().contains("result"));

  auto null = json::parse(encode_result_frame("i", "f", json::value(nullptr), std::nullopt, {},
                                              std::nullopt, std::nullopt, std::nullopt));
  ASSERT_TRUE(null.as_object().contains("result"));
  EXPECT_TRUE(null.at("result").is_null());

  auto err =
      json::parse(encode_result_frame("i", "f", json::value(1), std::string("boom_code"), "boom",
                                      std::string("st"), std::nullopt, std::nullopt));
  EXPECT_FALSE(err.as_object().contains("result"));
  EXPECT_EQ(err.at("error").at("code"), "boom_code");
  EXPECT_EQ(err.at("error").at("message"), "boom");
  EXPECT_EQ(err.at("error").at("stacktrace"), "st");
}

}  // namespace
}  // namespace iii::detail
