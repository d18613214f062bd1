#include "storage/update_ops.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <limits>
#include <string>

namespace iii::storage {
namespace {

namespace json = boost::json;

json::value J(std::string_view text) { return json::parse(text); }

// Parses `ops_json` (must be well-formed) and applies it to `current`.
UpdateResult run(std::optional<json::value> current, std::string_view ops_json) {
  ParsedUpdateOps parsed = parse_update_ops(J(ops_json));
  EXPECT_TRUE(parsed.ok()) << parsed.error;
  return apply_update_ops(std::move(current), parsed.ops);
}

std::string parse_error(std::string_view ops_json) {
  ParsedUpdateOps parsed = parse_update_ops(J(ops_json));
  EXPECT_TRUE(parsed.ops.empty());
  return parsed.error;
}

// Expects exactly one error, for op `index`, and returns it.
UpdateError single_error(const UpdateResult& r, size_t index = 0) {
  EXPECT_EQ(r.errors.size(), 1u) << json::serialize(r.to_json());
  if (r.errors.empty()) return {};
  EXPECT_EQ(r.errors[0].op_index, index);
  return r.errors[0];
}

void expect_error(const UpdateResult& r, std::string_view code, std::string_view message,
                  size_t index = 0) {
  UpdateError e = single_error(r, index);
  EXPECT_EQ(e.code, code);
  EXPECT_EQ(e.message, message);
}

std::string nested_object(size_t depth) {  // depth 1 = {}
  std::string s;
  for (size_t i = 1; i < depth; ++i) s += "{\"k\":";
  s += "{}";
  for (size_t i = 1; i < depth; ++i) s += "}";
  return s;
}

// ---------------------------------------------------------------------------------------------
// Parsing

TEST(UpdateOpsParse, AllOpTypes) {
  ParsedUpdateOps p = parse_update_ops(J(R"([
    {"type":"set","path":"a","value":1},
    {"type":"merge","path":["x","y"],"value":{"k":1}},
    {"type":"increment","path":"n","by":2},
    {"type":"decrement","path":"","by":-3},
    {"type":"append","path":"l","value":null},
    {"type":"remove","path":"r"}
  ])"));
  ASSERT_TRUE(p.ok()) << p.error;
  ASSERT_EQ(p.ops.size(), 6u);
  EXPECT_EQ(p.ops[0].type, UpdateOpType::kSet);
  EXPECT_EQ(p.ops[0].path, std::vector<std::string>{"a"});
  EXPECT_EQ(p.ops[0].value, J("1"));
  EXPECT_EQ(p.ops[1].type, UpdateOpType::kMerge);
  EXPECT_EQ(p.ops[1].path, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(p.ops[2].type, UpdateOpType::kIncrement);
  EXPECT_EQ(p.ops[2].by, 2);
  EXPECT_EQ(p.ops[3].type, UpdateOpType::kDecrement);
  EXPECT_TRUE(p.ops[3].path.empty());
  EXPECT_EQ(p.ops[3].by, -3);
  EXPECT_EQ(p.ops[4].type, UpdateOpType::kAppend);
  EXPECT_TRUE(p.ops[4].value.is_null());
  EXPECT_EQ(p.ops[5].type, UpdateOpType::kRemove);
}

TEST(UpdateOpsParse, EmptyListIsFine) {
  ParsedUpdateOps p = parse_update_ops(J("[]"));
  EXPECT_TRUE(p.ok());
  EXPECT_TRUE(p.ops.empty());
}

TEST(UpdateOpsParse, SetValueOptional) {
  ParsedUpdateOps p = parse_update_ops(J(R"([{"type":"set","path":"a"}])"));
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p.ops[0].value.is_null());
}

TEST(UpdateOpsParse, MergePathForms) {
  ParsedUpdateOps p = parse_update_ops(J(R"([
    {"type":"merge","value":{}},
    {"type":"merge","path":null,"value":{}},
    {"type":"merge","path":"","value":{}},
    {"type":"merge","path":[],"value":{}},
    {"type":"merge","path":"a.b","value":{}},
    {"type":"merge","path":["a.b"],"value":{}},
    {"type":"merge","path":[""],"value":{}}
  ])"));
  ASSERT_TRUE(p.ok()) << p.error;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(p.ops[i].path.empty()) << i;
  EXPECT_EQ(p.ops[4].path, std::vector<std::string>{"a.b"});
  EXPECT_EQ(p.ops[5].path, std::vector<std::string>{"a.b"});
  EXPECT_EQ(p.ops[6].path, std::vector<std::string>{""});  // rejected later, per op
}

TEST(UpdateOpsParse, ExtraFieldsIgnored) {
  EXPECT_TRUE(parse_update_ops(J(R"([{"type":"remove","path":"a","extra":1}])")).ok());
}

TEST(UpdateOpsParse, WholeRequestErrors) {
  EXPECT_EQ(parse_error("null"), "invalid type: null, expected a sequence");
  EXPECT_EQ(parse_error(R"({"type":"set"})"), "invalid type: map, expected a sequence");
  EXPECT_EQ(parse_error(R"(["set"])"),
            "invalid type: string \"set\", expected internally tagged enum UpdateOp");
  EXPECT_EQ(parse_error(R"([{"path":"a"}])"), "missing field `type`");
  EXPECT_EQ(parse_error(R"([{"type":1}])"),
            "invalid type: integer `1`, expected variant identifier");
  EXPECT_EQ(parse_error(R"([{"type":"Set","path":"a"}])"),
            "unknown variant `Set`, expected one of `set`, `merge`, `increment`, `decrement`, "
            "`append`, `remove`");
  EXPECT_EQ(parse_error(R"([{"type":"set","value":1}])"), "missing field `path`");
  EXPECT_EQ(parse_error(R"([{"type":"set","path":null}])"),
            "invalid type: null, expected a string");
  EXPECT_EQ(parse_error(R"([{"type":"remove","path":["a"]}])"),
            "invalid type: sequence, expected a string");
  EXPECT_EQ(parse_error(R"([{"type":"append","path":"a"}])"), "missing field `value`");
  EXPECT_EQ(parse_error(R"([{"type":"merge","path":"a"}])"), "missing field `value`");
  EXPECT_EQ(parse_error(R"([{"type":"merge","path":5,"value":{}}])"),
            "invalid type: integer `5`, expected a string or an array of strings");
  EXPECT_EQ(parse_error(R"([{"type":"merge","path":["a",1],"value":{}}])"),
            "invalid type: integer `1`, expected a string");
  EXPECT_EQ(parse_error(R"([{"type":"increment","path":"a"}])"), "missing field `by`");
  EXPECT_EQ(parse_error(R"([{"type":"increment","path":"a","by":1.5}])"),
            "invalid type: floating point `1.5`, expected i64");
  EXPECT_EQ(parse_error(R"([{"type":"decrement","path":"a","by":1.0}])"),
            "invalid type: floating point `1.0`, expected i64");
  EXPECT_EQ(parse_error(R"([{"type":"increment","path":"a","by":"1"}])"),
            "invalid type: string \"1\", expected i64");
  EXPECT_EQ(parse_error(R"([{"type":"increment","path":"a","by":18446744073709551615}])"),
            "invalid value: integer `18446744073709551615`, expected i64");
}

TEST(UpdateOpsParse, OneBadOpRejectsAll) {
  EXPECT_EQ(parse_error(R"([{"type":"set","path":"a","value":1},{"type":"bogus"}])"),
            "unknown variant `bogus`, expected one of `set`, `merge`, `increment`, `decrement`, "
            "`append`, `remove`");
}

// ---------------------------------------------------------------------------------------------
// Starting value and results

TEST(UpdateOps, EmptyOpsOnMissingCreatesEmptyObject) {
  UpdateResult r = run(std::nullopt, "[]");
  EXPECT_EQ(r.new_value, J("{}"));
  EXPECT_FALSE(r.old_value);
  EXPECT_EQ(json::serialize(r.to_json()), R"({"old_value":null,"new_value":{}})");
}

TEST(UpdateOps, EmptyOpsKeepsExisting) {
  UpdateResult r = run(J(R"({"a":1})"), "[]");
  EXPECT_EQ(r.new_value, J(R"({"a":1})"));
  EXPECT_EQ(*r.old_value, J(R"({"a":1})"));
}

TEST(UpdateOps, ResultJsonWithErrors) {
  UpdateResult r = run(J(R"({"a":1})"), R"([{"type":"set","path":"b","value":2},
                                             {"type":"increment","path":"a","by":1},
                                             {"type":"remove","path":"__proto__"}])");
  EXPECT_EQ(json::serialize(r.to_json()),
            R"({"old_value":{"a":1},"new_value":{"a":2,"b":2},"errors":[{"op_index":2,)"
            R"("code":"remove.path.proto_polluted","message":"Path segment '__proto__' is not )"
            R"(allowed (prototype pollution).","doc_url":"https://iii.dev/docs/workers/)"
            R"(iii-state#error-codes"}]})");
}

