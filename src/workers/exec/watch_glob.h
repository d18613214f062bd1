// The `watch` patterns of iii-exec: globs over paths relative to the engine's working
// directory (or absolute). `*`, `?` and `[...]` match within one path segment, `**` matches
// any number of segments (none included), `{a,b}` alternatives are expanded. A pattern without
// any of these names a file, or a directory whose whole tree is watched.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace iii::workers::exec {

class WatchGlob {
 public:
  // Throws std::invalid_argument for an empty pattern or unbalanced braces.
  explicit WatchGlob(const std::string& pattern);

  // `path` is normalised like the pattern ("./a//b" == "a/b"); relative paths are relative to
  // the same directory as the pattern.
  bool matches(const std::string& path) const;

  // The directory whose tree holds every match (the literal leading segments; "." when the
  // pattern starts with a wildcard), and how deep below it a match can be (nullopt: any
  // depth, for `**` or a bare directory). Depth 0 means files directly in the root.
  const std::string& root() const { return root_; }
  std::optional<int> max_depth() const { return max_depth_; }
  const std::string& pattern() const { return pattern_; }
  // No wildcard at all: matches the path itself and everything under it.
  bool literal() const { return literal_; }

 private:
  std::string pattern_;
  std::vector<std::vector<std::string>> alternatives_;  // brace-expanded, split in segments
  std::string root_;
  std::optional<int> max_depth_;
  bool literal_ = false;
};

// Splits a path in segments, dropping empty and "." segments (a leading "/" is kept as the
// first segment "/").
std::vector<std::string> split_path(const std::string& path);

}  // namespace iii::workers::exec
