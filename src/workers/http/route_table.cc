#include "workers/http/route_table.h"

#include <algorithm>
#include <unordered_map>

namespace iii::workers::http {

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// "/a/b/" → {"a", "b", ""}: the leading '/' is dropped, every other one separates segments,
// so a trailing slash is significant (as in the original).
std::vector<std::string_view> split(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) {
      out.push_back(path.substr(start));
      return out;
    }
    out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
}

bool is_param(std::string_view seg) { return seg.size() > 1 && seg.front() == ':'; }

}  // namespace

struct RouteTable::Node {
  std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> statics;
  std::unique_ptr<Node> param;
  std::string param_name;                             // without ':'
  std::map<std::string, std::vector<Route>> methods;  // newest registration last

  bool empty() const { return statics.empty() && !param && methods.empty(); }
};

RouteTable::RouteTable() : root_(std::make_unique<Node>()) {}
RouteTable::~RouteTable() = default;

std::string RouteTable::normalise_path(std::string_view api_path) {
  if (!api_path.empty() && api_path.front() == '/') return std::string(api_path);
  return "/" + std::string(api_path);
}

std::optional<std::string> RouteTable::add(Route route) {
  route.api_path = normalise_path(route.api_path);
  const auto segs = split(route.api_path);
  // Check first, so a refused route leaves nothing behind.
  for (const std::string_view seg : segs)
    if (seg == ":") return "api_path '" + route.api_path + "' has a parameter without a name";
  const Node* probe = root_.get();
  for (size_t i = 0; i < segs.size() && probe; ++i) {
    const std::string_view seg = segs[i];
    if (!is_param(seg)) {
      auto it = probe->statics.find(seg);
      probe = it == probe->statics.end() ? nullptr : it->second.get();
      continue;
    }
    if (probe->param && probe->param_name != seg.substr(1))
      return "api_path '" + route.api_path + "' names its parameter '" + std::string(seg) +
             "' where an existing route names it ':" + probe->param_name +
             "'; routes that share a path prefix must use the same parameter names";
    probe = probe->param.get();
  }
  Node* node = root_.get();
  for (const std::string_view seg : segs) {
    if (is_param(seg)) {
      if (!node->param) {
        node->param = std::make_unique<Node>();
        node->param_name = std::string(seg.substr(1));
      }
      node = node->param.get();
    } else {
      auto it = node->statics.find(seg);
      if (it == node->statics.end())
        it = node->statics.emplace(std::string(seg), std::make_unique<Node>()).first;
      node = it->second.get();
    }
  }
  auto& regs = node->methods[route.method];
  auto same = std::find_if(regs.begin(), regs.end(),
                           [&](const Route& r) { return r.trigger_id == route.trigger_id; });
  if (same != regs.end()) {
    regs.erase(same);
    --routes_;
  }
  regs.push_back(std::move(route));
  ++routes_;
  return std::nullopt;
}

bool RouteTable::remove(const std::string& api_path, const std::string& method,
                        const std::string& trigger_id) {
  const std::string path = normalise_path(api_path);
  const auto segs = split(path);
  // Walk down remembering the path, then prune nodes left empty from the bottom up.
  std::vector<std::pair<Node*, std::string_view>> trail;
  Node* node = root_.get();
  for (const std::string_view seg : segs) {
    trail.emplace_back(node, seg);
    if (is_param(seg)) {
      if (!node->param || node->param_name != seg.substr(1)) return false;
      node = node->param.get();
    } else {
      auto it = node->statics.find(seg);
      if (it == node->statics.end()) return false;
      node = it->second.get();
    }
  }
  auto m = node->methods.find(method);
  if (m == node->methods.end()) return false;
  auto& regs = m->second;
  auto pos = std::find_if(regs.begin(), regs.end(),
                          [&](const Route& r) { return r.trigger_id == trigger_id; });
  if (pos == regs.end()) return false;
  regs.erase(pos);
  --routes_;
  if (regs.empty()) node->methods.erase(m);
  for (auto it = trail.rbegin(); it != trail.rend(); ++it) {
    auto [parent, seg] = *it;
    Node* child = is_param(seg) ? parent->param.get() : parent->statics.find(seg)->second.get();
    if (!child->empty()) break;
    if (is_param(seg)) {
      parent->param.reset();
      parent->param_name.clear();
    } else {
      parent->statics.erase(parent->statics.find(seg));
    }
  }
  return true;
}

namespace {

struct Finder {
  const std::vector<std::string_view>& segs;
  std::vector<std::pair<std::string, std::string>>& params;

  template <typename NodeT>
  const NodeT* walk(const NodeT* node, size_t i) {
    if (i == segs.size()) return node->methods.empty() ? nullptr : node;
    const std::string_view seg = segs[i];
    if (auto it = node->statics.find(seg); it != node->statics.end())
      if (const NodeT* found = walk(it->second.get(), i + 1)) return found;
    if (node->param && !seg.empty()) {
      params.emplace_back(node->param_name, std::string(seg));
      if (const NodeT* found = walk(node->param.get(), i + 1)) return found;
      params.pop_back();
    }
    return nullptr;
  }
};

}  // namespace

RouteTable::Match RouteTable::find(std::string_view method, std::string_view path) const {
  Match m;
  const auto segs = split(path);
  Finder finder{segs, m.path_params};
  const Node* node = finder.walk(root_.get(), 0);
  if (!node) {
    m.path_params.clear();
    return m;
  }
  auto it = node->methods.find(std::string(method));
  if (it == node->methods.end() && method == "HEAD") it = node->methods.find("GET");
  if (it == node->methods.end()) {
    m.kind = Match::Kind::kNoMethod;
    m.path_params.clear();
    for (const auto& [name, regs] : node->methods) m.allowed_methods.push_back(name);
    if (node->methods.count("GET") && !node->methods.count("HEAD"))
      m.allowed_methods.push_back("HEAD");
    return m;
  }
  m.kind = Match::Kind::kFound;
  m.route = &it->second.back();
  return m;
}

}  // namespace iii::workers::http