TEST(UpdateOps, StoredNullIsNotMissing) {
  expect_error(run(J("null"), R"([{"type":"increment","path":"","by":1}])"), "increment.not_number",
               "Expected number at path 'root', got null.");
  UpdateResult r = run(J("null"), R"([{"type":"append","path":"","value":1}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J("[1]"));
}

TEST(UpdateOps, FailingOpDoesNotStopOthers) {
  UpdateResult r = run(J(R"({"n":"x","keep":true})"), R"([
    {"type":"set","path":"a","value":1},
    {"type":"increment","path":"n","by":1},
    {"type":"append","path":"l","value":"s"},
    {"type":"merge","path":"m","value":[]},
    {"type":"set","path":"b","value":2}
  ])");
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].op_index, 1u);
  EXPECT_EQ(r.errors[0].code, "increment.not_number");
  EXPECT_EQ(r.errors[1].op_index, 3u);
  EXPECT_EQ(r.errors[1].code, "merge.value.not_an_object");
  EXPECT_EQ(r.new_value, J(R"({"n":"x","keep":true,"a":1,"l":"s","b":2})"));
}

TEST(UpdateOps, AllOpsFailingStillReturnsValue) {
  UpdateResult r = run(std::nullopt, R"([{"type":"set","path":"constructor","value":1}])");
  EXPECT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.new_value, J("{}"));
}

