// RBAC for a worker-manager listener (engine-core.md §6): the listener's policy (from its config
// entry), each connection's session (from its auth function's AuthResult), and the decisions
// taken from them. No I/O; the engine applies these in engine.cc / rbac_gate.cc.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iii::engine {

struct FunctionInfo;

// `*` matches any run of characters (also none); everything else literally. Anchored.
bool glob_match(std::string_view pattern, std::string_view text);
// `match("pat")` or `match('pat')` -> pat; anything else -> nullopt.
std::optional<std::string> parse_match(std::string_view s);

// One `rbac.expose_functions` item.
struct ExposeRule {
  std::optional<std::string> id_glob;  // match("...") on the function id
  // {metadata: {key: value | match("...")}}: every key must match.
  struct MetaCond {
    std::string key;
    std::optional<std::string> glob;  // match(...) on a string value
    boost::json::value exact;         // otherwise exact JSON equality
  };
  std::vector<MetaCond> metadata;

  bool matches(const std::string& id, const std::optional<boost::json::value>& metadata) const;
};

// Per-session limits of a listener (beyond the original; 0 = unlimited).
struct ListenerLimits {
  uint32_t connections_per_ip = 0;
  uint32_t invocations_per_second = 0;
  uint32_t registrations = 0;  // functions + triggers + trigger types per session
};

// What a listener's config says (iii-worker-manager `rbac:` and `middleware_function_id`).
struct ListenerPolicy {
  bool rbac = false;  // an `rbac` block is present: invocations are gated
  std::optional<std::string> auth_function_id;
  std::vector<ExposeRule> expose;
  std::optional<std::string> on_function_registration;
  std::optional<std::string> on_trigger_registration;
  std::optional<std::string> on_trigger_type_registration;
  std::optional<std::string> middleware_function_id;
  ListenerLimits limits;
};

// One connection's rights (AuthResult, or the defaults without an auth function).
struct Session {
  std::set<std::string> allowed_functions;
  std::set<std::string> forbidden_functions;
  std::optional<std::set<std::string>> allowed_trigger_types;  // nullopt = all
  bool allow_trigger_type_registration = true;                 // false when an AuthResult omits it
  bool allow_function_registration = true;
  boost::json::value context = boost::json::object();
  std::optional<std::string> function_registration_prefix;

  // Parses an AuthResult. Returns nullopt (and `error`) when it is not an object or a field has
  // the wrong type.
  static std::optional<Session> from_auth_result(const boost::json::value& v, std::string& error);
};

// The SDKs' infrastructure functions, callable on every RBAC listener unless forbidden.
bool is_infrastructure_function(std::string_view id);

enum class Access { kAllowed, kForbidden, kNotExposed };
// Whether a session of a listener may call `id` (`info` is the registered function, if any).
Access check_access(const ListenerPolicy& policy, const Session& session, const std::string& id,
                    const FunctionInfo* info);
// The FORBIDDEN error message for a refused call.
std::string forbidden_message(const std::string& id, Access why);

// Ids a session registers under its prefix: `<prefix>::<id>`.
inline std::string with_prefix(const Session& s, const std::string& id) {
  return s.function_registration_prefix ? *s.function_registration_prefix + "::" + id : id;
}

}  // namespace iii::engine
