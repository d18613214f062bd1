// Function id -> registrants. Several live connections may register the same id: the newest
// registrant serves, and when it leaves the next newest takes over (the original engine kept only
// the latest owner and lost the function when it disconnected). Built-in functions are
// registrants too and cannot be displaced by workers.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace iii::engine {

struct FunctionInfo {
  std::string id;
  std::optional<std::string> description;
  std::optional<boost::json::value> request_format;
  std::optional<boost::json::value> response_format;
  std::optional<boost::json::value> metadata;

  boost::json::object to_json()
      const;  // {function_id, description, request_format, response_format, metadata}
};

struct BuiltinFunction;  // defined by the engine; opaque here

struct Registrant {
  uint64_t worker = 0;  // connection handle; 0 for a built-in
  std::shared_ptr<BuiltinFunction> builtin;
  FunctionInfo info;
  std::string owner_name;  // built-in worker instance name (for workers::list)
  int64_t timeout_ms = 0;  // metadata.timeout_ms of a worker function; 0 = engine default only
};

class FunctionRegistry {
 public:
  enum class AddResult { kAdded, kUpdated, kRefusedBuiltin };

  // Registers (or re-registers, idempotently) `r.info.id` for `r.worker`. The registration
  // becomes the serving one.
  AddResult add(Registrant r);
  // Removes `worker`'s registration of `id`. Returns true if the id disappeared entirely.
  bool remove(const std::string& id, uint64_t worker);
  // Removes a built-in registration.
  bool remove_builtin(const std::string& id);
  // `from`'s registration of `id` becomes `to`'s, in place (a reattached connection takes over
  // its predecessor's functions). When `to` has its own registration already, `from`'s is just
  // dropped. Returns false when `from` had none.
  bool reassign(const std::string& id, uint64_t from, uint64_t to);

  const Registrant* serving(const std::string& id) const;
  bool contains(const std::string& id) const { return by_id_.count(id) != 0; }
  size_t size() const { return by_id_.size(); }
  size_t registrant_count(const std::string& id) const;

  // Visits the serving registrant of each id, sorted by id.
  void for_each_sorted(const std::function<void(const Registrant&)>& fn) const;

  // Bumped whenever the set of ids changes (not on failover): cheap change detection.
  uint64_t generation() const { return generation_; }

 private:
  // Newest registrant last. Vectors are tiny (usually one element).
  std::unordered_map<std::string, std::vector<Registrant>> by_id_;
  uint64_t generation_ = 0;
};

}  // namespace iii::engine