TEST(UpdateOps, ErrorJson) {
  UpdateError e{3, "set.target_not_object", "m"};
  EXPECT_EQ(json::serialize(e.to_json()),
            R"({"op_index":3,"code":"set.target_not_object","message":"m",)"
            R"("doc_url":"https://iii.dev/docs/workers/iii-state#error-codes"})");
}

// ---------------------------------------------------------------------------------------------
// set

TEST(UpdateOpsSet, KeyPreservesSiblings) {
  UpdateResult r = run(J(R"({"a":1,"b":{"c":2}})"), R"([{"type":"set","path":"a","value":[1]}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":[1],"b":{"c":2}})"));
}

TEST(UpdateOpsSet, DottedPathIsLiteralKey) {
  UpdateResult r = run(J(R"({"a":{"b":1}})"), R"([{"type":"set","path":"a.b","value":2}])");
  EXPECT_EQ(r.new_value, J(R"({"a":{"b":1},"a.b":2})"));
}

TEST(UpdateOpsSet, OnMissingItem) {
  UpdateResult r = run(std::nullopt, R"([{"type":"set","path":"a","value":"x"}])");
  EXPECT_EQ(r.new_value, J(R"({"a":"x"})"));
}

TEST(UpdateOpsSet, MissingValueSetsNull) {
  UpdateResult r = run(J("{}"), R"([{"type":"set","path":"a"}])");
  EXPECT_EQ(r.new_value, J(R"({"a":null})"));
}

TEST(UpdateOpsSet, RootReplaces) {
  EXPECT_EQ(run(J(R"({"a":1})"), R"([{"type":"set","path":"","value":5}])").new_value, J("5"));
  EXPECT_EQ(run(J(R"({"a":1})"), R"([{"type":"set","path":""}])").new_value, J("null"));
  EXPECT_EQ(run(std::nullopt, R"([{"type":"set","path":"","value":[1]}])").new_value, J("[1]"));
}

TEST(UpdateOpsSet, TargetNotObject) {
  expect_error(run(J("[1]"), R"([{"type":"set","path":"a","value":1}])"), "set.target_not_object",
               "Cannot set at path 'a': target is array, expected object.");
  expect_error(run(J("\"s\""), R"([{"type":"set","path":"a","value":1}])"), "set.target_not_object",
               "Cannot set at path 'a': target is string, expected object.");
  expect_error(run(J("true"), R"([{"type":"set","path":"a","value":1}])"), "set.target_not_object",
               "Cannot set at path 'a': target is boolean, expected object.");
}

TEST(UpdateOpsSet, PathErrors) {
  expect_error(run(J("{}"), R"([{"type":"set","path":"prototype","value":1}])"),
               "set.path.proto_polluted",
               "Path segment 'prototype' is not allowed (prototype pollution).");
  const std::string long_key(257, 'k');
  expect_error(run(J("{}"), R"([{"type":"set","path":")" + long_key + R"(","value":1}])"),
               "set.path.segment_too_long", "Path segment of 257 bytes exceeds maximum of 256");
  // 256 bytes is allowed.
  const std::string ok_key(256, 'k');
  EXPECT_TRUE(
      run(J("{}"), R"([{"type":"set","path":")" + ok_key + R"(","value":1}])").errors.empty());
}

// ---------------------------------------------------------------------------------------------
// merge

TEST(UpdateOpsMerge, RootShallowMerge) {
  UpdateResult r =
      run(J(R"({"a":1,"b":{"x":1,"y":2}})"), R"([{"type":"merge","value":{"b":{"x":9},"c":3}}])");
  EXPECT_TRUE(r.errors.empty());
  // Shallow: `b` is replaced, not deep-merged.
  EXPECT_EQ(r.new_value, J(R"({"a":1,"b":{"x":9},"c":3})"));
}

TEST(UpdateOpsMerge, RootMergeOnMissingItem) {
  UpdateResult r = run(std::nullopt, R"([{"type":"merge","path":[],"value":{"a":1}}])");
  EXPECT_EQ(r.new_value, J(R"({"a":1})"));
}

