#include "engine/rbac.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "engine/function_registry.h"

namespace iii::engine {
namespace {

namespace json = boost::json;

TEST(RbacTest, GlobMatchesAnchoredWithStars) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "anything::at::all"));
  EXPECT_TRUE(glob_match("public::*", "public::echo"));
  EXPECT_FALSE(glob_match("public::*", "x::public::echo"));
  EXPECT_TRUE(glob_match("*::echo", "a::b::echo"));
  EXPECT_FALSE(glob_match("*::echo", "a::b::echo2"));
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyy"));
  EXPECT_TRUE(glob_match("exact", "exact"));
  EXPECT_FALSE(glob_match("exact", "exactly"));
  // Many stars against a long non-matching text stays fast (no exponential backtracking).
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*b", std::string(5000, 'a')));
}

TEST(RbacTest, ParsesMatchWithEitherQuote) {
  EXPECT_EQ(parse_match("match(\"public::*\")"), "public::*");
  EXPECT_EQ(parse_match("match('x')"), "x");
  EXPECT_EQ(parse_match("match(\"\")"), "");
  EXPECT_FALSE(parse_match("match(x)"));
  EXPECT_FALSE(parse_match("public::*"));
  EXPECT_FALSE(parse_match("match(\"x')"));
}

TEST(RbacTest, AuthResultDefaultsAndErrors) {
  std::string error;
  auto s = Session::from_auth_result(json::parse("{}"), error);
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->allow_trigger_type_registration);  // must be granted
  EXPECT_TRUE(s->allow_function_registration);
  EXPECT_FALSE(s->allowed_trigger_types);
  EXPECT_TRUE(s->context.is_object());
  s = Session::from_auth_result(
      json::parse(R"({"allowed_functions":["a"],"forbidden_functions":["b"],
                      "allowed_trigger_types":["http"],"allow_trigger_type_registration":true,
                      "allow_function_registration":false,"context":{"user":"u1"},
                      "function_registration_prefix":"p"})"),
      error);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->allowed_functions.count("a"));
  EXPECT_TRUE(s->forbidden_functions.count("b"));
  EXPECT_TRUE(s->allowed_trigger_types->count("http"));
  EXPECT_TRUE(s->allow_trigger_type_registration);
  EXPECT_FALSE(s->allow_function_registration);
  EXPECT_EQ(s->context.at("user"), "u1");
  EXPECT_EQ(with_prefix(*s, "echo"), "p::echo");
  EXPECT_FALSE(Session::from_auth_result(json::parse("[1]"), error));
  EXPECT_FALSE(Session::from_auth_result(json::parse(R"({"allowed_functions":"a"})"), error));
  EXPECT_NE(error.find("allowed_functions"), std::string::npos);
}

TEST(RbacTest, AccessOrderForbiddenAllowedInfrastructureExposed) {
  ListenerPolicy policy;
  policy.rbac = true;
  ExposeRule glob;
  glob.id_glob = "public::*";
  ExposeRule meta;
  meta.metadata.push_back({"visibility", std::nullopt, json::value("public")});
  meta.metadata.push_back({"team", std::string("core-*"), nullptr});
  policy.expose = {glob, meta};
  Session s;
  s.allowed_functions = {"private::granted"};
  s.forbidden_functions = {"public::secret", "engine::log::info"};

  EXPECT_EQ(check_access(policy, s, "public::echo", nullptr), Access::kAllowed);
  EXPECT_EQ(check_access(policy, s, "public::secret", nullptr), Access::kForbidden);
  EXPECT_EQ(check_access(policy, s, "private::granted", nullptr), Access::kAllowed);
  EXPECT_EQ(check_access(policy, s, "private::other", nullptr), Access::kNotExposed);
  EXPECT_EQ(check_access(policy, s, "engine::channels::create", nullptr), Access::kAllowed);
  EXPECT_EQ(check_access(policy, s, "engine::log::info", nullptr), Access::kForbidden);
  EXPECT_EQ(check_access(policy, s, "engine::functions::list", nullptr), Access::kNotExposed);

  FunctionInfo f;
  f.id = "svc::tagged";
  f.metadata = json::parse(R"({"visibility":"public","team":"core-api"})");
  EXPECT_EQ(check_access(policy, s, f.id, &f), Access::kAllowed);
  f.metadata = json::parse(R"({"visibility":"public","team":"edge"})");
  EXPECT_EQ(check_access(policy, s, f.id, &f), Access::kNotExposed);
  f.metadata = json::parse(R"({"visibility":"public"})");
  EXPECT_EQ(check_access(policy, s, f.id, &f), Access::kNotExposed);

  EXPECT_EQ(forbidden_message("x", Access::kNotExposed),
            "function 'x' not allowed (add to rbac.expose_functions)");
  // Without an rbac block only explicit prohibitions apply.
  policy.rbac = false;
  EXPECT_EQ(check_access(policy, s, "private::other", nullptr), Access::kAllowed);
}

}  // namespace
}  // namespace iii::engine
