// `iii worker add|remove|list`: manage the built-in workers of a project's config.yaml.
// Edits are made on the text (comments, order and formatting of everything else are kept);
// nothing is ever downloaded: only the workers built into this engine can be added.
#pragma once

#include <stdexcept>
#include <string>

namespace iii::cli {

// A refusal with a user-facing message (unknown worker, unsupported version, ...).
class WorkerCommandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorkerEdit {
  std::string text;     // the new file content
  std::string message;  // what was done, for the user
  bool changed = false;
};

// `spec` is `<name>[@<version>]`; names with or without the `iii-` prefix. `path` names the
// file in messages. Throws WorkerCommandError.
WorkerEdit add_worker(const std::string& text, const std::string& spec, const std::string& path);
// `name` may carry `#N` to pick one of several entries of the same worker.
WorkerEdit remove_worker(const std::string& text, const std::string& name, const std::string& path);
// Human-readable listing of the configured built-in workers.
std::string list_workers(const std::string& text, const std::string& path);

// The documented default `config:` block `add` writes for a worker (YAML lines relative to
// `config:`, two-space indented; empty for a bare `- name:` entry).
std::string default_worker_block(const std::string& canonical_name);

struct WorkerOptions {
  std::string action;  // add | remove | list
  std::string name;
  std::string config_path = "config.yaml";
};
// Exit codes: 0 done, 1 refused (message on stderr), 2 unreadable/unwritable file.
int run_worker_command(const WorkerOptions& opts);

}  // namespace iii::cli