TEST(UpdateOpsMerge, RootMergeOnNonObjectSkippedSilently) {
  UpdateResult r = run(J("[1,2]"), R"([{"type":"merge","path":"","value":{"a":1}}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J("[1,2]"));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("array"), std::string::npos);
}

TEST(UpdateOpsMerge, StringPathEqualsSingleSegment) {
  UpdateResult a =
      run(J(R"({"s":{"x":1},"t":2})"), R"([{"type":"merge","path":"s","value":{"y":2}}])");
  UpdateResult b =
      run(J(R"({"s":{"x":1},"t":2})"), R"([{"type":"merge","path":["s"],"value":{"y":2}}])");
  EXPECT_EQ(a.new_value, J(R"({"s":{"x":1,"y":2},"t":2})"));
  EXPECT_EQ(a.new_value, b.new_value);
}

TEST(UpdateOpsMerge, NestedWalkPreservesSiblings) {
  UpdateResult r = run(J(R"({"a":{"b":{"c":1,"d":2},"e":3},"f":4})"),
                       R"([{"type":"merge","path":["a","b"],"value":{"c":10,"g":5}}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":{"b":{"c":10,"d":2,"g":5},"e":3},"f":4})"));
}

TEST(UpdateOpsMerge, NestedCreatesMissingLevels) {
  UpdateResult r = run(std::nullopt, R"([{"type":"merge","path":["a","b","c"],"value":{"x":1}}])");
  EXPECT_EQ(r.new_value, J(R"({"a":{"b":{"c":{"x":1}}}})"));
}

TEST(UpdateOpsMerge, DottedSegmentIsLiteral) {
  UpdateResult r = run(J("{}"), R"([{"type":"merge","path":["a.b"],"value":{"x":1}}])");
  EXPECT_EQ(r.new_value, J(R"({"a.b":{"x":1}})"));
}

TEST(UpdateOpsMerge, NestedReplacesNonObjects) {
  // Non-object intermediate and target are replaced by {}.
  UpdateResult r =
      run(J(R"({"a":5,"z":1})"), R"([{"type":"merge","path":["a","b"],"value":{"x":1}}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":{"b":{"x":1}},"z":1})"));
  r = run(J(R"({"a":[1]})"), R"([{"type":"merge","path":"a","value":{"x":1}}])");
  EXPECT_EQ(r.new_value, J(R"({"a":{"x":1}})"));
  // A non-object root is replaced too for a nested merge.
  r = run(J("42"), R"([{"type":"merge","path":"a","value":{"x":1}}])");
  EXPECT_EQ(r.new_value, J(R"({"a":{"x":1}})"));
}

TEST(UpdateOpsMerge, PathTooDeep) {
  json::array path;
  for (int i = 0; i < 33; ++i) path.push_back("k");
  json::array ops{json::object{{"type", "merge"}, {"path", path}, {"value", json::object{}}}};
  ParsedUpdateOps p = parse_update_ops(ops);
  ASSERT_TRUE(p.ok());
  expect_error(apply_update_ops(J("{}"), p.ops), "merge.path.too_deep",
               "Path depth 33 exceeds maximum of 32");
  path.pop_back();  // 32 is allowed
  ops = json::array{json::object{{"type", "merge"}, {"path", path}, {"value", json::object{}}}};
  p = parse_update_ops(ops);
  EXPECT_TRUE(apply_update_ops(J("{}"), p.ops).errors.empty());
}

TEST(UpdateOpsMerge, PathSegmentErrors) {
  expect_error(run(J("{}"), R"([{"type":"merge","path":["a",""],"value":{}}])"),
               "merge.path.empty_segment", "Path contains an empty segment");
  expect_error(run(J("{}"), R"([{"type":"merge","path":[""],"value":{}}])"),
               "merge.path.empty_segment", "Path contains an empty segment");
  const std::string long_key(300, 'x');
  expect_error(run(J("{}"), R"([{"type":"merge","path":["a",")" + long_key + R"("],"value":{}}])"),
               "merge.path.segment_too_long", "Path segment of 300 bytes exceeds maximum of 256");
  expect_error(run(J("{}"), R"([{"type":"merge","path":["a","__proto__"],"value":{}}])"),
               "merge.path.proto_polluted",
               "Path segment '__proto__' is not allowed (prototype pollution).");
  expect_error(run(J("{}"), R"([{"type":"merge","path":"constructor","value":{}}])"),
               "merge.path.proto_polluted",
               "Path segment 'constructor' is not allowed (prototype pollution).");
}

