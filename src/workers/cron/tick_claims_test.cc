#include "workers/cron/tick_claims.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace iii::workers::cron {
namespace {

TEST(TickClaims, TriggersOfOneEngineShareOneClaim) {
  TickClaims t;
  std::vector<std::pair<int, bool>> answers;
  auto waiter = [&](int who) {
    return [&answers, who](bool owned) { answers.emplace_back(who, owned); };
  };
  EXPECT_TRUE(t.join("job@1000", 5000, waiter(1)));   // new: the caller asks its store
  EXPECT_FALSE(t.join("job@1000", 5000, waiter(2)));  // waits for the same answer
  EXPECT_TRUE(t.join("job@2000", 5000, waiter(3)));   // another tick: its own claim
  EXPECT_TRUE(answers.empty());
  EXPECT_TRUE(t.decide("job@1000", true));
  EXPECT_EQ(answers, (std::vector<std::pair<int, bool>>{{1, true}, {2, true}}));
  // Asked after the answer: at once, no new claim.
  EXPECT_FALSE(t.join("job@1000", 5000, waiter(4)));
  EXPECT_EQ(answers.back(), std::make_pair(4, true));
  EXPECT_TRUE(t.decide("job@2000", false));
  EXPECT_EQ(answers.back(), std::make_pair(3, false));
  EXPECT_FALSE(t.join("job@2000", 5000, waiter(5)));
  EXPECT_EQ(answers.back(), std::make_pair(5, false));
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.owned(), 1u);
  EXPECT_FALSE(t.decide("unknown@1", true));  // nothing to answer
  EXPECT_EQ(t.owned(), 1u);
}

TEST(TickClaims, ExpiryForgetsDecidedClaimsOldestFirst) {
  TickClaims t;
  auto ignore = [](bool) {};
  t.join("a@1", 100, ignore);
  t.join("b@1", 200, ignore);
  t.join("c@1", 300, ignore);
  t.decide("a@1", true);
  t.decide("b@1", false);
  t.decide("c@1", true);
  std::vector<std::pair<std::string, bool>> gone;
  auto record = [&](const std::string& key, bool owned) { gone.emplace_back(key, owned); };
  t.expire(99, record);
  EXPECT_TRUE(gone.empty());
  t.expire(200, record);
  EXPECT_EQ(gone, (std::vector<std::pair<std::string, bool>>{{"a@1", true}, {"b@1", false}}));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.owned(), 1u);
  // A forgotten claim is a new one when asked again.
  EXPECT_TRUE(t.join("a@1", 1000, ignore));
  EXPECT_FALSE(t.decide("b@1", true));
  t.expire(300);            // without a callback
  EXPECT_EQ(t.size(), 1u);  // a@1 again, undecided
  EXPECT_EQ(t.owned(), 0u);
}

TEST(TickClaims, UndecidedAtExpiryStillGetsItsAnswer) {
  TickClaims t;
  int answered = 0;
  t.join("slow@1", 100, [&](bool owned) { answered += owned ? 1 : 100; });
  t.expire(1000);  // the store has not answered yet: the claim stays
  EXPECT_EQ(t.size(), 1u);
  EXPECT_FALSE(t.join("slow@1", 2000, [&](bool owned) { answered += owned ? 1 : 100; }));
  EXPECT_TRUE(t.decide("slow@1", true));
  EXPECT_EQ(answered, 2);
  EXPECT_EQ(t.owned(), 1u);
}

TEST(TickClaims, AWaiterMayJoinAnotherClaim) {
  TickClaims t;
  std::vector<std::string> log;
  t.join("x@1", 100, [&](bool) {
    log.push_back("x");
    // e.g. a handler that fires at once and claims the next tick
    for (int i = 0; i < 64; ++i) t.join("y@" + std::to_string(i), 100, [](bool) {});
  });
  t.join("x@1", 100, [&](bool) { log.push_back("x2"); });
  EXPECT_TRUE(t.decide("x@1", true));
  EXPECT_EQ(log, (std::vector<std::string>{"x", "x2"}));
  EXPECT_EQ(t.size(), 65u);
}

TEST(TickClaims, NowIsTheSystemClockInMilliseconds) {
  const int64_t a = TickClaims::now_ms();
  EXPECT_GT(a, int64_t(1'600'000'000'000));  // after 2020
  EXPECT_LE(a, TickClaims::now_ms());
}

}  // namespace
}  // namespace iii::workers::cron
