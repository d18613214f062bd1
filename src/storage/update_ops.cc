#include "storage/update_ops.h"

#include <array>
#include <boost/json/array.hpp>
#include <boost/json/string.hpp>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

namespace iii::storage {
namespace {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------------
// Parsing. Messages follow serde's wording, since the original rejects a bad shape while
// deserializing the whole input.

std::string format_double(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::array<char, 64> buf{};
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), d);
  std::string s(buf.data(), end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // serde prints 1.0, not 1
  return s;
}

// serde's `Unexpected` rendering of a value.
std::string unexpected(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return std::string("boolean `") + (v.get_bool() ? "true" : "false") + "`";
    case json::kind::int64:
      return "integer `" + std::to_string(v.get_int64()) + "`";
    case json::kind::uint64:
      return "integer `" + std::to_string(v.get_uint64()) + "`";
    case json::kind::double_:
      return "floating point `" + format_double(v.get_double()) + "`";
    case json::kind::string:
      return "string \"" + std::string(v.get_string()) + "\"";
    case json::kind::array:
      return "sequence";
    case json::kind::object:
      return "map";
  }
  return "value";
}

std::string invalid_type(const json::value& v, std::string_view expected) {
  return "invalid type: " + unexpected(v) + ", expected " + std::string(expected);
}

std::string missing_field(std::string_view name) {
  return "missing field `" + std::string(name) + "`";
}

constexpr std::array<std::pair<std::string_view, UpdateOpType>, 6> kOpNames{{
    {"set", UpdateOpType::kSet},
    {"merge", UpdateOpType::kMerge},
    {"increment", UpdateOpType::kIncrement},
    {"decrement", UpdateOpType::kDecrement},
    {"append", UpdateOpType::kAppend},
    {"remove", UpdateOpType::kRemove},
}};

// Non-merge `path`: a required string; "" is the root.
std::string parse_key_path(const json::object& o, UpdateOp& op) {
  const json::value* p = o.if_contains("path");
  if (!p) return missing_field("path");
  if (!p->is_string()) return invalid_type(*p, "a string");
  if (!p->get_string().empty()) op.path.emplace_back(p->get_string());
  return {};
}

// Merge `path`: absent/null, "" or [] → root; "k" ≡ ["k"]; an array is a list of literal keys.
std::string parse_merge_path(const json::object& o, UpdateOp& op) {
  const json::value* p = o.if_contains("path");
  if (!p || p->is_null()) return {};
  if (p->is_string()) {
    if (!p->get_string().empty()) op.path.emplace_back(p->get_string());
    return {};
  }
  if (p->is_array()) {
    for (const json::value& seg : p->get_array()) {
      if (!seg.is_string()) return invalid_type(seg, "a string");
      op.path.emplace_back(seg.get_string());
    }
    return {};
  }
  return invalid_type(*p, "a string or an array of strings");
}

std::string parse_by(const json::object& o, UpdateOp& op) {
  const json::value* b = o.if_contains("by");
  if (!b) return missing_field("by");
  if (b->is_int64()) {
    op.by = b->get_int64();
    return {};
  }
  if (b->is_uint64()) return "invalid value: " + unexpected(*b) + ", expected i64";
  return invalid_type(*b, "i64");
}

// A required `value` may be null but must be present.
std::string parse_value(const json::object& o, UpdateOp& op, bool required) {
  const json::value* v = o.if_contains("value");
  if (!v) return required ? missing_field("value") : std::string();
  op.value = *v;
  return {};
}

std::string parse_one(const json::value& raw, UpdateOp& op) {
  if (!raw.is_object()) return invalid_type(raw, "internally tagged enum UpdateOp");
  const json::object& o = raw.get_object();
  const json::value* t = o.if_contains("type");
  if (!t) return missing_field("type");
  if (!t->is_string()) return invalid_type(*t, "variant identifier");
  const std::string_view name = t->get_string();
  bool known = false;
  for (const auto& [n, type] : kOpNames) {
    if (n == name) {
      op.type = type;
      known = true;
    }
  }
  if (!known) {
    return "unknown variant `" + std::string(name) +
           "`, expected one of `set`, `merge`, `increment`, `decrement`, `append`, `remove`";
  }
  std::string err;
  switch (op.type) {
    case UpdateOpType::kSet:
      if (err = parse_key_path(o, op); err.empty()) err = parse_value(o, op, false);
      break;
    case UpdateOpType::kMerge:
      if (err = parse_merge_path(o, op); err.empty()) err = parse_value(o, op, true);
      break;
    case UpdateOpType::kIncrement:
    case UpdateOpType::kDecrement:
      if (err = parse_key_path(o, op); err.empty()) err = parse_by(o, op);
      break;
    case UpdateOpType::kAppend:
      if (err = parse_key_path(o, op); err.empty()) err = parse_value(o, op, true);
      break;
    case UpdateOpType::kRemove:
      err = parse_key_path(o, op);
      break;
  }
  return err;
}

