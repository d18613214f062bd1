// Reading the JSON input of a built-in function. Problems become `deserialization_error`
// with the original's message shape: "Failed to deserialize input for <fn>: <reason>".
#pragma once

#include <boost/json/value.hpp>
#include <optional>
#include <string>

#include "engine/engine.h"

namespace iii::engine {

class BuiltinInput {
 public:
  // `allow_null` lets a null/absent payload stand for {} (most functions); list_all-style
  // functions that require an object pass false.
  BuiltinInput(std::string function_id, const boost::json::value& input, bool allow_null = true)
      : fn_(std::move(function_id)) {
    if (input.is_object())
      obj_ = &input.get_object();
    else if (input.is_null() && allow_null)
      obj_ = &empty_;
    else
      fail("expected a JSON object");
  }

  std::string required_string(std::string_view key) {
    if (!obj_) return {};
    const boost::json::value* v = obj_->if_contains(key);
    if (!v || v->is_null()) {
      fail("missing field `" + std::string(key) + "`");
      return {};
    }
    if (!v->is_string()) {
      fail("field `" + std::string(key) + "` must be a string");
      return {};
    }
    return std::string(v->get_string());
  }

  std::optional<std::string> optional_string(std::string_view key) {
    if (!obj_) return std::nullopt;
    const boost::json::value* v = obj_->if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) {
      fail("field `" + std::string(key) + "` must be a string");
      return std::nullopt;
    }
    return std::string(v->get_string());
  }

  // A present value of any JSON type (null counts as present when `null_ok`).
  const boost::json::value* required_value(std::string_view key, bool null_ok = true) {
    if (!obj_) return nullptr;
    const boost::json::value* v = obj_->if_contains(key);
    if (!v || (!null_ok && v->is_null())) {
      fail("missing field `" + std::string(key) + "`");
      return nullptr;
    }
    return v;
  }

  const boost::json::value* optional_value(std::string_view key) {
    return obj_ ? obj_->if_contains(key) : nullptr;
  }

  void fail(std::string reason) {
    if (error_.empty()) error_ = std::move(reason);
  }
  bool ok() const { return error_.empty(); }
  Outcome failure() const {
    return Outcome::fail("deserialization_error",
                         "Failed to deserialize input for " + fn_ + ": " + error_);
  }

 private:
  std::string fn_;
  const boost::json::object* obj_ = nullptr;
  std::string error_;
  static inline const boost::json::object empty_{};
};

}  // namespace iii::engine
