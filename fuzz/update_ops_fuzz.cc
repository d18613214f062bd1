// Fuzzes the atomic update ops: the input is JSON, either {"value": <stored>, "ops": [...]}
// (no "value": the item does not exist) or the ops list alone. parse_update_ops checks the
// list; when it is accepted, apply_update_ops runs it on the stored value. Checks: a rejected
// list carries a reason, the result serialises, old_value is the stored value unchanged, every
// error points at an op that exists, and a failed op leaves the value as it was.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "storage/update_ops.h"

namespace {

namespace json = boost::json;
using namespace iii::storage;

// protocol::decode never yields a NaN or an infinity (Boost's parse below does: 1e400), so
// stored values and ops never hold one.
bool all_numbers_finite(const json::value& v) {
  if (v.is_double()) return std::isfinite(v.get_double());
  if (v.is_array())
    for (const json::value& item : v.get_array())
      if (!all_numbers_finite(item)) return false;
  if (v.is_object())
    for (const auto& kv : v.get_object())
      if (!all_numbers_finite(kv.value())) return false;
  return true;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "update_ops_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 64;
  json::value in =
      json::parse(std::string_view(reinterpret_cast<const char*>(data), size), ec, {}, opt);
  if (ec || !all_numbers_finite(in)) return 0;

  std::optional<json::value> stored;
  json::value ops = in;
  if (in.is_object() && in.get_object().contains("ops")) {
    ops = in.get_object().at("ops");
    if (const json::value* v = in.get_object().if_contains("value")) stored = *v;
  }

  const ParsedUpdateOps parsed = parse_update_ops(ops);
  if (!parsed.ok()) return 0;
  for (const UpdateOp& op : parsed.ops) (void)update_op_name(op.type);

  const UpdateResult r = apply_update_ops(stored, parsed.ops);
  if (r.old_value != stored) fail("old_value is not the stored value");
  for (const UpdateError& e : r.errors) {
    if (e.op_index >= parsed.ops.size()) fail("an error for an op that does not exist");
    if (e.code.empty() || e.message.empty()) fail("an error without a code or a message");
  }
  (void)json::serialize(r.to_json());
  (void)json_depth(r.new_value);
  (void)json_type_name(r.new_value);

  // One op at a time gives the same value, and an op recorded as an error leaves the value
  // as it was (a missing item stays missing: it still starts as {}).
  std::optional<json::value> current = stored;
  for (const UpdateOp& op : parsed.ops) {
    UpdateResult step = apply_update_ops(current, {op});
    if (!step.errors.empty()) {
      if (step.new_value != (current ? *current : json::value(json::object())))
        fail("a failed op changed the value");
      continue;
    }
    current = std::move(step.new_value);
  }
  if (r.new_value != (current ? *current : json::value(json::object())))
    fail("ops applied one at a time give another value");
  return 0;
}
