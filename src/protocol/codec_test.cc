#include "protocol/codec.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <cstdlib>

namespace iii::protocol {

namespace json = boost::json;
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
      std::string(R"({"type":"invocationresult","function_id":"f","invocation_id":")") + kId +
      "\"}");
  EXPECT_FALSE(absent.result.has_value());
  auto null = expect_message<InvocationResult>(
      std::string(
          R"({"type":"invocationresult","function_id":"f","result":null,"invocation_id":")") +
      kId + "\"}");
  ASSERT_TRUE(null.result.has_value());
  EXPECT_TRUE(null.result->is_null());
}

TEST(Codec, ErrorBodyNeedsCodeAndMessage) {
  auto e = expect_error(
      std::string(R"({"type":"invocationresult","function_id":"f","invocation_id":")") + kId +
      R"(","error":{"code":"x"}})");
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

// Found by fuzz/codec_fuzz.cc: Boost.JSON 1.81 reads 1e400 as infinity, which encodes as
// `Infinity` (not JSON), so the frame forwarded to the executor could not be parsed there.
// serde_json refuses such a number ("number out of range"), and so does decode.
TEST(Codec, RefusesNumbersBeyondTheDoubleRange) {
  for (const char* data : {"1e400", "-1e400", R"([1,{"a":[2e308]}])", "-123456789e99999"}) {
    const std::string frame =
        std::string(R"({"type":"invokefunction","function_id":"f","data":)") + data + "}";
    auto r = decode(frame);
    ASSERT_TRUE(std::holds_alternative<DecodeError>(r))
        << frame << " decoded, and encodes as " << encode(std::get<Message>(r));
    EXPECT_EQ(std::get<DecodeError>(r).reason, "malformed JSON: number out of range") << frame;
  }
  // The largest finite double passes; underflows are 0, and 0e400 (NaN for Boost) is 0 too.
  const json::value data =
      expect_message<InvokeFunction>(R"({"type":"invokefunction","function_id":"f","data":)"
                                     R"([1.7976931348623157e308,1e-400,-1e-400,0e400,-0.0e999]})")
          .data;
  ASSERT_EQ(data.as_array().size(), 5u);
  EXPECT_EQ(data.as_array()[0].as_double(), 1.7976931348623157e308);
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(data.as_array()[i].as_double(), 0.0) << i;
  EXPECT_TRUE(std::signbit(data.as_array()[4].as_double()));
}

// Found by fuzz/codec_fuzz.cc: Boost.JSON 1.81 does not round every double correctly, so a
// number a worker sent reached the executor changed in its last digit. Decoded numbers are
// the nearest doubles (as serde_json reads them), whatever their length.
TEST(Codec, DecodesDoublesCorrectlyRounded) {
  for (const char* text :
       {"1.8446744073701114E82", "-1.8446744073701114e82", "0.1", "2.2250738585072014e-308",
        "4.9e-324", "9007199254740993.0", "1.00000000000000011102230246251565404236316680908203125",
        "18446744073701111111111111111111111111111111111111111111111111111111111111111111119551615."
        "0"}) {
    const std::string frame =
        std::string(R"({"type":"invokefunction","function_id":"f","data":)") + text + "}";
    const json::value data = expect_message<InvokeFunction>(frame).data;
    ASSERT_TRUE(data.is_double()) << text;
    EXPECT_EQ(data.get_double(), std::strtod(text, nullptr)) << text;
  }
}

