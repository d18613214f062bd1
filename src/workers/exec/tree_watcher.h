// inotify over the directory trees that iii-exec's `watch` globs can match. Runs on the
// engine's io_context; reports each changed path that some glob matches.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "workers/exec/watch_glob.h"

namespace boost::asio {
class io_context;
}

namespace iii::workers::exec {

class TreeWatcher {
 public:
  using OnChange = std::function<void(const std::string& path)>;
  // `extensions` (the older configs' `extensions: ts,js`): when not empty, only paths with one
  // of these extensions count.
  TreeWatcher(boost::asio::io_context& io, std::vector<WatchGlob> globs,
              std::vector<std::string> extensions, OnChange on_change);
  ~TreeWatcher();
  TreeWatcher(const TreeWatcher&) = delete;
  TreeWatcher& operator=(const TreeWatcher&) = delete;

  // Adds the watches and starts reading events. Throws std::system_error if inotify is
  // unavailable.
  void start();
  void stop();
  size_t watched_directories() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace iii::workers::exec