// ---------------------------------------------------------------------------------------------
// Applying.

struct Failure {
  std::string code;
  std::string message;
};
using MaybeFailure = std::optional<Failure>;

Failure fail(UpdateOpType t, std::string_view suffix, std::string message) {
  return {std::string(update_op_name(t)) + "." + std::string(suffix), std::move(message)};
}

bool forbidden_key(std::string_view k) {
  return k == "__proto__" || k == "constructor" || k == "prototype";
}

// `{p}` in messages: the key, or `root`.
std::string shown_path(const UpdateOp& op) { return op.path.empty() ? "root" : op.path[0]; }

std::string type_str(const json::value& v) { return std::string(json_type_name(v)); }

// Order: depth, then per segment empty → length → prototype keys.
MaybeFailure validate_path(const UpdateOp& op) {
  if (op.path.size() > kMaxPathDepth) {
    return fail(op.type, "path.too_deep",
                "Path depth " + std::to_string(op.path.size()) + " exceeds maximum of " +
                    std::to_string(kMaxPathDepth));
  }
  for (const std::string& seg : op.path) {
    if (seg.empty()) return fail(op.type, "path.empty_segment", "Path contains an empty segment");
    if (seg.size() > kMaxSegmentBytes) {
      return fail(op.type, "path.segment_too_long",
                  "Path segment of " + std::to_string(seg.size()) + " bytes exceeds maximum of " +
                      std::to_string(kMaxSegmentBytes));
    }
    if (forbidden_key(seg)) {
      return fail(op.type, "path.proto_polluted",
                  "Path segment '" + seg + "' is not allowed (prototype pollution).");
    }
  }
  return std::nullopt;
}

// Order: object → key count → prototype keys → nesting depth.
MaybeFailure validate_merge_value(const json::value& v) {
  const UpdateOpType t = UpdateOpType::kMerge;
  if (!v.is_object()) return fail(t, "value.not_an_object", "Merge value must be a JSON object");
  const json::object& o = v.get_object();
  if (o.size() > kMaxMergeKeys) {
    return fail(t, "value.too_many_keys",
                "Merge value has " + std::to_string(o.size()) +
                    " top-level keys, exceeds maximum of " + std::to_string(kMaxMergeKeys));
  }
  for (const auto& kv : o) {
    if (forbidden_key(kv.key())) {
      return fail(t, "value.proto_polluted",
                  "Merge value top-level key \"" + std::string(kv.key()) +
                      "\" is a prototype-pollution sink");
    }
  }
  if (size_t d = json_depth(v); d > kMaxMergeDepth) {
    return fail(t, "value.too_deep",
                "Merge value JSON nesting depth " + std::to_string(d) + " exceeds maximum of " +
                    std::to_string(kMaxMergeDepth));
  }
  return std::nullopt;
}

void shallow_merge(json::object& target, const json::object& src) {
  for (const auto& kv : src) target.insert_or_assign(kv.key(), kv.value());
}

MaybeFailure apply_merge(json::value& root, const UpdateOp& op, std::vector<std::string>& warn,
                         size_t index) {
  if (auto f = validate_path(op)) return f;
  if (auto f = validate_merge_value(op.value)) return f;
  const json::object& src = op.value.get_object();
  if (op.path.empty()) {
    if (!root.is_object()) {
      // The original skips this op without an error record; surface it for the log.
      warn.push_back("update op " + std::to_string(index) + ": root merge skipped, target is " +
                     type_str(root) + ", expected object");
      return std::nullopt;
    }
    shallow_merge(root.get_object(), src);
    return std::nullopt;
  }
  // Nested merge forces objects all the way down, replacing whatever was there.
  if (!root.is_object()) root = json::object();
  json::value* cur = &root;
  for (const std::string& seg : op.path) {
    json::value& child = cur->get_object()[seg];
    if (!child.is_object()) child = json::object();
    cur = &child;
  }
  shallow_merge(cur->get_object(), src);
  return std::nullopt;
}

