#include "workers/exec/exec_worker.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <stdexcept>
#include <system_error>

#include "config/config.h"
#include "engine/engine.h"
#include "workers/exec/guarded_process.h"
#include "workers/exec/tree_watcher.h"
#include "workers/exec/watch_glob.h"

namespace iii::workers {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using exec::GuardedProcess;

constexpr auto kDebounce = 200ms;      // quiet time after the last change before a restart
constexpr auto kMaxDebounce = 1000ms;  // a steady stream of changes restarts after this
constexpr auto kTermGrace = 3000ms;    // SIGTERM → SIGKILL at shutdown (as the original)
constexpr auto kReapPoll = 10ms;

std::vector<std::string> read_string_list(config::WorkerConfigReader& r, const std::string& key,
                                          const YAML::Node& node) {
  std::vector<std::string> out;
  if (node.IsNull()) return out;
  if (!node.IsSequence()) r.fail(key, "key '" + key + "' must be a list of strings");
  for (const auto& item : node) {
    if (!item.IsScalar()) r.fail_at(item, "key '" + key + "': every item must be a string");
    out.push_back(item.Scalar());
  }
  return out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

class ExecWorker : public engine::BuiltinWorker {
 public:
  ExecWorker(const config::WorkerEntry& entry, engine::Runtime& rt)
      : rt_(rt), name_(entry.instance_name), debounce_(rt.io), grace_(rt.io) {
    config::WorkerConfigReader r(entry);
    const YAML::Node exec = r.get_node("exec");
    if (exec.IsNull())
      r.fail("exec",
             "key 'exec' is required: the list of commands to run (e.g. exec: [\"npm run dev\"])");
    commands_ = read_string_list(r, "exec", exec);
    for (const auto& p : read_string_list(r, "watch", r.get_node("watch"))) {
      try {
        globs_.emplace_back(p);
      } catch (const std::invalid_argument& e) {
        r.fail("watch", std::string("key 'watch': ") + e.what());
      }
    }
    // The older module docs' `extensions: ts,js` (with directories in `watch`).
    const YAML::Node ext = r.get_node("extensions");
    if (ext.IsScalar()) {
      std::string s = ext.Scalar();
      size_t start = 0;
      while (start <= s.size()) {
        size_t end = s.find(',', start);
        if (end == std::string::npos) end = s.size();
        std::string e = s.substr(start, end - start);
        while (!e.empty() && (e.front() == ' ' || e.front() == '.')) e.erase(0, 1);
        while (!e.empty() && e.back() == ' ') e.pop_back();
        if (!e.empty()) extensions_.push_back(e);
        start = end + 1;
      }
    } else {
      extensions_ = read_string_list(r, "extensions", ext);
    }
    r.finish();
    rt_.engine.add_builtin_worker({entry.instance_name, entry.name, false, {}});
  }

  ~ExecWorker() override {
    // Normal or abnormal end of the engine: nothing survives it (the lifeline covers kill -9).
    if (watcher_) watcher_->stop();
    for (auto& s : steps_) {
      exec::signal_group(s->proc, SIGKILL);
      for (int i = 0; i < 100 && !exec::try_reap(s->proc); ++i) ::usleep(1000);
    }
  }

  void start() override {
    if (commands_.empty()) {
      spdlog::warn("{}: 'exec' lists no commands; nothing to run", name_);
      return;
    }
    if (!globs_.empty()) {
      watcher_ = std::make_unique<exec::TreeWatcher>(
          rt_.io, globs_, extensions_, [this](const std::string& path) { on_change(path); });
      watcher_->start();
      spdlog::info("{}: watching {} pattern(s) in {} director{}", name_, globs_.size(),
                   watcher_->watched_directories(),
                   watcher_->watched_directories() == 1 ? "y" : "ies");
    }
    start_run();
  }

  // Shutdown: SIGTERM to every group, SIGKILL after 3 s or as soon as the commands are gone.
  void drain(std::function<void()> done) override {
    stopping_ = true;
    debounce_.cancel();
    if (watcher_) watcher_->stop();
    if (steps_.empty()) {
      done();
      return;
    }
    on_idle_ = std::move(done);
    for (auto& s : steps_) exec::signal_group(s->proc, SIGTERM);
    grace_.expires_after(kTermGrace);
    grace_.async_wait([this](boost::system::error_code ec) {
      if (!ec) final_kill();
    });
    check_terminated();
  }

 private:
  struct Step {
    size_t index = 0;
    GuardedProcess proc;
    std::unique_ptr<asio::posix::stream_descriptor> status_stream;
    int status = 0;
    bool running = true;  // the command has not been reported gone yet
  };

  void start_run() {
    ++generation_;
    spawn(0);
  }

  void spawn(size_t index) {
    const std::string& cmd = commands_[index];
    auto step = std::make_shared<Step>();
    step->index = index;
    try {
      step->proc = exec::spawn_guarded(cmd);
    } catch (const std::system_error& e) {
      spdlog::error("{}: cannot start '{}': {}; pipeline stopped", name_, cmd, e.what());
      return;
    }
    step->status_stream =
        std::make_unique<asio::posix::stream_descriptor>(rt_.io, step->proc.status_fd);
    spdlog::info("{}: [{}/{}] started (pid {}): {}", name_, index + 1, commands_.size(),
                 step->proc.anchor, cmd);
    steps_.push_back(step);
    const uint64_t gen = generation_;
    std::weak_ptr<Step> weak = step;
    asio::async_read(*step->status_stream, asio::buffer(&step->status, sizeof step->status),
                     [this, weak, gen](boost::system::error_code ec, size_t) {
                       auto s = weak.lock();
                       if (!s || ec == asio::error::operation_aborted) return;
                       on_command_done(*s, gen,
                                       ec ? std::optional<int>() : std::optional<int>(s->status));
                     });
  }

  void on_command_done(Step& s, uint64_t gen, std::optional<int> status) {
    s.running = false;
    const std::string& cmd = commands_[s.index];
    if (stopping_) {
      check_terminated();
      return;
    }
    if (gen != generation_ || restarting_) return;
    if (!status) {
      spdlog::error("{}: [{}/{}] '{}' was killed from outside; pipeline stopped", name_,
                    s.index + 1, commands_.size(), cmd);
      return;
    }
    const bool ok = WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
    if (!ok) {
      spdlog::error("{}: [{}/{}] '{}' failed ({}); pipeline stopped", name_, s.index + 1,
                    commands_.size(), cmd, describe_status(*status));
      return;
    }
    if (s.index + 1 < commands_.size()) {
      spdlog::info("{}: [{}/{}] '{}' finished", name_, s.index + 1, commands_.size(), cmd);
      spawn(s.index + 1);
    } else {
      spdlog::info("{}: [{}/{}] '{}' exited ({}); the pipeline is done", name_, s.index + 1,
                   commands_.size(), cmd, describe_status(*status));
    }
  }

  void on_change(const std::string& path) {
    if (stopping_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!change_pending_) {
      change_pending_ = true;
      first_change_ = now;
      changed_path_ = path;
    }
    const auto due = std::min(now + kDebounce, first_change_ + kMaxDebounce);
    debounce_.expires_at(due);
    debounce_.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping_) return;
      change_pending_ = false;
      restart(changed_path_);
    });
  }

  void restart(const std::string& path) {
    if (restarting_) return;  // the run that follows the current restart sees this change too
    restarting_ = true;
    spdlog::info("{}: '{}' changed; restarting the pipeline", name_, path);
    ++generation_;
    kill_and_reap([this] {
      restarting_ = false;
      if (!stopping_) start_run();
    });
  }

  // SIGKILLs every group of the current run and waits (bounded) until each anchor is reaped,
  // so that a restarted command does not find the old one still holding its port.
  void kill_and_reap(std::function<void()> then) {
    for (auto& s : steps_) exec::signal_group(s->proc, SIGKILL);
    reap_poll(std::move(then), 0);
  }

  void reap_poll(std::function<void()> then, int attempts) {
    std::erase_if(steps_, [](const std::shared_ptr<Step>& s) {
      if (!exec::try_reap(s->proc)) return false;
      boost::system::error_code ec;
      s->status_stream->close(ec);
      return true;
    });
    if (steps_.empty() || attempts >= 300) {
      if (!steps_.empty())
        spdlog::warn("{}: {} process group(s) still not gone after SIGKILL", name_, steps_.size());
      then();
      return;
    }
    auto timer = std::make_shared<asio::steady_timer>(rt_.io, kReapPoll);
    timer->async_wait([this, timer, then = std::move(then), attempts](boost::system::error_code) {
      reap_poll(then, attempts + 1);
    });
  }

  void check_terminated() {
    if (!stopping_ || !on_idle_) return;
    for (const auto& s : steps_)
      if (s->running) return;
    final_kill();
  }

  void final_kill() {
    if (final_kill_started_) return;
    final_kill_started_ = true;
    grace_.cancel();
    kill_and_reap([this] {
      if (auto done = std::move(on_idle_)) {
        on_idle_ = nullptr;
        done();
      }
    });
  }

  engine::Runtime& rt_;
  std::string name_;
  std::vector<std::string> commands_;
  std::vector<exec::WatchGlob> globs_;
  std::vector<std::string> extensions_;
  std::unique_ptr<exec::TreeWatcher> watcher_;
  std::vector<std::shared_ptr<Step>> steps_;  // the process groups of the current run
  uint64_t generation_ = 0;
  bool restarting_ = false;
  bool stopping_ = false;
  bool final_kill_started_ = false;
  std::function<void()> on_idle_;
  asio::steady_timer debounce_;
  asio::steady_timer grace_;
  bool change_pending_ = false;
  std::chrono::steady_clock::time_point first_change_;
  std::string changed_path_;
};

}  // namespace

std::unique_ptr<engine::BuiltinWorker> make_exec_worker(const config::WorkerEntry& entry,
                                                        engine::Runtime& rt) {
  return std::make_unique<ExecWorker>(entry, rt);
}

}  // namespace iii::workers
