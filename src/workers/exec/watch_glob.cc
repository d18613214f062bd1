#include "workers/exec/watch_glob.h"

#include <fnmatch.h>

#include <algorithm>
#include <stdexcept>

namespace iii::workers::exec {
namespace {

bool has_meta(const std::string& s) { return s.find_first_of("*?[{") != std::string::npos; }

// Expands the first top-level {a,b,...} group, recursively; nested groups are handled by the
// recursion on each alternative.
void expand_braces(const std::string& p, std::vector<std::string>& out) {
  size_t open = std::string::npos;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\') {
      ++i;
      continue;
    }
    if (p[i] == '{') {
      open = i;
      break;
    }
    if (p[i] == '}') throw std::invalid_argument("unbalanced '}' in watch pattern '" + p + "'");
  }
  if (open == std::string::npos) {
    out.push_back(p);
    return;
  }
  int depth = 0;
  std::vector<size_t> commas;
  size_t close = std::string::npos;
  for (size_t i = open; i < p.size(); ++i) {
    if (p[i] == '\\') {
      ++i;
      continue;
    }
    if (p[i] == '{') ++depth;
    if (p[i] == '}' && --depth == 0) {
      close = i;
      break;
    }
    if (p[i] == ',' && depth == 1) commas.push_back(i);
  }
  if (close == std::string::npos)
    throw std::invalid_argument("unbalanced '{' in watch pattern '" + p + "'");
  const std::string head = p.substr(0, open), tail = p.substr(close + 1);
  size_t start = open + 1;
  commas.push_back(close);
  for (size_t c : commas) {
    expand_braces(head + p.substr(start, c - start) + tail, out);
    start = c + 1;
  }
}

bool match_from(const std::vector<std::string>& pat, size_t i, const std::vector<std::string>& path,
                size_t j) {
  while (i < pat.size()) {
    if (pat[i] == "**") {
      // Collapse runs of ** and try every split.
      while (i + 1 < pat.size() && pat[i + 1] == "**") ++i;
      if (i + 1 == pat.size()) return true;
      for (size_t k = j; k <= path.size(); ++k)
        if (match_from(pat, i + 1, path, k)) return true;
      return false;
    }
    if (j >= path.size()) return false;
    if (pat[i] == "/" || path[j] == "/") {
      if (pat[i] != path[j]) return false;
    } else if (::fnmatch(pat[i].c_str(), path[j].c_str(), 0) != 0) {
      return false;
    }
    ++i;
    ++j;
  }
  return j == path.size();
}

std::string join_segments(const std::vector<std::string>& segs, size_t n) {
  std::string out;
  for (size_t k = 0; k < n; ++k) {
    if (segs[k] == "/") {
      out = "/";
      continue;
    }
    if (!out.empty() && out.back() != '/') out += '/';
    out += segs[k];
  }
  return out.empty() ? "." : out;
}

}  // namespace

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  if (!path.empty() && path[0] == '/') out.push_back("/");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string seg = path.substr(start, end - start);
    if (!seg.empty() && seg != ".") out.push_back(std::move(seg));
    start = end + 1;
  }
  return out;
}

WatchGlob::WatchGlob(const std::string& pattern) : pattern_(pattern) {
  if (split_path(pattern).empty()) throw std::invalid_argument("empty watch pattern");
  std::vector<std::string> expanded;
  expand_braces(pattern, expanded);
  for (const auto& e : expanded) alternatives_.push_back(split_path(e));
  literal_ = !has_meta(pattern);

  // Root: the literal leading segments common to every alternative.
  const auto& first = alternatives_.front();
  size_t n = 0;
  while (n < first.size() && !has_meta(first[n]) &&
         std::all_of(alternatives_.begin(), alternatives_.end(),
                     [&](const auto& alt) { return n < alt.size() && alt[n] == first[n]; }))
    ++n;
  if (literal_) n = first.size();
  root_ = join_segments(first, n);
  if (literal_) return;  // depth decided by the watcher (file or directory)
  int depth = -1;
  for (const auto& alt : alternatives_) {
    if (std::find(alt.begin(), alt.end(), "**") != alt.end()) return;  // any depth
    depth = std::max(depth, static_cast<int>(alt.size() - n) - 1);
  }
  max_depth_ = std::max(depth, 0);
}

bool WatchGlob::matches(const std::string& path) const {
  const auto segs = split_path(path);
  for (const auto& alt : alternatives_) {
    if (literal_) {
      if (segs.size() >= alt.size() && std::equal(alt.begin(), alt.end(), segs.begin()))
        return true;
      continue;
    }
    if (match_from(alt, 0, segs, 0)) return true;
  }
  return false;
}

}  // namespace iii::workers::exec