TEST(Codec, NonUuidInvocationIdKeepsIdsForTheErrorReply) {
  auto e =
      expect_error(R"({"type":"invokefunction","invocation_id":"abc","function_id":"f","data":1})");
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

// The encoders used to build a json::object and serialise it; they now write directly.
// These pin the bytes to what the object-based version produced (field order included).

const json::value kAwkward = {{"s", "q\"uote\\ \n\x01 caf\xc3\xa9 \xe2\x80\xa8 \xff"},
                              {"n", {1, -2, 0.1, 3.0, -0.0, 1e300, nullptr, true}},
                              {"u", json::value(uint64_t(18446744073709551615ull))},
                              {"e", json::object()}};

TEST(CodecBytes, EngineEncodersMatchObjectSerialisation) {
  EXPECT_EQ(encode_worker_registered("w\"1"),
            json::serialize(json::object{{"type", "workerregistered"}, {"worker_id", "w\"1"}}));

  json::object inv{{"type", "invokefunction"}, {"invocation_id", kId}, {"function_id", "f\n"},
                   {"data", kAwkward},         {"traceparent", "tp"},  {"baggage", "k=v"}};
  EXPECT_EQ(encode_invoke(kId, "f\n", kAwkward, std::string("tp"), std::string("k=v")),
            json::serialize(inv));
  inv.erase("traceparent");
  inv.erase("baggage");
  EXPECT_EQ(encode_invoke(kId, "f\n", kAwkward, std::nullopt, std::nullopt), json::serialize(inv));

  json::object res{{"type", "invocationresult"},
                   {"invocation_id", kId},
                   {"function_id", "f"},
                   {"result", kAwkward},
                   {"baggage", "b"}};
  EXPECT_EQ(encode_result(kId, "f", kAwkward, std::nullopt, std::nullopt, std::string("b")),
            json::serialize(res));
  ErrorBody err{"c\"", "m\n", std::string("st")};
  json::object res_err{{"type", "invocationresult"},
                       {"invocation_id", kId},
                       {"function_id", "f"},
                       {"error", error_to_json(err)},
                       {"traceparent", "tp"}};
  EXPECT_EQ(encode_result(kId, "f", kAwkward, err, std::string("tp"), std::nullopt),
            json::serialize(res_err));

  RegisterTrigger t{"t1", "http", "f", kAwkward, json::value{{"m", 1}}};
  EXPECT_EQ(encode_register_trigger(t), json::serialize(json::object{{"type", "registertrigger"},
                                                                     {"id", "t1"},
                                                                     {"trigger_type", "http"},
                                                                     {"function_id", "f"},
                                                                     {"config", kAwkward},
                                                                     {"metadata", {{"m", 1}}}}));
  EXPECT_EQ(encode_unregister_trigger("t1", "http"),
            json::serialize(json::object{
                {"type", "unregistertrigger"}, {"id", "t1"}, {"trigger_type", "http"}}));
  EXPECT_EQ(encode_error_frame("bad", "x\"y"),
            json::serialize(json::object{{"type", "error"},
                                         {"error", {{"code", "bad"}, {"message", "x\"y"}}}}));
}

// A raw result is written verbatim and gives the frame the non-raw encoder makes from the
// parsed value, byte for byte (the text is compact JSON, as the stores produce it).
TEST(CodecBytes, RawResultIsWrittenVerbatim) {
  const json::value awkward = {{"s", "q\"uote\\ \n\x01 caf\xc3\xa9 \xe2\x80\xa8"},
                               {"n", {1, -2, 0.1, 3.0, -0.0, 1e300, nullptr, true}},
                               {"u", json::value(uint64_t(18446744073709551615ull))}};
  const std::string text = json::serialize(json::array{awkward, 1, "two", json::array()});
  EXPECT_EQ(encode_result_raw(kId, "stream::list", text, std::nullopt, std::nullopt),
            encode_result(kId, "stream::list", json::parse(text), std::nullopt, std::nullopt,
                          std::nullopt));
  const std::string framed =
      encode_result_raw(kId, "f\"", "[]", std::string("tp"), std::string("bg"));
  EXPECT_EQ(framed, encode_result(kId, "f\"", json::value(json::array()), std::nullopt,
                                  std::string("tp"), std::string("bg")));
  EXPECT_NE(framed.find(R"("result":[])"), std::string::npos);
  // Whatever the text holds is copied as is, even when it is not what serialise would write.
  const std::string spaced = encode_result_raw(kId, "f", "[1, 2]", std::nullopt, std::nullopt);
  EXPECT_NE(spaced.find(R"("result":[1, 2])"), std::string::npos);
  auto parsed = json::parse(spaced).as_object();
  EXPECT_EQ(parsed.at("result"), (json::array{1, 2}));
}

TEST(CodecBytes, ClientEncoderMatchesObjectSerialisation) {
  RegisterFunction rf{"f",          std::string("d"),      kAwkward,
                      std::nullopt, json::value{{"m", 1}}, json::value{{"path", "/x"}}};
  EXPECT_EQ(encode(Message(rf)), json::serialize(json::object{{"type", "registerfunction"},
                                                              {"id", "f"},
                                                              {"description", "d"},
                                                              {"request_format", kAwkward},
                                                              {"metadata", {{"m", 1}}},
                                                              {"invocation", {{"path", "/x"}}}}));

  InvokeFunction in;
  in.invocation_id = kId;
  in.function_id = "f";
  in.data = kAwkward;
  in.baggage = "b";
  in.action = {ActionType::kEnqueue, "q\""};
  EXPECT_EQ(encode(Message(in)),
            json::serialize(json::object{{"type", "invokefunction"},
                                         {"invocation_id", kId},
                                         {"function_id", "f"},
                                         {"data", kAwkward},
                                         {"baggage", "b"},
                                         {"action", {{"type", "enqueue"}, {"queue", "q\""}}}}));
  in.invocation_id.reset();
  in.baggage.reset();
  in.action = {ActionType::kVoid, ""};
  EXPECT_EQ(encode(Message(in)), json::serialize(json::object{{"type", "invokefunction"},
                                                              {"function_id", "f"},
                                                              {"data", kAwkward},
                                                              {"action", {{"type", "void"}}}}));

  InvocationResult r{kId, "f", json::value(nullptr), std::nullopt, std::string("tp"), std::nullopt};
  EXPECT_EQ(encode(Message(r)), json::serialize(json::object{{"type", "invocationresult"},
                                                             {"invocation_id", kId},
                                                             {"function_id", "f"},
                                                             {"result", nullptr},
                                                             {"traceparent", "tp"}}));
  r.error = ErrorBody{"c", "m", std::nullopt};
  EXPECT_EQ(encode(Message(r)),
            json::serialize(json::object{{"type", "invocationresult"},
                                         {"invocation_id", kId},
                                         {"function_id", "f"},
                                         {"error", {{"code", "c"}, {"message", "m"}}},
                                         {"traceparent", "tp"}}));

  EXPECT_EQ(encode(Message(UnregisterFunction{"f"})), R"({"type":"unregisterfunction","id":"f"})");
  EXPECT_EQ(encode(Message(RegisterTriggerType{"tt", "desc", std::nullopt, kAwkward})),
            json::serialize(json::object{{"type", "registertriggertype"},
                                         {"id", "tt"},
                                         {"description", "desc"},
                                         {"call_request_format", kAwkward}}));
  EXPECT_EQ(encode(Message(UnregisterTriggerType{"tt"})),
            R"({"type":"unregistertriggertype","id":"tt"})");
  EXPECT_EQ(encode(Message(UnregisterTrigger{"t", std::nullopt})),
            R"({"type":"unregistertrigger","id":"t"})");
  EXPECT_EQ(encode(Message(TriggerRegistrationResult{"t", "http", "f",
                                                     ErrorBody{"c", "m", std::string("s")}})),
            json::serialize(
                json::object{{"type", "triggerregistrationresult"},
                             {"id", "t"},
                             {"trigger_type", "http"},
                             {"function_id", "f"},
                             {"error", {{"code", "c"}, {"message", "m"}, {"stacktrace", "s"}}}}));
  EXPECT_EQ(
      encode(Message(RegisterService{"s", "n", std::nullopt, std::string("p")})),
      json::serialize(json::object{
          {"type", "registerservice"}, {"id", "s"}, {"name", "n"}, {"parent_service_id", "p"}}));
  EXPECT_EQ(encode(Message(Ping{})), R"({"type":"ping"})");
  EXPECT_EQ(encode(Message(Pong{})), R"({"type":"pong"})");
  EXPECT_EQ(encode(Message(WorkerRegistered{"w"})),
            R"({"type":"workerregistered","worker_id":"w"})");
}

std::string nested_arrays(size_t depth) {
  return std::string(depth, '[') + "1" + std::string(depth, ']');
}
std::string invoke_with_data(const std::string& data) {
  return std::string(R"({"type":"invokefunction","invocation_id":")") + kId +
         R"(","function_id":"deep::fn","data":)" + data + "}";
}

