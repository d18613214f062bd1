#include "workers/exec/watch_glob.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace iii::workers::exec {
namespace {

TEST(WatchGlobTest, DoubleStarMatchesAnyDepthIncludingNone) {
  WatchGlob g("steps/**/*.ts");
  EXPECT_TRUE(g.matches("steps/a.ts"));
  EXPECT_TRUE(g.matches("steps/x/y/z/a.ts"));
  EXPECT_TRUE(g.matches("./steps//x/a.ts"));
  EXPECT_FALSE(g.matches("steps/a.js"));
  EXPECT_FALSE(g.matches("other/steps/a.ts"));
  EXPECT_FALSE(g.matches("steps"));
  EXPECT_EQ(g.root(), "steps");
  EXPECT_FALSE(g.max_depth().has_value());
}

TEST(WatchGlobTest, StarStaysWithinOneSegment) {
  WatchGlob g("src/*.py");
  EXPECT_TRUE(g.matches("src/main.py"));
  EXPECT_FALSE(g.matches("src/pkg/main.py"));
  EXPECT_EQ(g.root(), "src");
  EXPECT_EQ(g.max_depth(), 0);
  WatchGlob deeper("src/*/x/*.py");
  EXPECT_TRUE(deeper.matches("src/a/x/b.py"));
  EXPECT_EQ(deeper.max_depth(), 2);
}

TEST(WatchGlobTest, BracesAndClasses) {
  WatchGlob g("{steps,src}/**/*.{ts,js}");
  EXPECT_TRUE(g.matches("steps/a.ts"));
  EXPECT_TRUE(g.matches("src/b/c.js"));
  EXPECT_FALSE(g.matches("lib/a.ts"));
  EXPECT_FALSE(g.matches("src/a.py"));
  EXPECT_EQ(g.root(), ".");
  WatchGlob c("data/file[0-9].txt");
  EXPECT_TRUE(c.matches("data/file7.txt"));
  EXPECT_FALSE(c.matches("data/filex.txt"));
  EXPECT_THROW(WatchGlob("a/{b,c"), std::invalid_argument);
  EXPECT_THROW(WatchGlob("a/b}"), std::invalid_argument);
  EXPECT_THROW(WatchGlob("./"), std::invalid_argument);
}

TEST(WatchGlobTest, LiteralPatternsMatchThemselvesAndTheirTree) {
  WatchGlob file("motia.config.ts");
  EXPECT_TRUE(file.literal());
  EXPECT_TRUE(file.matches("motia.config.ts"));
  EXPECT_TRUE(file.matches("./motia.config.ts"));
  EXPECT_FALSE(file.matches("motia.config.tsx"));
  WatchGlob dir("src/");
  EXPECT_TRUE(dir.matches("src/a/b.c"));
  EXPECT_FALSE(dir.matches("srcx/a"));
  EXPECT_EQ(dir.root(), "src");
}

TEST(WatchGlobTest, AbsolutePatterns) {
  WatchGlob g("/tmp/w/**/*.txt");
  EXPECT_EQ(g.root(), "/tmp/w");
  EXPECT_TRUE(g.matches("/tmp/w/a.txt"));
  EXPECT_FALSE(g.matches("tmp/w/a.txt"));
  EXPECT_EQ(split_path("/a//./b/"), (std::vector<std::string>{"/", "a", "b"}));
}

}  // namespace
}  // namespace iii::workers::exec
