// Atomic update operations for `stream::update` and `state::update` (modules.md §2).
//
// Two steps: parse_update_ops() checks the shape of the request's `ops` list (a bad shape
// rejects the whole request, nothing is applied), then apply_update_ops() runs the ops in
// order on a copy of the stored value. An op that fails validation or meets the wrong target
// is skipped and recorded in `errors`; later ops still apply, and the caller always writes
// `new_value` back (even when every op failed or the list is empty). Pure functions, no I/O.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iii::storage {

enum class UpdateOpType { kSet, kMerge, kIncrement, kDecrement, kAppend, kRemove };

// The wire name (`set`, `merge`, ...), also the prefix of the op's error codes.
std::string_view update_op_name(UpdateOpType t);

struct UpdateOp {
  UpdateOpType type = UpdateOpType::kSet;
  // Merge: nested literal keys, [] = root. Other ops: [] = root ("" on the wire), else exactly
  // one literal first-level key ("a.b" is the key `a.b`, never a walk).
  std::vector<std::string> path;
  boost::json::value value;  // set (missing → null), merge, append
  int64_t by = 0;            // increment, decrement
};

struct ParsedUpdateOps {
  std::vector<UpdateOp> ops;
  // Empty on success; otherwise a serde-style reason for the whole request, to be reported as
  // `deserialization_error` "Failed to deserialize input for <fn>: <error>".
  std::string error;
  bool ok() const { return error.empty(); }
};

// Parses the request's `ops` value (must be an array of internally tagged op objects).
ParsedUpdateOps parse_update_ops(const boost::json::value& ops);

inline constexpr std::string_view kUpdateErrorDocUrl =
    "https://iii.dev/docs/workers/iii-state#error-codes";

// One skipped op, e.g. {op_index: 2, code: "increment.not_number", message: "...", doc_url}.
struct UpdateError {
  size_t op_index = 0;
  std::string code;
  std::string message;
  boost::json::object to_json() const;
};

struct UpdateResult {
  std::optional<boost::json::value> old_value;  // the stored value as given (nullopt = none)
  boost::json::value new_value;                 // always to be written back
  std::vector<UpdateError> errors;
  // Ops skipped without an error record (root merge on a non-object): for the caller to log.
  std::vector<std::string> warnings;

  // The function result: {"old_value": any|null, "new_value": any, "errors"?: [...]}, with
  // `errors` omitted when empty.
  boost::json::object to_json() const;
};

// Validation limits (§2.5).
inline constexpr size_t kMaxPathDepth = 32;
inline constexpr size_t kMaxSegmentBytes = 256;
inline constexpr size_t kMaxMergeKeys = 1024;
inline constexpr size_t kMaxMergeDepth = 16;

// Applies `ops` in order. `current` is the stored value: nullopt means the item does not exist
// (the working value then starts as {} flagged "missing"); a stored JSON null is a real null.
UpdateResult apply_update_ops(std::optional<boost::json::value> current,
                              const std::vector<UpdateOp>& ops);

// JSON type name used in messages: null, boolean, number, string, array, object.
std::string_view json_type_name(const boost::json::value& v);

// Nesting depth: scalars 0, object/array 1 + deepest child. Iterative, so hostile nesting
// cannot exhaust the stack.
size_t json_depth(const boost::json::value& v);

}  // namespace iii::storage