TEST(UpdateOpsMerge, ValidationOrder) {
  // Empty segment is reported before a later proto segment, path before value.
  expect_error(run(J("{}"), R"([{"type":"merge","path":["","__proto__"],"value":5}])"),
               "merge.path.empty_segment", "Path contains an empty segment");
  expect_error(run(J("{}"), R"([{"type":"merge","path":["__proto__"],"value":5}])"),
               "merge.path.proto_polluted",
               "Path segment '__proto__' is not allowed (prototype pollution).");
  // Key count before proto keys before depth.
  json::object big;
  big["__proto__"] = json::parse(nested_object(20));
  for (int i = 0; i < 1024; ++i) big["k" + std::to_string(i)] = i;
  UpdateOp op;
  op.type = UpdateOpType::kMerge;
  op.value = big;
  expect_error(apply_update_ops(J("{}"), {op}), "merge.value.too_many_keys",
               "Merge value has 1025 top-level keys, exceeds maximum of 1024");
  op.value = json::object{{"__proto__", json::parse(nested_object(20))}};
  expect_error(apply_update_ops(J("{}"), {op}), "merge.value.proto_polluted",
               "Merge value top-level key \"__proto__\" is a prototype-pollution sink");
}

TEST(UpdateOpsMerge, ValueNotObject) {
  for (const char* v : {"null", "1", "\"s\"", "[]", "true"}) {
    expect_error(run(J("{}"), std::string(R"([{"type":"merge","value":)") + v + "}]"),
                 "merge.value.not_an_object", "Merge value must be a JSON object");
  }
}

TEST(UpdateOpsMerge, TooManyKeys) {
  json::object v;
  for (int i = 0; i < 1024; ++i) v["k" + std::to_string(i)] = i;
  UpdateOp op;
  op.type = UpdateOpType::kMerge;
  op.value = v;
  UpdateResult ok = apply_update_ops(std::nullopt, {op});
  EXPECT_TRUE(ok.errors.empty());
  EXPECT_EQ(ok.new_value.get_object().size(), 1024u);
  v["extra"] = 1;
  op.value = v;
  expect_error(apply_update_ops(std::nullopt, {op}), "merge.value.too_many_keys",
               "Merge value has 1025 top-level keys, exceeds maximum of 1024");
}

TEST(UpdateOpsMerge, ValueProtoKeys) {
  expect_error(run(J("{}"), R"([{"type":"merge","value":{"a":1,"prototype":2}}])"),
               "merge.value.proto_polluted",
               "Merge value top-level key \"prototype\" is a prototype-pollution sink");
  // Only top-level keys are checked.
  UpdateResult r = run(J("{}"), R"([{"type":"merge","value":{"a":{"__proto__":1}}}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":{"__proto__":1}})"));
}

TEST(UpdateOpsMerge, ValueTooDeep) {
  UpdateOp op;
  op.type = UpdateOpType::kMerge;
  op.value = J(nested_object(16));
  EXPECT_TRUE(apply_update_ops(J("{}"), {op}).errors.empty());
  op.value = J(nested_object(17));
  expect_error(apply_update_ops(J("{}"), {op}), "merge.value.too_deep",
               "Merge value JSON nesting depth 17 exceeds maximum of 16");
  // Arrays count as a level too.
  op.value = J(R"({"a":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]})");  // 1 + 16 arrays
  expect_error(apply_update_ops(J("{}"), {op}), "merge.value.too_deep",
               "Merge value JSON nesting depth 17 exceeds maximum of 16");
}

// json::value copies and destroys recursively, so unwind a deep chain one level at a time.
void destroy_chain(json::value v) {
  while (json::value* k = v.is_object() ? v.get_object().if_contains("k") : nullptr) {
    json::value next = std::move(*k);  // leaves null behind, so v dies shallow
    v = std::move(next);
  }
}

TEST(UpdateOpsMerge, DepthOfHostileNestingDoesNotRecurse) {
  // Far deeper than the parser's default limit; built in place and never copied.
  std::vector<UpdateOp> ops(1);
  ops[0].type = UpdateOpType::kMerge;
  json::value& v = ops[0].value;
  v = json::object();
  for (int i = 0; i < 100000; ++i) {
    json::object o;
    o["k"] = std::move(v);
    v = std::move(o);
  }
  EXPECT_EQ(json_depth(v), 100001u);
  expect_error(apply_update_ops(J("{}"), ops), "merge.value.too_deep",
               "Merge value JSON nesting depth 100001 exceeds maximum of 16");
  destroy_chain(std::move(v));
}

TEST(UpdateOpsMerge, JsonDepth) {
  EXPECT_EQ(json_depth(J("1")), 0u);
  EXPECT_EQ(json_depth(J("null")), 0u);
  EXPECT_EQ(json_depth(J("{}")), 1u);
  EXPECT_EQ(json_depth(J("[]")), 1u);
  EXPECT_EQ(json_depth(J(R"({"a":1,"b":[{}],"c":{}})")), 3u);
}

// ---------------------------------------------------------------------------------------------
// increment / decrement

TEST(UpdateOpsIncrement, KeyedArithmetic) {
  UpdateResult r = run(J(R"({"n":5,"f":1.5,"s":"x"})"), R"([
    {"type":"increment","path":"n","by":3},
    {"type":"decrement","path":"f","by":1},
    {"type":"increment","path":"new","by":7},
    {"type":"decrement","path":"neg","by":7}
  ])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"n":8,"f":0.5,"s":"x","new":7,"neg":-7})"));
  EXPECT_TRUE(r.new_value.at("f").is_double());
}

