#include "workers/http/api_message.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

namespace iii::workers::http {
namespace {

namespace json = boost::json;

std::string header(const EncodedResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "<absent>";
}

TEST(ApiMessage, RequestObjectShape) {
  HeaderList headers{{"Content-Type", "application/json"},
                     {"X-Dup", "1"},
                     {"x-dup", "2"},
                     {"X-Bin", std::string("\xff\xfe", 2)}};
  auto req = make_api_request("POST", "/users/42?a=1&b=x+y&c=%2Fz&a=2&flag", headers, "/users/:id",
                              {{"id", "42"}}, json::value{{"k", 1}});
  EXPECT_EQ(req.at("method").as_string(), "POST");
  EXPECT_EQ(req.at("path").as_string(), "/users/:id");
  EXPECT_EQ(req.at("path_params").at("id").as_string(), "42");
  const auto& q = req.at("query_params").as_object();
  EXPECT_EQ(q.at("a").as_string(), "2");  // last wins
  EXPECT_EQ(q.at("b").as_string(), "x y");
  EXPECT_EQ(q.at("c").as_string(), "/z");
  EXPECT_EQ(q.at("flag").as_string(), "");
  const auto& h = req.at("headers").as_object();
  EXPECT_EQ(h.at("content-type").as_string(), "application/json");
  EXPECT_EQ(h.at("x-dup").as_string(), "2");
  EXPECT_EQ(h.at("x-bin").as_string(), "");
  EXPECT_EQ(req.at("body").at("k").as_int64(), 1);
  EXPECT_EQ(req.at("trigger"),
            (json::value{{"type", "http"}, {"path", "/users/:id"}, {"method", "POST"}}));
}

TEST(ApiMessage, ResponseDefaultsAndJsonBody) {
  auto r = encode_api_response(json::parse(R"({"body":{"ok":true}})"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"ok":true})");
  EXPECT_EQ(header(r, "content-type"), "application/json");
  auto empty = encode_api_response(json::parse(R"({"status_code":201})"));
  EXPECT_EQ(empty.status, 201u);
  EXPECT_EQ(empty.body, "{}");  // body defaults to {}
  auto null_body = encode_api_response(json::parse(R"({"status_code":204,"body":null})"));
  EXPECT_EQ(null_body.body, "");
}

TEST(ApiMessage, ResponseStatusAndHeaderValidation) {
  EXPECT_EQ(encode_api_response(json::parse(R"({"status_code":99})")).status, 200u);
  EXPECT_EQ(encode_api_response(json::parse(R"({"status_code":"404"})")).status, 200u);
  EXPECT_EQ(encode_api_response(json::parse(R"({"status_code":418.0})")).status, 418u);
  auto r = encode_api_response(
      json::parse(R"({"headers":["X-A: 1","bad header: x","NoColon","X-B:  two "],"body":"hi"})"));
  EXPECT_EQ(header(r, "X-A"), "1");
  EXPECT_EQ(header(r, "X-B"), "two ");
  EXPECT_EQ(header(r, "bad header"), "<absent>");
  auto o = encode_api_response(json::parse(R"({"headers":{"X-C":"3","X-N":5,"X-Bad":"a\nb"}})"));
  EXPECT_EQ(header(o, "X-C"), "3");
  EXPECT_EQ(header(o, "X-N"), "<absent>");
  EXPECT_EQ(header(o, "X-Bad"), "<absent>");
}

TEST(ApiMessage, ResponseBodyByContentType) {
  auto text = encode_api_response(
      json::parse(R"({"headers":{"Content-Type":"text/plain"},"body":"raw text"})"));
  EXPECT_EQ(text.body, "raw text");
  auto csv =
      encode_api_response(json::parse(R"({"headers":{"content-type":"text/csv"},"body":[1,2]})"));
  EXPECT_EQ(csv.body, "[1,2]");
  EXPECT_EQ(header(csv, "content-type"), "text/csv");
  auto str = encode_api_response(json::parse(R"({"body":"no type"})"));
  EXPECT_EQ(str.body, R"("no type")");
  EXPECT_EQ(header(str, "content-type"), "application/json");
}

TEST(ApiMessage, ErrorBodies) {
  auto e = error_response(500, "boom", json::object{{"error_id", "abc"}});
  EXPECT_EQ(e.status, 500u);
  EXPECT_EQ(e.body, R"({"error":"boom","error_id":"abc"})");
  EXPECT_EQ(make_error_id().find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace iii::workers::http
