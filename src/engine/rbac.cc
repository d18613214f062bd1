#include "engine/rbac.h"

#include <array>

#include "engine/function_registry.h"

namespace iii::engine {

namespace json = boost::json;

bool glob_match(std::string_view p, std::string_view t) {
  // Iterative wildcard match with one backtrack point: linear in practice, never exponential.
  size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (pi < p.size() && p[pi] == t[ti]) {
      ++pi;
      ++ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::optional<std::string> parse_match(std::string_view s) {
  constexpr std::string_view kOpen = "match(";
  if (s.size() < kOpen.size() + 3 || s.substr(0, kOpen.size()) != kOpen || s.back() != ')')
    return std::nullopt;
  std::string_view inner = s.substr(kOpen.size(), s.size() - kOpen.size() - 1);
  if (inner.size() < 2) return std::nullopt;
  const char q = inner.front();
  if ((q != '"' && q != '\'') || inner.back() != q) return std::nullopt;
  return std::string(inner.substr(1, inner.size() - 2));
}

bool ExposeRule::matches(const std::string& id,
                         const std::optional<json::value>& function_metadata) const {
  if (id_glob) return glob_match(*id_glob, id);
  if (!function_metadata || !function_metadata->is_object()) return false;
  const auto& md = function_metadata->get_object();
  for (const auto& c : metadata) {
    const json::value* v = md.if_contains(c.key);
    if (!v) return false;
    if (c.glob) {
      if (!v->is_string() || !glob_match(*c.glob, v->get_string())) return false;
    } else if (*v != c.exact) {
      return false;
    }
  }
  return true;
}

namespace {
bool read_id_set(const json::object& o, std::string_view key, std::set<std::string>& out,
                 std::string& error) {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return true;
  if (!v->is_array()) {
    error = std::string(key) + " must be an array of strings";
    return false;
  }
  for (const auto& item : v->get_array()) {
    if (!item.is_string()) {
      error = std::string(key) + " must be an array of strings";
      return false;
    }
    out.emplace(item.get_string());
  }
  return true;
}

bool read_bool(const json::object& o, std::string_view key, bool& out, std::string& error) {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return true;
  if (!v->is_bool()) {
    error = std::string(key) + " must be a boolean";
    return false;
  }
  out = v->get_bool();
  return true;
}
}  // namespace

std::optional<Session> Session::from_auth_result(const json::value& v, std::string& error) {
  if (!v.is_object()) {
    error = "the auth function must return an object (AuthResult)";
    return std::nullopt;
  }
  const auto& o = v.get_object();
  Session s;
  s.allow_trigger_type_registration = false;  // an AuthResult must grant it
  if (!read_id_set(o, "allowed_functions", s.allowed_functions, error) ||
      !read_id_set(o, "forbidden_functions", s.forbidden_functions, error) ||
      !read_bool(o, "allow_trigger_type_registration", s.allow_trigger_type_registration, error) ||
      !read_bool(o, "allow_function_registration", s.allow_function_registration, error))
    return std::nullopt;
  if (const json::value* t = o.if_contains("allowed_trigger_types"); t && !t->is_null()) {
    s.allowed_trigger_types.emplace();
    if (!read_id_set(o, "allowed_trigger_types", *s.allowed_trigger_types, error))
      return std::nullopt;
  }
  if (const json::value* c = o.if_contains("context"); c && !c->is_null()) s.context = *c;
  if (const json::value* p = o.if_contains("function_registration_prefix"); p && !p->is_null()) {
    if (!p->is_string()) {
      error = "function_registration_prefix must be a string";
      return std::nullopt;
    }
    if (!p->get_string().empty()) s.function_registration_prefix = std::string(p->get_string());
  }
  return s;
}

bool is_infrastructure_function(std::string_view id) {
  static constexpr std::array<std::string_view, 10> kIds = {
      "engine::channels::create", "engine::workers::register", "engine::log::info",
      "engine::log::warn",        "engine::log::error",        "engine::log::debug",
      "engine::log::trace",       "engine::baggage::get",      "engine::baggage::set",
      "engine::baggage::get_all"};
  for (auto k : kIds)
    if (k == id) return true;
  return false;
}

Access check_access(const ListenerPolicy& policy, const Session& session, const std::string& id,
                    const FunctionInfo* info) {
  if (session.forbidden_functions.count(id)) return Access::kForbidden;
  if (!policy.rbac) return Access::kAllowed;
  if (session.allowed_functions.count(id)) return Access::kAllowed;
  if (is_infrastructure_function(id)) return Access::kAllowed;
  static const std::optional<json::value> kNoMetadata;
  const auto& md = info ? info->metadata : kNoMetadata;
  for (const auto& rule : policy.expose)
    if (rule.matches(id, md)) return Access::kAllowed;
  return Access::kNotExposed;
}

std::string forbidden_message(const std::string& id, Access why) {
  return "function '" + id + "' not allowed (" +
         (why == Access::kForbidden ? "remove from rbac.forbidden_functions"
                                    : "add to rbac.expose_functions") +
         ")";
}

}  // namespace iii::engine