TEST(UpdateOpsIncrement, NegativeBy) {
  UpdateResult r = run(J(R"({"n":5})"), R"([{"type":"increment","path":"n","by":-10},
                                             {"type":"decrement","path":"n","by":-1}])");
  EXPECT_EQ(r.new_value, J(R"({"n":-4})"));
}

TEST(UpdateOpsIncrement, RootMissingItem) {
  EXPECT_EQ(run(std::nullopt, R"([{"type":"increment","path":"","by":4}])").new_value, J("4"));
  EXPECT_EQ(run(std::nullopt, R"([{"type":"decrement","path":"","by":4}])").new_value, J("-4"));
}

TEST(UpdateOpsIncrement, RootMissingAccumulates) {
  // "Missing" ends with the first successful op, so repeated root increments add up.
  UpdateResult r = run(std::nullopt, R"([{"type":"increment","path":"","by":4},
                                          {"type":"increment","path":"","by":4}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J("8"));
}

TEST(UpdateOpsIncrement, RootMissingAfterKeyedSetIsObject) {
  UpdateResult r = run(std::nullopt, R"([{"type":"set","path":"a","value":1},
                                          {"type":"increment","path":"","by":4}])");
  expect_error(r, "increment.not_number", "Expected number at path 'root', got object.", 1);
  EXPECT_EQ(r.new_value, J(R"({"a":1})"));
}

TEST(UpdateOpsIncrement, RootMissingSurvivesFailedOp) {
  UpdateResult r = run(std::nullopt, R"([{"type":"set","path":"__proto__","value":1},
                                          {"type":"increment","path":"","by":4}])");
  EXPECT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.new_value, J("4"));
}

TEST(UpdateOpsIncrement, RootExisting) {
  EXPECT_EQ(run(J("10"), R"([{"type":"decrement","path":"","by":3}])").new_value, J("7"));
  EXPECT_EQ(run(J("2.5"), R"([{"type":"increment","path":"","by":1}])").new_value, J("3.5"));
}

TEST(UpdateOpsIncrement, RootNotNumber) {
  expect_error(run(J(R"({"a":1})"), R"([{"type":"increment","path":"","by":1}])"),
               "increment.not_number", "Expected number at path 'root', got object.");
  expect_error(run(J("\"5\""), R"([{"type":"decrement","path":"","by":1}])"),
               "decrement.not_number", "Expected number at path 'root', got string.");
  expect_error(run(J("[]"), R"([{"type":"decrement","path":"","by":1}])"), "decrement.not_number",
               "Expected number at path 'root', got array.");
}

TEST(UpdateOpsIncrement, KeyedNotNumber) {
  expect_error(run(J(R"({"a":"1"})"), R"([{"type":"increment","path":"a","by":1}])"),
               "increment.not_number", "Expected number at path 'a', got string.");
  expect_error(run(J(R"({"a":null})"), R"([{"type":"decrement","path":"a","by":1}])"),
               "decrement.not_number", "Expected number at path 'a', got null.");
  expect_error(run(J(R"({"a":false})"), R"([{"type":"decrement","path":"a","by":1}])"),
               "decrement.not_number", "Expected number at path 'a', got boolean.");
}

TEST(UpdateOpsIncrement, TargetNotObject) {
  expect_error(run(J("5"), R"([{"type":"increment","path":"a","by":1}])"),
               "increment.target_not_object",
               "Cannot increment at path 'a': target is number, expected object.");
  expect_error(run(J("null"), R"([{"type":"decrement","path":"a","by":1}])"),
               "decrement.target_not_object",
               "Cannot decrement at path 'a': target is null, expected object.");
}

TEST(UpdateOpsIncrement, PathErrors) {
  expect_error(run(J("{}"), R"([{"type":"increment","path":"__proto__","by":1}])"),
               "increment.path.proto_polluted",
               "Path segment '__proto__' is not allowed (prototype pollution).");
  const std::string long_key(1000, 'x');
  expect_error(run(J("{}"), R"([{"type":"decrement","path":")" + long_key + R"(","by":1}])"),
               "decrement.path.segment_too_long",
               "Path segment of 1000 bytes exceeds maximum of 256");
}

