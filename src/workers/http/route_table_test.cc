#include "workers/http/route_table.h"

#include <gtest/gtest.h>

namespace iii::workers::http {
namespace {

Route route(std::string trigger, std::string path, std::string method = "GET",
            std::string fn = "fn") {
  return Route{std::move(trigger), std::move(path), std::move(method), std::move(fn), {}, {}};
}

TEST(RouteTable, StaticAndParamSegments) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/users/:id", "GET", "get_user")));
  ASSERT_FALSE(t.add(route("t2", "/users/me", "GET", "me")));
  ASSERT_FALSE(t.add(route("t3", "users/:id/posts/:post", "GET", "post")));  // leading / added
  auto m = t.find("GET", "/users/42");
  ASSERT_EQ(m.kind, RouteTable::Match::Kind::kFound);
  EXPECT_EQ(m.route->function_id, "get_user");
  EXPECT_EQ(m.route->api_path, "/users/:id");
  ASSERT_EQ(m.path_params.size(), 1u);
  EXPECT_EQ(m.path_params[0], (std::pair<std::string, std::string>{"id", "42"}));
  EXPECT_EQ(t.find("GET", "/users/me").route->function_id, "me");  // static wins
  auto p = t.find("GET", "/users/me/posts/7");  // backtracks from the static 'me'
  ASSERT_EQ(p.kind, RouteTable::Match::Kind::kFound);
  EXPECT_EQ(p.route->function_id, "post");
  ASSERT_EQ(p.path_params.size(), 2u);
  EXPECT_EQ(p.path_params[0].second, "me");
  EXPECT_EQ(p.path_params[1], (std::pair<std::string, std::string>{"post", "7"}));
}

TEST(RouteTable, NotFoundAndMethodNotAllowed) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/items", "POST")));
  ASSERT_FALSE(t.add(route("t2", "/items", "GET")));
  EXPECT_EQ(t.find("GET", "/nothing").kind, RouteTable::Match::Kind::kNoPath);
  EXPECT_EQ(t.find("GET", "/items/").kind, RouteTable::Match::Kind::kNoPath);  // trailing slash
  EXPECT_EQ(t.find("GET", "/").kind, RouteTable::Match::Kind::kNoPath);
  auto m = t.find("DELETE", "/items");
  ASSERT_EQ(m.kind, RouteTable::Match::Kind::kNoMethod);
  EXPECT_EQ(m.allowed_methods, (std::vector<std::string>{"GET", "POST", "HEAD"}));
  EXPECT_EQ(t.find("HEAD", "/items").route->method, "GET");  // GET answers HEAD
}

TEST(RouteTable, EmptyParamValuesDoNotMatch) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/u/:id")));
  EXPECT_EQ(t.find("GET", "/u/").kind, RouteTable::Match::Kind::kNoPath);
  ASSERT_FALSE(t.add(route("root", "/")));
  EXPECT_EQ(t.find("GET", "/").kind, RouteTable::Match::Kind::kFound);
}

TEST(RouteTable, DifferentlyNamedParamsAreRefusedWithoutSideEffects) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/u/:id", "GET")));
  auto err = t.add(route("t2", "/u/:user_id/x", "POST"));
  ASSERT_TRUE(err);
  EXPECT_NE(err->find(":id"), std::string::npos) << *err;
  EXPECT_NE(err->find(":user_id"), std::string::npos) << *err;
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.find("POST", "/u/1/x").kind, RouteTable::Match::Kind::kNoPath);
  EXPECT_TRUE(t.add(route("t3", "/a/:")));
}

TEST(RouteTable, NewestRegistrationServesAndTheNextTakesOver) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("old", "/health", "GET", "v1")));
  ASSERT_FALSE(t.add(route("new", "/health", "GET", "v2")));
  EXPECT_EQ(t.find("GET", "/health").route->function_id, "v2");
  EXPECT_TRUE(t.remove("/health", "GET", "old"));  // the old worker leaves: v2 keeps serving
  EXPECT_EQ(t.find("GET", "/health").route->function_id, "v2");
  ASSERT_FALSE(t.add(route("old", "/health", "GET", "v1")));
  EXPECT_TRUE(t.remove("/health", "GET", "old"));
  EXPECT_TRUE(t.remove("health", "GET", "new"));
  EXPECT_EQ(t.find("GET", "/health").kind, RouteTable::Match::Kind::kNoPath);
  EXPECT_FALSE(t.remove("/health", "GET", "new"));
  EXPECT_EQ(t.size(), 0u);
}

TEST(RouteTable, RemovingPrunesSoParamNamesCanChangeLater) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/u/:id/a")));
  ASSERT_FALSE(t.add(route("t2", "/u/:id/b")));
  EXPECT_TRUE(t.remove("/u/:id/a", "GET", "t1"));
  EXPECT_TRUE(t.add(route("t3", "/u/:other")));  // /u/:id/b still holds the name
  EXPECT_TRUE(t.remove("/u/:id/b", "GET", "t2"));
  EXPECT_FALSE(t.add(route("t3", "/u/:other")));
  EXPECT_EQ(t.find("GET", "/u/9").path_params[0].first, "other");
}

TEST(RouteTable, ReAddingTheSameTriggerReplacesIt) {
  RouteTable t;
  ASSERT_FALSE(t.add(route("t1", "/x", "GET", "a")));
  ASSERT_FALSE(t.add(route("t1", "/x", "GET", "b")));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.find("GET", "/x").route->function_id, "b");
}

TEST(RouteTable, ManyRoutesStillMatchByPath) {
  RouteTable t;
  for (int i = 0; i < 1000; ++i)
    ASSERT_FALSE(t.add(route("t" + std::to_string(i), "/svc" + std::to_string(i) + "/items/:id",
                             "GET", "f" + std::to_string(i))));
  auto m = t.find("GET", "/svc731/items/5");
  ASSERT_EQ(m.kind, RouteTable::Match::Kind::kFound);
  EXPECT_EQ(m.route->function_id, "f731");
}

}  // namespace
}  // namespace iii::workers::http
