// The iii-http route table: a trie of path segments shared by every method, so a lookup costs
// one step per segment of the request path whatever the number of routes. Static segments win
// over `:param` segments (with backtracking), as in the original's router.
//
// Each (path, method) keeps every live registration of it, newest last: the newest serves and,
// when it goes (its worker disconnected during a rolling deploy), the next newest takes over
// (the original dropped the route here).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iii::workers::http {

// What a route serves; the table never looks inside beyond `trigger_id`.
struct Route {
  std::string trigger_id;
  std::string api_path;  // as registered, with a leading '/' added when missing
  std::string method;    // upper case
  std::string function_id;
  std::optional<std::string> condition_function_id;
  std::vector<std::string> middleware_function_ids;
};

class RouteTable {
 public:
  RouteTable();
  ~RouteTable();
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  // Adds `route` (method upper case, api_path normalised). Returns an error message when the
  // path cannot live beside the others (a parameter named differently at the same position
  // as an existing route's, e.g. /u/:id and /u/:user_id) or is malformed.
  std::optional<std::string> add(Route route);
  // Removes the registration of `trigger_id` for that path and method; true if it was there.
  bool remove(const std::string& api_path, const std::string& method,
              const std::string& trigger_id);

  struct Match {
    enum class Kind { kFound, kNoPath, kNoMethod } kind = Kind::kNoPath;
    const Route* route = nullptr;  // kFound
    std::vector<std::pair<std::string, std::string>> path_params;
    std::vector<std::string> allowed_methods;  // kNoMethod: for the Allow header
  };
  // `path` is the request path (no query string), already percent-decoded per segment by the
  // caller if it wants decoded parameters. GET routes also answer HEAD.
  Match find(std::string_view method, std::string_view path) const;

  size_t size() const { return routes_; }

  // "/a" for "a" and "/a"; the route key of the original.
  static std::string normalise_path(std::string_view api_path);

 private:
  struct Node;
  std::unique_ptr<Node> root_;
  size_t routes_ = 0;
};

}  // namespace iii::workers::http
