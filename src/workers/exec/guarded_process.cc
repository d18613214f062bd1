#include "workers/exec/guarded_process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <mutex>
#include <system_error>

extern char** environ;

namespace iii::workers::exec {
namespace {

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// The engine-wide lifeline: created once, never closed by the engine (the kernel closes it
// when the process ends, however it ends). Both ends are close-on-exec.
struct Lifeline {
  int read_fd = -1;
  int write_fd = -1;
};

const Lifeline& lifeline() {
  static Lifeline l;
  static std::once_flag once;
  std::call_once(once, [] {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("iii-exec: lifeline pipe");
    l.read_fd = fds[0];
    l.write_fd = fds[1];
  });
  return l;
}

// Closes every descriptor from 3 up, except `keep_a` and `keep_b`. Async-signal-safe.
void close_other_fds(int keep_a, int keep_b) {
  int lo = keep_a < keep_b ? keep_a : keep_b;
  int hi = keep_a < keep_b ? keep_b : keep_a;
  if (lo > 3) ::close_range(3, static_cast<unsigned>(lo - 1), 0);
  if (hi > lo + 1) ::close_range(static_cast<unsigned>(lo + 1), static_cast<unsigned>(hi - 1), 0);
  ::close_range(static_cast<unsigned>(hi + 1), UINT_MAX, 0);
}

void write_status(int fd, int status) {
  const char* p = reinterpret_cast<const char*>(&status);
  size_t left = sizeof status;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// The anchor, in the child of fork(): only async-signal-safe calls from here on. All signals
// are blocked on entry (the parent blocked them around fork) and stay blocked in the anchor,
// so only SIGKILL ends it; the command unblocks them before exec.
[[noreturn]] void run_anchor(const char* command, int lifeline_fd, int status_fd) {
  // The parent's handlers (Asio's signal_set among them) must never run here.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  ::setsid();
  close_other_fds(lifeline_fd, status_fd);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  const int sfd = ::signalfd(-1, &chld, SFD_CLOEXEC);
  const pid_t self = ::getpid();

  const pid_t child = ::fork();
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != self) ::_exit(127);  // the anchor died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    char sh[] = "/bin/sh";
    char dash_c[] = "-c";
    char* argv[] = {sh, dash_c, const_cast<char*>(command), nullptr};
    ::execve("/bin/sh", argv, environ);
    ::_exit(127);
  }
  if (child < 0) write_status(status_fd, 127 << 8);  // as if the shell was not found

  bool reported = child < 0;
  for (;;) {
    pollfd fds[2] = {{lifeline_fd, POLLIN, 0}, {sfd, POLLIN, 0}};
    const int n = ::poll(fds, sfd >= 0 ? 2 : 1, sfd >= 0 ? -1 : 100);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) break;  // EOF (or data, never sent): the engine is gone
    if (sfd >= 0 && (fds[1].revents & POLLIN)) {
      signalfd_siginfo info;
      [[maybe_unused]] const ssize_t r = ::read(sfd, &info, sizeof info);
    }
    int status = 0;
    pid_t done;
    while ((done = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (done == child && !reported) {
        write_status(status_fd, status);
        reported = true;
      }
    }
  }
  ::kill(0, SIGKILL);  // the whole group, this anchor included
  ::_exit(0);
}

}  // namespace

GuardedProcess spawn_guarded(const std::string& command) {
  const Lifeline& l = lifeline();
  int status[2];
  if (::pipe2(status, O_CLOEXEC) != 0) throw_errno("iii-exec: status pipe");

  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  if (pid == 0) run_anchor(command.c_str(), l.read_fd, status[1]);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(status[1]);
  if (pid < 0) {
    ::close(status[0]);
    errno = fork_errno;
    throw_errno("iii-exec: fork");
  }
  return GuardedProcess{pid, status[0]};
}

void signal_group(const GuardedProcess& p, int sig) {
  if (p.anchor <= 0) return;
  // Before the anchor's setsid() there is no such group yet, and no command either: the
  // anchor alone is signalled (it blocks everything but SIGKILL, so only that one matters).
  if (::kill(-p.anchor, sig) != 0 && errno == ESRCH) ::kill(p.anchor, sig);
}

bool try_reap(const GuardedProcess& p) {
  if (p.anchor <= 0) return true;
  int status = 0;
  const pid_t r = ::waitpid(p.anchor, &status, WNOHANG);
  return r == p.anchor || (r < 0 && errno == ECHILD);
}

}  // namespace iii::workers::exec