TEST(UpdateOpsIncrement, IntegerRange) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  UpdateOp inc;
  inc.type = UpdateOpType::kIncrement;
  inc.by = 1;
  // Past i64::MAX the result continues as a u64.
  UpdateResult r = apply_update_ops(json::value(kMax), {inc});
  EXPECT_TRUE(r.errors.empty());
  ASSERT_TRUE(r.new_value.is_uint64());
  EXPECT_EQ(r.new_value.get_uint64(), uint64_t{1} << 63);
  // And back down into i64.
  UpdateOp dec;
  dec.type = UpdateOpType::kDecrement;
  dec.by = 1;
  r = apply_update_ops(json::value(uint64_t{1} << 63), {dec});
  ASSERT_TRUE(r.new_value.is_int64());
  EXPECT_EQ(r.new_value.get_int64(), kMax);
  // Beyond u64 / below i64: reported as not_number (code kept from the original).
  r = apply_update_ops(json::value(std::numeric_limits<uint64_t>::max()), {inc});
  expect_error(r, "increment.not_number",
               "Cannot increment at path 'root': result is out of the 64-bit number range.");
  EXPECT_EQ(r.new_value.get_uint64(), std::numeric_limits<uint64_t>::max());  // unchanged
  r = apply_update_ops(json::value(kMin), {dec});
  expect_error(r, "decrement.not_number",
               "Cannot decrement at path 'root': result is out of the 64-bit number range.");
}

TEST(UpdateOpsIncrement, DecrementByI64Min) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  UpdateOp dec;
  dec.type = UpdateOpType::kDecrement;
  dec.by = kMin;
  // Missing root: -i64::MIN is its absolute value.
  UpdateResult r = apply_update_ops(std::nullopt, {dec});
  ASSERT_TRUE(r.new_value.is_uint64());
  EXPECT_EQ(r.new_value.get_uint64(), uint64_t{1} << 63);
  dec.path = {"k"};
  r = apply_update_ops(J("{}"), {dec});
  ASSERT_TRUE(r.new_value.at("k").is_uint64());
  EXPECT_EQ(r.new_value.at("k").get_uint64(), uint64_t{1} << 63);
  r = apply_update_ops(J(R"({"k":-1})"), {dec});
  EXPECT_EQ(r.new_value.at("k").get_int64(), std::numeric_limits<int64_t>::max());
}

TEST(UpdateOpsIncrement, ParsedByRange) {
  UpdateResult r =
      run(J(R"({"n":0})"), R"([{"type":"increment","path":"n","by":9223372036854775807}])");
  EXPECT_EQ(r.new_value.at("n").get_int64(), std::numeric_limits<int64_t>::max());
  r = run(J(R"({"n":0})"), R"([{"type":"increment","path":"n","by":-9223372036854775808}])");
  EXPECT_EQ(r.new_value.at("n").get_int64(), std::numeric_limits<int64_t>::min());
}

// ---------------------------------------------------------------------------------------------
// append

TEST(UpdateOpsAppend, ToArray) {
  UpdateResult r = run(J(R"({"l":[1],"o":true})"),
                       R"([{"type":"append","path":"l","value":{"x":1}},
                           {"type":"append","path":"l","value":[2]}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"l":[1,{"x":1},[2]],"o":true})"));
}

TEST(UpdateOpsAppend, StringConcat) {
  UpdateResult r = run(J(R"({"s":"ab"})"), R"([{"type":"append","path":"s","value":"cd"}])");
  EXPECT_EQ(r.new_value, J(R"({"s":"abcd"})"));
}

TEST(UpdateOpsAppend, StringTypeMismatch) {
  UpdateResult r = run(J(R"({"s":"ab"})"), R"([{"type":"append","path":"s","value":1}])");
  expect_error(r, "append.type_mismatch", "Expected string append value at path 's', got number.");
  EXPECT_EQ(r.new_value, J(R"({"s":"ab"})"));
  expect_error(run(J("\"ab\""), R"([{"type":"append","path":"","value":["x"]}])"),
               "append.type_mismatch", "Expected string append value at path 'root', got array.");
}

TEST(UpdateOpsAppend, MissingKey) {
  UpdateResult r = run(J(R"({"a":1})"), R"([{"type":"append","path":"s","value":"x"},
                                             {"type":"append","path":"l","value":1},
                                             {"type":"append","path":"n","value":null}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":1,"s":"x","l":[1],"n":[null]})"));
}

TEST(UpdateOpsAppend, NullTarget) {
  UpdateResult r = run(J(R"({"s":null,"l":null})"), R"([{"type":"append","path":"s","value":"x"},
                                                        {"type":"append","path":"l","value":2}])");
  EXPECT_EQ(r.new_value, J(R"({"s":"x","l":[2]})"));
}

TEST(UpdateOpsAppend, RootMissingItem) {
  EXPECT_EQ(run(std::nullopt, R"([{"type":"append","path":"","value":"x"}])").new_value,
            J("\"x\""));
  EXPECT_EQ(run(std::nullopt, R"([{"type":"append","path":"","value":1}])").new_value, J("[1]"));
  UpdateResult r = run(std::nullopt, R"([{"type":"append","path":"","value":1},
                                          {"type":"append","path":"","value":2}])");
  EXPECT_EQ(r.new_value, J("[1,2]"));
}

