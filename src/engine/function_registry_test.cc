#include "engine/function_registry.h"

#include <gtest/gtest.h>

namespace iii::engine {
namespace {

Registrant worker_reg(uint64_t worker, std::string id, std::string desc = "") {
  Registrant r;
  r.worker = worker;
  r.info.id = std::move(id);
  if (!desc.empty()) r.info.description = desc;
  return r;
}

TEST(FunctionRegistry, NewestRegistrantServesAndOlderTakesOver) {
  FunctionRegistry reg;
  EXPECT_EQ(reg.add(worker_reg(1, "f", "one")), FunctionRegistry::AddResult::kAdded);
  EXPECT_EQ(reg.add(worker_reg(2, "f", "two")), FunctionRegistry::AddResult::kAdded);
  EXPECT_EQ(reg.serving("f")->worker, 2u);
  EXPECT_FALSE(reg.remove("f", 2));  // still served by worker 1
  EXPECT_EQ(reg.serving("f")->worker, 1u);
  EXPECT_EQ(*reg.serving("f")->info.description, "one");
  EXPECT_TRUE(reg.remove("f", 1));
  EXPECT_EQ(reg.serving("f"), nullptr);
}

TEST(FunctionRegistry, OldOwnerLeavingDoesNotRemoveNewOwner) {
  FunctionRegistry reg;
  reg.add(worker_reg(1, "f"));
  reg.add(worker_reg(2, "f"));
  EXPECT_FALSE(reg.remove("f", 1));
  EXPECT_EQ(reg.serving("f")->worker, 2u);
}

TEST(FunctionRegistry, ReRegistrationIsIdempotentAndUpdatesInfo) {
  FunctionRegistry reg;
  reg.add(worker_reg(1, "f", "a"));
  const auto gen = reg.generation();
  EXPECT_EQ(reg.add(worker_reg(1, "f", "b")), FunctionRegistry::AddResult::kUpdated);
  EXPECT_EQ(reg.registrant_count("f"), 1u);
  EXPECT_EQ(*reg.serving("f")->info.description, "b");
  EXPECT_EQ(reg.generation(), gen);  // the id set did not change
}

TEST(FunctionRegistry, RemovingUnknownRegistrationIsHarmless) {
  FunctionRegistry reg;
  reg.add(worker_reg(1, "f"));
  EXPECT_FALSE(reg.remove("f", 9));
  EXPECT_FALSE(reg.remove("g", 1));
  EXPECT_EQ(reg.serving("f")->worker, 1u);
}

TEST(FunctionRegistry, BuiltinsCannotBeDisplacedByWorkers) {
  FunctionRegistry reg;
  Registrant b;
  b.info.id = "engine::functions::list";
  reg.add(std::move(b));
  EXPECT_EQ(reg.add(worker_reg(1, "engine::functions::list")),
            FunctionRegistry::AddResult::kRefusedBuiltin);
  EXPECT_EQ(reg.serving("engine::functions::list")->worker, 0u);
}

TEST(FunctionRegistry, ListsSortedById) {
  FunctionRegistry reg;
  reg.add(worker_reg(1, "b"));
  reg.add(worker_reg(1, "a"));
  reg.add(worker_reg(2, "c"));
  std::vector<std::string> ids;
  reg.for_each_sorted([&](const Registrant& r) { ids.push_back(r.info.id); });
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c"}));
}

}  // namespace
}  // namespace iii::engine