std::optional<json::value> from_int128(__int128 r) {
  if (r >= std::numeric_limits<int64_t>::min() && r <= std::numeric_limits<int64_t>::max()) {
    return json::value(static_cast<int64_t>(r));
  }
  if (r >= 0 && r <= static_cast<__int128>(std::numeric_limits<uint64_t>::max())) {
    return json::value(static_cast<uint64_t>(r));
  }
  return std::nullopt;
}

// current ± by; nullopt when the result does not fit a JSON number we can store (i64/u64
// overflow, or a non-finite double).
std::optional<json::value> add_number(const json::value& cur, int64_t by, bool subtract) {
  if (cur.is_double()) {
    const double b = static_cast<double>(by);
    const double r = subtract ? cur.get_double() - b : cur.get_double() + b;
    if (!std::isfinite(r)) return std::nullopt;
    return json::value(r);
  }
  const __int128 c = cur.is_int64() ? static_cast<__int128>(cur.get_int64())
                                    : static_cast<__int128>(cur.get_uint64());
  return from_int128(subtract ? c - by : c + by);
}

// Missing target: `by`, or `-by` for decrement (|i64::MIN| becomes a u64).
json::value initial_number(int64_t by, bool subtract) {
  return *from_int128(subtract ? -static_cast<__int128>(by) : static_cast<__int128>(by));
}

MaybeFailure arithmetic(json::value& target, const UpdateOp& op, bool subtract) {
  const std::string p = shown_path(op);
  if (!target.is_number()) {
    return fail(op.type, "not_number",
                "Expected number at path '" + p + "', got " + type_str(target) + ".");
  }
  auto r = add_number(target, op.by, subtract);
  if (!r) {
    // Same code as the original (which said "got number"), but a message that says why.
    return fail(op.type, "not_number",
                "Cannot " + std::string(update_op_name(op.type)) + " at path '" + p +
                    "': result is out of the 64-bit number range.");
  }
  target = std::move(*r);
  return std::nullopt;
}

MaybeFailure apply_increment(json::value& root, bool missing, const UpdateOp& op) {
  if (auto f = validate_path(op)) return f;
  const bool subtract = op.type == UpdateOpType::kDecrement;
  if (op.path.empty()) {
    if (missing) {
      root = initial_number(op.by, subtract);
      return std::nullopt;
    }
    return arithmetic(root, op, subtract);
  }
  if (!root.is_object()) {
    return fail(op.type, "target_not_object",
                "Cannot " + std::string(update_op_name(op.type)) + " at path '" + op.path[0] +
                    "': target is " + type_str(root) + ", expected object.");
  }
  json::object& o = root.get_object();
  json::value* field = o.if_contains(op.path[0]);
  if (!field) {
    o.insert_or_assign(op.path[0], initial_number(op.by, subtract));
    return std::nullopt;
  }
  return arithmetic(*field, op, subtract);
}

// What a missing field (or null target) becomes: a string value as is, anything else wrapped.
json::value append_initial(const json::value& v) {
  if (v.is_string()) return v;
  json::array a;
  a.push_back(v);
  return a;
}

MaybeFailure append_to(json::value& target, const UpdateOp& op) {
  const std::string p = shown_path(op);
  switch (target.kind()) {
    case json::kind::array:
      target.get_array().push_back(op.value);
      return std::nullopt;
    case json::kind::string:
      if (!op.value.is_string()) {
        return fail(
            op.type, "type_mismatch",
            "Expected string append value at path '" + p + "', got " + type_str(op.value) + ".");
      }
      target.get_string().append(op.value.get_string());
      return std::nullopt;
    case json::kind::null:
      target = append_initial(op.value);
      return std::nullopt;
    default:
      return fail(op.type, "type_mismatch",
                  "Cannot append at path '" + p + "': target is " + type_str(target) +
                      ", expected array, string, null, or missing field.");
  }
}

MaybeFailure apply_append(json::value& root, bool missing, const UpdateOp& op) {
  if (auto f = validate_path(op)) return f;
  if (op.path.empty()) {
    if (missing) root = nullptr;  // a missing item appends like a null one
    return append_to(root, op);
  }
  if (!root.is_object()) {
    return fail(op.type, "target_not_object",
                "Cannot append at path '" + op.path[0] + "': target is " + type_str(root) +
                    ", expected object.");
  }
  json::object& o = root.get_object();
  json::value* field = o.if_contains(op.path[0]);
  if (!field) {
    o.insert_or_assign(op.path[0], append_initial(op.value));
    return std::nullopt;
  }
  return append_to(*field, op);
}