TEST(UpdateOpsAppend, RootExisting) {
  EXPECT_EQ(run(J("[1]"), R"([{"type":"append","path":"","value":2}])").new_value, J("[1,2]"));
  EXPECT_EQ(run(J("\"a\""), R"([{"type":"append","path":"","value":"b"}])").new_value, J("\"ab\""));
  expect_error(run(J(R"({"a":1})"), R"([{"type":"append","path":"","value":2}])"),
               "append.type_mismatch",
               "Cannot append at path 'root': target is object, expected array, string, null, or "
               "missing field.");
}

TEST(UpdateOpsAppend, KeyedTargetMismatch) {
  expect_error(run(J(R"({"n":1})"), R"([{"type":"append","path":"n","value":2}])"),
               "append.type_mismatch",
               "Cannot append at path 'n': target is number, expected array, string, null, or "
               "missing field.");
  expect_error(run(J(R"({"o":{}})"), R"([{"type":"append","path":"o","value":"s"}])"),
               "append.type_mismatch",
               "Cannot append at path 'o': target is object, expected array, string, null, or "
               "missing field.");
}

TEST(UpdateOpsAppend, TargetNotObject) {
  expect_error(run(J("[1]"), R"([{"type":"append","path":"a","value":2}])"),
               "append.target_not_object",
               "Cannot append at path 'a': target is array, expected object.");
}

TEST(UpdateOpsAppend, PathErrors) {
  expect_error(run(J("{}"), R"([{"type":"append","path":"constructor","value":2}])"),
               "append.path.proto_polluted",
               "Path segment 'constructor' is not allowed (prototype pollution).");
  const std::string long_key(257, 'y');
  expect_error(run(J("{}"), R"([{"type":"append","path":")" + long_key + R"(","value":2}])"),
               "append.path.segment_too_long", "Path segment of 257 bytes exceeds maximum of 256");
}

// ---------------------------------------------------------------------------------------------
// remove

TEST(UpdateOpsRemove, KeyPreservesSiblings) {
  UpdateResult r = run(J(R"({"a":1,"b":2,"c":3})"), R"([{"type":"remove","path":"b"}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":1,"c":3})"));
}

TEST(UpdateOpsRemove, AbsentKeyIsNoError) {
  UpdateResult r = run(J(R"({"a":1})"), R"([{"type":"remove","path":"zz"}])");
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.new_value, J(R"({"a":1})"));
  EXPECT_EQ(run(std::nullopt, R"([{"type":"remove","path":"zz"}])").new_value, J("{}"));
}

TEST(UpdateOpsRemove, RootBecomesNull) {
  EXPECT_EQ(run(J(R"({"a":1})"), R"([{"type":"remove","path":""}])").new_value, J("null"));
  EXPECT_EQ(run(std::nullopt, R"([{"type":"remove","path":""}])").new_value, J("null"));
}

TEST(UpdateOpsRemove, TargetNotObject) {
  expect_error(run(J("\"s\""), R"([{"type":"remove","path":"a"}])"), "remove.target_not_object",
               "Cannot remove at path 'a': target is string, expected object.");
  // After a root remove the value is null.
  UpdateResult r = run(J(R"({"a":1})"), R"([{"type":"remove","path":""},
                                             {"type":"remove","path":"a"}])");
  expect_error(r, "remove.target_not_object",
               "Cannot remove at path 'a': target is null, expected object.", 1);
}

TEST(UpdateOpsRemove, PathErrors) {
  expect_error(run(J(R"({"prototype":1})"), R"([{"type":"remove","path":"prototype"}])"),
               "remove.path.proto_polluted",
               "Path segment 'prototype' is not allowed (prototype pollution).");
  const std::string long_key(257, 'z');
  expect_error(run(J("{}"), R"([{"type":"remove","path":")" + long_key + R"("}])"),
               "remove.path.segment_too_long", "Path segment of 257 bytes exceeds maximum of 256");
}

TEST(UpdateOps, OpNames) {
  EXPECT_EQ(update_op_name(UpdateOpType::kSet), "set");
  EXPECT_EQ(update_op_name(UpdateOpType::kMerge), "merge");
  EXPECT_EQ(update_op_name(UpdateOpType::kIncrement), "increment");
  EXPECT_EQ(update_op_name(UpdateOpType::kDecrement), "decrement");
  EXPECT_EQ(update_op_name(UpdateOpType::kAppend), "append");
  EXPECT_EQ(update_op_name(UpdateOpType::kRemove), "remove");
}

TEST(UpdateOps, KeyOrderKeptOnOverwrite) {
  UpdateResult r = run(J(R"({"a":1,"b":2})"), R"([{"type":"set","path":"a","value":3},
                                                   {"type":"merge","value":{"b":4,"c":5}}])");
  EXPECT_EQ(json::serialize(r.new_value), R"({"a":3,"b":4,"c":5})");
}

}  // namespace
}  // namespace iii::storage
