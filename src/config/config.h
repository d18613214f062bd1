// Engine configuration: the YAML `workers:` list (and legacy `modules:`), `${VAR:default}`
// expansion, the embedded default worker set, and typed access to one worker's `config:`
// mapping that rejects unknown keys with file:line diagnostics.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace iii::config {

// Every configuration problem. what() is the full user-facing message, e.g.
// "config.yaml:12: worker 'iii-worker-manager': unknown key 'prot' (known keys: host, port, ...)".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorkerEntry {
  std::string
      name;  // e.g. "iii-worker-manager"; duplicates become "name#1", "name#2" in instance_name
  std::string instance_name;
  YAML::Node config;   // a mapping (empty mapping when absent)
  std::string source;  // file path, or "<default config>"
  int line = 0;        // 1-based line of the entry in `source` (0 when unknown)
};

struct EngineConfig {
  std::vector<WorkerEntry> workers;  // in file order, mandatory workers appended when absent
  std::string source;                // file path or "<default config>"
};

// Environment lookup used by expansion; tests pass a fake.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Expands ${NAME} and ${NAME:default} in raw text (before YAML parsing, comments included).
// Set variables win even if empty; "__III_ENGINE_VERSION__" as a default expands to the engine
// version; `$NAME` and an unclosed `${` are left as is. A missing variable without default
// throws ConfigError naming source, line and variable.
std::string expand_env(const std::string& text, const std::string& source, const EnvLookup& env);

// Parses YAML text (already expanded). Top-level keys allowed: `workers`, `modules` (lists,
// concatenated workers first). Entry keys: `name` (required string), `config` (mapping),
// `image` (rejected for built-in workers). Unknown worker names are an error listing the
// known ones. Mandatory workers (iii-worker-manager, iii-engine-functions, iii-observability)
// are appended when absent.
EngineConfig parse_config(const std::string& yaml_text, const std::string& source);

// Reads and parses a file; missing/unreadable file is a ConfigError.
EngineConfig load_config_file(const std::string& path, const EnvLookup& env = process_env());

// The embedded defaults used when the engine starts without a config file.
EngineConfig default_config();

// Names of the built-in workers, in config order, from the one worker table
// (src/workers/registry.cc): all known ones, the mandatory ones (always running), and those the
// embedded defaults start (the mandatory ones included). The last two list only the workers
// this build provides.
const std::vector<std::string>& known_worker_names();
const std::vector<std::string>& mandatory_worker_names();
const std::vector<std::string>& default_worker_names();
bool is_mandatory_worker(const std::string& name);

// The built-in worker a config name stands for: `iii-http#2` (an instance suffix) and the
// newer engines' short names (`http`, `state`, ...) map to `iii-http`, `iii-state`, ...;
// other names come back unchanged.
std::string canonical_worker_name(const std::string& name);
// The worker an older docs' `class: modules::...::XModule` entry stands for (nullopt when the
// class is not one of the v0.11 changelog's table).
std::optional<std::string> legacy_class_worker_name(const std::string& cls);

// Typed reader over one worker's `config:` mapping. Call finish() after reading every key:
// any key that was never read is reported as unknown (with its line).
class WorkerConfigReader {
 public:
  explicit WorkerConfigReader(const WorkerEntry& entry);

  std::string get_string(const std::string& key, const std::string& def);
  std::optional<std::string> get_optional_string(const std::string& key);
  int64_t get_int(const std::string& key, int64_t def, int64_t min, int64_t max);
  bool get_bool(const std::string& key, bool def);
  // Returns the raw node (Null node when absent) and marks the key as known.
  YAML::Node get_node(const std::string& key);
  void finish();

  // Throws ConfigError "<source>:<line>: worker '<name>': <message>", where line is that of
  // `key` in the mapping (the entry's line when the key is absent). `message` should name the key.
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // Same, with the line of any node (e.g. a list item nested under a key).
  [[noreturn]] void fail_at(const YAML::Node& node, const std::string& message) const;

 private:
  const WorkerEntry& entry_;
  std::vector<std::string> known_;
};

// A worker's `adapter: {name, config}` block (absent or null: nothing to read). Checks its keys
// and its name: `available` is the one adapter this build provides for the worker; names in
// `later` are the original's other adapters, refused as "not available in this build yet".
// Returns the adapter's `config` node (null when absent, otherwise a mapping); every error is
// a ConfigError naming the file and line.
YAML::Node read_adapter_block(WorkerConfigReader& r, const YAML::Node& adapter,
                              const std::string& available,
                              const std::vector<std::string>& later = {});

// The same for a worker with several adapters: `available` lists this build's adapter names
// (the first is the default, used when the block is absent). Returns the chosen name and its
// `config` node (null when absent, otherwise a mapping).
struct AdapterChoice {
  std::string name;
  YAML::Node config;
};
AdapterChoice read_adapter_choice(WorkerConfigReader& r, const YAML::Node& adapter,
                                  const std::vector<std::string>& available,
                                  const std::vector<std::string>& later = {});

}  // namespace iii::config