TEST(Codec, AcceptsPayloadsNested128Levels) {
  auto r = decode(invoke_with_data(nested_arrays(kMaxJsonDepth)));
  ASSERT_TRUE(std::holds_alternative<Message>(r)) << std::get<DecodeError>(r).reason;
  const auto& m = std::get<InvokeFunction>(std::get<Message>(r));
  const boost::json::value* v = &m.data;
  size_t depth = 0;
  while (v->is_array()) {
    ++depth;
    v = &v->get_array().at(0);
  }
  EXPECT_EQ(depth, kMaxJsonDepth);
}

TEST(Codec, TooDeepInvokeKeepsItsIdsForTheErrorReply) {
  for (size_t depth : {kMaxJsonDepth + 1, size_t{1000}, size_t{1000000}}) {
    auto e = expect_error(invoke_with_data(nested_arrays(depth)));
    EXPECT_EQ(e.type, "invokefunction");
    EXPECT_EQ(e.invocation_id, kId);
    EXPECT_EQ(e.function_id, "deep::fn");
    EXPECT_NE(e.reason.find("deeper than the limit of 128 levels"), std::string::npos) << e.reason;
  }
}

TEST(Codec, TooDeepGarbageIsAPlainError) {
  auto e = expect_error(std::string(100000, '['));
  EXPECT_FALSE(e.invocation_id);
  auto f = expect_error(nested_arrays(5000));
  EXPECT_NE(f.reason.find("deeper"), std::string::npos);
}

