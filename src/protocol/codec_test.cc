#include "protocol/codec.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

namespace iii::protocol {
namespace {

constexpr const char* kId = "6f1c2a9e-1b2c-4d3e-8f40-123456789abc";

template <typename T>
T expect_message(std::string_view frame) {
  auto r = decode(frame);
  EXPECT_TRUE(std::holds_alternative<Message>(r)) << std::get<DecodeError>(r).reason;
  return std::get<T>(std::get<Message>(std::move(r)));
}

DecodeError expect_error(std::string_view frame) {
  auto r = decode(frame);
  EXPECT_TRUE(std::holds_alternative<DecodeError>(r));
  return std::get<DecodeError>(std::move(r));
}

TEST(Codec, DecodesSyncInvokeWithTraceContext) {
  auto m = expect_message<InvokeFunction>(
      R"({"type":"invokefunction","invocation_id":"6f1c2a9e-1b2c-4d3e-8f40-123456789abc",)"
      R"("function_id":"math::add","data":{"a":1},"traceparent":"00-abc","baggage":"k=v"})");
  EXPECT_EQ(m.invocation_id, kId);
  EXPECT_EQ(m.function_id, "math::add");
  EXPECT_EQ(m.data.at("a").as_int64(), 1);
  EXPECT_EQ(m.traceparent, "00-abc");
  EXPECT_EQ(m.baggage, "k=v");
  EXPECT_EQ(m.action.type, ActionType::kNone);
}

TEST(Codec, DecodesVoidAndEnqueueActions) {
  auto v = expect_message<InvokeFunction>(
      R"({"type":"invokefunction","function_id":"f","data":null,"action":{"type":"void"}})");
  EXPECT_EQ(v.action.type, ActionType::kVoid);
  EXPECT_FALSE(v.invocation_id);
  auto q = expect_message<InvokeFunction>(
      R"({"type":"invokefunction","function_id":"f","data":1,"action":{"type":"enqueue","queue":"q1"}})");
  EXPECT_EQ(q.action.type, ActionType::kEnqueue);
  EXPECT_EQ(q.action.queue, "q1");
}

TEST(Codec, AbsentDataIsNull) {  // the Python SDK omits `data` for a None payload
  auto m = expect_message<InvokeFunction>(R"({"type":"invokefunction","function_id":"f"})");
  EXPECT_TRUE(m.data.is_null());
}

TEST(Codec, IgnoresUnknownFieldsLikeNodeMessageType) {
  auto m = expect_message<RegisterTrigger>(
      R"({"type":"registertrigger","message_type":"registertrigger","id":"t1",)"
      R"("trigger_type":"http","function_id":"f"})");
  EXPECT_EQ(m.id, "t1");
  EXPECT_TRUE(m.config.is_object());  // absent config becomes {}
}

TEST(Codec, ResultKeepsAbsentAndNullApart) {
  auto absent = expect_message<InvocationResult>(
      std::string(R"({"type":"invocationresult","function_id":"f","invocation_id":")") + kId + "\"}");
  EXPECT_FALSE(absent.result.has_value());
  auto null = expect_message<InvocationResult>(
      std::string(R"({"type":"invocationresult","function_id":"f","result":null,"invocation_id":")") +
      kId + "\"}");
  ASSERT_TRUE(null.result.has_value());
  EXPECT_TRUE(null.result->is_null());
}

TEST(Codec, ErrorBodyNeedsCodeAndMessage) {
  auto e = expect_error(std::string(R"({"type":"invocationresult","function_id":"f","invocation_id":")") +
                        kId + R"(","error":{"code":"x"}})");
  EXPECT_NE(e.reason.find("message"), std::string::npos);
}

TEST(Codec, ReportsMalformedInputClearly) {
  EXPECT_NE(expect_error("{not json").reason.find("malformed JSON"), std::string::npos);
  EXPECT_NE(expect_error("[1,2]").reason.find("JSON object"), std::string::npos);
  EXPECT_NE(expect_error(R"({"id":"x"})").reason.find("'type'"), std::string::npos);
  EXPECT_NE(expect_error(R"({"type":"nope"})").reason.find("unknown message type 'nope'"),
            std::string::npos);
  EXPECT_NE(expect_error(R"({"type":"registerfunction"})").reason.find("'id'"), std::string::npos);
  EXPECT_NE(expect_error(R"({"type":"registerfunction","id":5})").reason.find("must be a string"),
            std::string::npos);
}

TEST(Codec, NonUuidInvocationIdKeepsIdsForTheErrorReply) {
  auto e = expect_error(R"({"type":"invokefunction","invocation_id":"abc","function_id":"f","data":1})");
  EXPECT_EQ(e.invocation_id, "abc");
  EXPECT_EQ(e.function_id, "f");
  EXPECT_NE(e.reason.find("not a UUID"), std::string::npos);
}

TEST(Codec, UuidForms) {
  EXPECT_TRUE(is_uuid(kId));
  EXPECT_TRUE(is_uuid("6F1C2A9E1B2C4D3E8F40123456789ABC"));
  EXPECT_TRUE(is_uuid("{6f1c2a9e-1b2c-4d3e-8f40-123456789abc}"));
  EXPECT_TRUE(is_uuid("urn:uuid:6f1c2a9e-1b2c-4d3e-8f40-123456789abc"));
  EXPECT_FALSE(is_uuid("6f1c2a9e-1b2c-4d3e-8f40-123456789abz"));
  EXPECT_FALSE(is_uuid(""));
}

TEST(Codec, EncodesResultOmittingAbsentResult) {
  auto s = encode_result(kId, "f", std::nullopt, std::nullopt, std::nullopt, std::nullopt);
  auto v = boost::json::parse(s).as_object();
  EXPECT_EQ(v.at("type").as_string(), "invocationresult");
  EXPECT_FALSE(v.contains("result"));
  auto n = boost::json::parse(encode_result(kId, "f", boost::json::value(nullptr), std::nullopt,
                                            std::nullopt, std::nullopt))
               .as_object();
  EXPECT_TRUE(n.at("result").is_null());
  auto e = boost::json::parse(encode_result(kId, "f", std::nullopt,
                                            ErrorBody{"c", "m", std::nullopt}, "tp", std::nullopt))
               .as_object();
  EXPECT_EQ(e.at("error").at("code").as_string(), "c");
  EXPECT_FALSE(e.at("error").as_object().contains("stacktrace"));
  EXPECT_EQ(e.at("traceparent").as_string(), "tp");
}

TEST(Codec, EncodeInvokeEscapesStrings) {
  auto s = encode_invoke(kId, "we\"ird", boost::json::value("x\ny"), std::nullopt, std::nullopt);
  auto v = boost::json::parse(s).as_object();
  EXPECT_EQ(v.at("function_id").as_string(), "we\"ird");
  EXPECT_EQ(v.at("data").as_string(), "x\ny");
  EXPECT_FALSE(v.contains("action"));
}

TEST(Codec, ClientEncodeRoundTrips) {
  InvokeFunction in;
  in.invocation_id = kId;
  in.function_id = "f";
  in.data = boost::json::object{{"k", 1}};
  in.action.type = ActionType::kEnqueue;
  in.action.queue = "q";
  auto out = expect_message<InvokeFunction>(encode(Message(in)));
  EXPECT_EQ(out.invocation_id, kId);
  EXPECT_EQ(out.action.queue, "q");
  EXPECT_EQ(out.data.at("k").as_int64(), 1);
}

}  // namespace
}  // namespace iii::protocol
