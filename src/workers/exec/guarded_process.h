// A shell command in its own session and process group, guarded so that the group never
// outlives the engine, whatever way the engine ends (kill -9 included).
//
// Each command gets an *anchor*: a small process forked from the engine that becomes the
// leader of a new session and process group, forks `sh -c <command>` into that group, reports
// the command's wait status on a pipe, and then stays in the group until the group is killed.
// Every anchor holds the read end of one engine-wide lifeline pipe whose write end only the
// engine holds: when the engine dies, the kernel closes it, the anchors read EOF and SIGKILL
// their whole group (themselves, the command and anything it started in the group). The shell
// also gets PR_SET_PDEATHSIG(SIGKILL) (its parent is the single-threaded anchor). While the
// anchor lives its pid is the group id, so signalling the group can never hit a recycled id.
#pragma once

#include <sys/types.h>

#include <string>

namespace iii::workers::exec {

struct GuardedProcess {
  pid_t anchor = -1;   // the group leader; equals the process group id
  int status_fd = -1;  // read end: one int (the command's wait status), then EOF when the
                       // anchor dies; owned by the caller (close it)
};

// Starts `command` with /bin/sh -c, stdio inherited, environment and working directory of the
// engine. Throws std::system_error when a pipe or the fork fails.
GuardedProcess spawn_guarded(const std::string& command);

// Sends `sig` to the whole group of `p`. The anchor blocks every signal but SIGKILL, so it
// keeps the group id until the final SIGKILL.
void signal_group(const GuardedProcess& p, int sig);

// Reaps the anchor if it has exited; true when reaped (never blocks).
bool try_reap(const GuardedProcess& p);

}  // namespace iii::workers::exec
