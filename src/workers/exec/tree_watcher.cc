#include "workers/exec/tree_watcher.h"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>

namespace iii::workers::exec {

namespace fs = std::filesystem;
namespace asio = boost::asio;

namespace {
constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                           IN_MOVED_TO | IN_ATTRIB | IN_DONT_FOLLOW | IN_ONLYDIR;

// Trees that are never entered below a watched root: version-control metadata and package
// caches hold many directories and are not sources (a pattern rooted inside them still works).
bool skipped_dir(const std::string& name) {
  return name == "node_modules" || (!name.empty() && name[0] == '.');
}

std::string child_path(const std::string& dir, const std::string& name) {
  if (dir == "." || dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}
}  // namespace

struct TreeWatcher::Impl : std::enable_shared_from_this<TreeWatcher::Impl> {
  struct Dir {
    std::string path;
    int depth;  // how many levels below may still hold matches; -1 = any
  };

  Impl(asio::io_context& io, std::vector<WatchGlob> g, std::vector<std::string> ext, OnChange cb)
      : io(io), globs(std::move(g)), extensions(std::move(ext)), on_change(std::move(cb)) {}

  asio::io_context& io;
  std::vector<WatchGlob> globs;
  std::vector<std::string> extensions;
  OnChange on_change;
  int fd = -1;
  std::unique_ptr<asio::posix::stream_descriptor> stream;
  std::map<int, Dir> dirs;  // by watch descriptor
  alignas(inotify_event) std::array<char, 64 * 1024> buf{};
  bool stopped = false;
  bool warned_limit = false;

  bool counts(const std::string& path) const {
    if (!extensions.empty()) {
      const std::string ext = fs::path(path).extension().string();
      bool ok = false;
      for (const auto& e : extensions) ok = ok || (!ext.empty() && ext.substr(1) == e);
      if (!ok) return false;
    }
    for (const auto& g : globs)
      if (g.matches(path)) return true;
    return false;
  }

  // Watches `dir` and, up to `depth` levels (any when -1), its subdirectories.
  void add_tree(const std::string& dir, int depth) {
    const int wd = ::inotify_add_watch(fd, dir.c_str(), kMask);
    if (wd < 0) {
      if (errno == ENOSPC && !warned_limit) {
        warned_limit = true;
        spdlog::warn(
            "iii-exec: inotify watch limit reached at '{}' (raise "
            "fs.inotify.max_user_watches); changes below it are not seen",
            dir);
      }
      return;
    }
    auto it = dirs.find(wd);
    if (it != dirs.end()) {
      const int had = it->second.depth;
      if (had < 0 || (depth >= 0 && had >= depth)) return;  // already covered
      it->second.depth = depth;
    } else {
      dirs.emplace(wd, Dir{dir, depth});
    }
    if (depth == 0) return;
    std::error_code ec;
    for (fs::directory_iterator d(dir, ec), end; !ec && d != end; d.increment(ec)) {
      std::error_code ec2;
      if (!d->is_directory(ec2) || d->is_symlink(ec2)) continue;
      const std::string name = d->path().filename().string();
      if (skipped_dir(name)) continue;
      add_tree(child_path(dir, name), depth < 0 ? -1 : depth - 1);
    }
  }

  // A directory that appeared: watch it and report files that were written into it before
  // the watch existed.
  void add_new_dir(const std::string& dir, int depth) {
    add_tree(dir, depth);
    std::error_code ec;
    for (fs::recursive_directory_iterator d(dir, ec), end; !ec && d != end; d.increment(ec)) {
      if (d.depth() > 64) break;
      const std::string p = d->path().string();
      if (counts(p)) {
        on_change(p);
        return;
      }
    }
  }

  void read() {
    auto self = shared_from_this();
    stream->async_read_some(asio::buffer(buf), [self](boost::system::error_code ec, size_t n) {
      if (ec || self->stopped) return;
      self->handle(n);
      self->read();
    });
  }

  void handle(size_t n) {
    std::optional<std::string> changed;
    size_t off = 0;
    while (off + sizeof(inotify_event) <= n) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf.data() + off);
      off += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        changed = changed.value_or("(inotify queue overflow)");
        continue;
      }
      auto it = dirs.find(ev->wd);
      if (it == dirs.end()) continue;
      if (ev->mask & IN_IGNORED) {
        dirs.erase(it);
        continue;
      }
      if (ev->len == 0) continue;
      const std::string name(ev->name);
      const std::string path = child_path(it->second.path, name);
      const int depth = it->second.depth;
      if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)) && depth != 0 &&
          !skipped_dir(name)) {
        add_new_dir(path, depth < 0 ? -1 : depth - 1);
        continue;
      }
      if (!changed && counts(path)) changed = path;
    }
    if (changed) on_change(*changed);
  }
};

TreeWatcher::TreeWatcher(asio::io_context& io, std::vector<WatchGlob> globs,
                         std::vector<std::string> extensions, OnChange on_change)
    : impl_(std::make_shared<Impl>(io, std::move(globs), std::move(extensions),
                                   std::move(on_change))) {}

TreeWatcher::~TreeWatcher() { stop(); }

void TreeWatcher::start() {
  Impl& m = *impl_;
  m.fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (m.fd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
  m.stream = std::make_unique<asio::posix::stream_descriptor>(m.io, m.fd);
  for (const auto& g : m.globs) {
    std::string root = g.root();
    std::optional<int> depth = g.max_depth();
    std::error_code ec;
    if (g.literal()) {
      if (fs::is_directory(root, ec)) {
        depth.reset();
      } else {
        const fs::path parent = fs::path(root).parent_path();
        root = parent.empty() ? "." : parent.string();
        depth = 0;
      }
    }
    // A root that does not exist yet: watch its nearest existing ancestor, deep enough.
    while (!fs::is_directory(root, ec)) {
      const fs::path parent = fs::path(root).parent_path();
      root = parent.empty() ? "." : parent.string();
      if (depth) ++*depth;
      if (root == "/" || root == ".") break;
    }
    m.add_tree(root, depth ? *depth : -1);
  }
  m.read();
}

void TreeWatcher::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  if (impl_->stream) {
    boost::system::error_code ec;
    impl_->stream->close(ec);  // closes the inotify descriptor too
  }
}

size_t TreeWatcher::watched_directories() const { return impl_->dirs.size(); }

}  // namespace iii::workers::exec