TEST(Codec, ReattachAndInvokeMetadataOfNewerSdks) {
  auto r = decode(R"({"type":"reattach","previous_worker_id":"w1","reattach_token":"t"})");
  ASSERT_TRUE(std::holds_alternative<Message>(r));
  const auto& m = std::get<Reattach>(std::get<Message>(r));
  EXPECT_EQ(m.previous_worker_id, "w1");
  EXPECT_EQ(m.reattach_token, "t");
  auto no_token = decode(R"({"type":"reattach","previous_worker_id":"w1"})");
  EXPECT_FALSE(std::get<Reattach>(std::get<Message>(no_token)).reattach_token.has_value());
  EXPECT_TRUE(std::holds_alternative<DecodeError>(decode(R"({"type":"reattach"})")));
  auto inv = decode(R"({"type":"invokefunction","function_id":"f","data":1,"metadata":{"a":[1]}})");
  const auto& i = std::get<InvokeFunction>(std::get<Message>(inv));
  ASSERT_TRUE(i.metadata.has_value());
  EXPECT_EQ(boost::json::serialize(*i.metadata), R"({"a":[1]})");
  EXPECT_EQ(encode_worker_registered("w", "t"),
            R"({"type":"workerregistered","worker_id":"w","reattach_token":"t"})");
  EXPECT_EQ(
      encode_invoke("i", "f", boost::json::value(1), std::nullopt, std::nullopt,
                    boost::json::value(boost::json::object{{"k", 2}})),
      R"({"type":"invokefunction","invocation_id":"i","function_id":"f","data":1,"metadata":{"k":2}})");
}

}  // namespace
}  // namespace iii::protocol