MaybeFailure apply_set(json::value& root, const UpdateOp& op) {
  if (auto f = validate_path(op)) return f;
  if (op.path.empty()) {
    root = op.value;
    return std::nullopt;
  }
  if (!root.is_object()) {
    return fail(op.type, "target_not_object",
                "Cannot set at path '" + op.path[0] + "': target is " + type_str(root) +
                    ", expected object.");
  }
  root.get_object().insert_or_assign(op.path[0], op.value);
  return std::nullopt;
}

MaybeFailure apply_remove(json::value& root, const UpdateOp& op) {
  if (auto f = validate_path(op)) return f;
  if (op.path.empty()) {
    root = nullptr;
    return std::nullopt;
  }
  if (!root.is_object()) {
    return fail(op.type, "target_not_object",
                "Cannot remove at path '" + op.path[0] + "': target is " + type_str(root) +
                    ", expected object.");
  }
  root.get_object().erase(op.path[0]);
  return std::nullopt;
}

}  // namespace

std::string_view update_op_name(UpdateOpType t) {
  for (const auto& [n, type] : kOpNames) {
    if (type == t) return n;
  }
  return "unknown";
}

std::string_view json_type_name(const boost::json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "number";
    case json::kind::string:
      return "string";
    case json::kind::array:
      return "array";
    case json::kind::object:
      return "object";
  }
  return "null";
}

size_t json_depth(const boost::json::value& v) {
  // Each stacked container carries its own depth (outermost = 1).
  std::vector<std::pair<const json::value*, size_t>> stack;
  size_t max_depth = 0;
  if (v.is_object() || v.is_array()) stack.emplace_back(&v, 1);
  while (!stack.empty()) {
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    const json::value* node = stack.back().first;
    const size_t depth = stack.back().second;
    stack.pop_back();
    max_depth = std::max(max_depth, depth);
    auto push = [&](const json::value& child) {
      if (child.is_object() || child.is_array()) stack.emplace_back(&child, depth + 1);
    };
    if (node->is_object()) {
      for (const auto& kv : node->get_object()) push(kv.value());
    } else {
      for (const auto& child : node->get_array()) push(child);
    }
  }
  return max_depth;
}

ParsedUpdateOps parse_update_ops(const boost::json::value& ops) {
  ParsedUpdateOps out;
  if (!ops.is_array()) {
    out.error = invalid_type(ops, "a sequence");
    return out;
  }
  const json::array& arr = ops.get_array();
  out.ops.reserve(arr.size());
  for (const json::value& raw : arr) {
    UpdateOp op;
    if (std::string err = parse_one(raw, op); !err.empty()) {
      out.ops.clear();
      out.error = std::move(err);
      return out;
    }
    out.ops.push_back(std::move(op));
  }
  return out;
}

boost::json::object UpdateError::to_json() const {
  json::object o;
  o["op_index"] = static_cast<int64_t>(op_index);
  o["code"] = code;
  o["message"] = message;
  o["doc_url"] = kUpdateErrorDocUrl;
  return o;
}

boost::json::object UpdateResult::to_json() const {
  json::object o;
  o["old_value"] = old_value ? *old_value : json::value(nullptr);
  o["new_value"] = new_value;
  if (!errors.empty()) {
    json::array errs;
    errs.reserve(errors.size());
    for (const UpdateError& e : errors) errs.push_back(e.to_json());
    o["errors"] = std::move(errs);
  }
  return o;
}

UpdateResult apply_update_ops(std::optional<boost::json::value> current,
                              const std::vector<UpdateOp>& ops) {
  UpdateResult r;
  // "Missing" only matters to root increment/decrement/append. It lasts until an op succeeds:
  // after that the item exists (as whatever that op made of it).
  bool missing = !current.has_value();
  r.new_value = missing ? json::value(json::object()) : *current;
  r.old_value = std::move(current);
  for (size_t i = 0; i < ops.size(); ++i) {
    const UpdateOp& op = ops[i];
    MaybeFailure f;
    switch (op.type) {
      case UpdateOpType::kSet:
        f = apply_set(r.new_value, op);
        break;
      case UpdateOpType::kMerge:
        f = apply_merge(r.new_value, op, r.warnings, i);
        break;
      case UpdateOpType::kIncrement:
      case UpdateOpType::kDecrement:
        f = apply_increment(r.new_value, missing, op);
        break;
      case UpdateOpType::kAppend:
        f = apply_append(r.new_value, missing, op);
        break;
      case UpdateOpType::kRemove:
        f = apply_remove(r.new_value, op);
        break;
    }
    if (f) {
      r.errors.push_back({i, std::move(f->code), std::move(f->message)});
    } else {
      missing = false;
    }
  }
  return r;
}

}  // namespace iii::storage
