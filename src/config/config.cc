#include "config/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <utility>

#ifndef III_VERSION
#define III_VERSION "0.11.6"
#endif

namespace iii::config {
namespace {

constexpr const char* kDefaultSource = "<default config>";
constexpr const char* kVersionPlaceholder = "__III_ENGINE_VERSION__";

std::string join(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

// yaml-cpp marks are 0-based; null marks (programmatic nodes) have line -1.
int line_of(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return fallback;
  return mark.line + 1;
}

[[noreturn]] void throw_at(const std::string& source, int line, const std::string& message) {
  if (line > 0) throw ConfigError(source + ":" + std::to_string(line) + ": " + message);
  throw ConfigError(source + ": " + message);
}

bool is_known_worker(const std::string& name) {
  const auto& known = known_worker_names();
  return std::find(known.begin(), known.end(), name) != known.end();
}

// Scalar value of a mapping key, or nullopt for non-scalar keys (which we never look up).
std::optional<std::string> key_string(const YAML::Node& key) {
  if (!key.IsScalar()) return std::nullopt;
  return key.Scalar();
}

// The older module docs' `- class: modules::...` entries (the v0.11 changelog's table of old
// class paths and new names; `streams` is the plural some docs used).
constexpr std::pair<std::string_view, std::string_view> kLegacyClasses[] = {
    {"modules::worker::WorkerModule", "iii-worker-manager"},
    {"modules::api::RestApiModule", "iii-http"},
    {"modules::stream::StreamModule", "iii-stream"},
    {"modules::streams::StreamModule", "iii-stream"},
    {"modules::state::StateModule", "iii-state"},
    {"modules::queue::QueueModule", "iii-queue"},
    {"modules::pubsub::PubSubModule", "iii-pubsub"},
    {"modules::cron::CronModule", "iii-cron"},
    {"modules::observability::OtelModule", "iii-observability"},
    {"modules::http_functions::HttpFunctionsModule", "iii-http-functions"},
    {"modules::shell::ExecModule", "iii-exec"},
    {"modules::bridge_client::BridgeClientModule", "iii-bridge"},
    {"modules::telemetry::TelemetryModule", "iii-telemetry"},
    {"modules::engine_functions::EngineFunctionsModule", "iii-engine-functions"},
};

// Adapter classes of those docs, by their last path segment (the module part varies:
// modules::state::adapters::KvStore, modules::stream::adapters::KvStore, ...).
constexpr std::pair<std::string_view, std::string_view> kLegacyAdapters[] = {
    {"KvStore", "kv"},         {"BuiltinKvStore", "kv"},        {"KvCronAdapter", "kv"},
    {"RedisAdapter", "redis"}, {"RedisCronAdapter", "redis"},   {"BuiltinQueueAdapter", "builtin"},
    {"LocalAdapter", "local"}, {"RabbitMQAdapter", "rabbitmq"}, {"RabbitMqAdapter", "rabbitmq"},
    {"Bridge", "bridge"},      {"BridgeAdapter", "bridge"},
};

std::optional<std::string> legacy_worker_name(const std::string& cls) {
  for (const auto& [from, to] : kLegacyClasses)
    if (cls == from) return std::string(to);
  return std::nullopt;
}

// Rewrites `adapter: {class: modules::...::X, config}` to `adapter: {name: x, config}`.
void map_legacy_adapter(YAML::Node config, const std::string& source, int entry_line) {
  if (!config.IsMap()) return;
  std::optional<YAML::Node> found;
  for (const auto& kv : config)
    if (kv.first.IsScalar() && kv.first.Scalar() == "adapter") found.emplace(kv.second);
  if (!found) return;
  const YAML::Node adapter = *found;  // const: lookups never add keys
  if (!adapter.IsMap() || adapter["name"] || !adapter["class"]) return;
  const YAML::Node cls = adapter["class"];
  const std::string path = cls.IsScalar() ? cls.Scalar() : std::string();
  const size_t cut = path.rfind("::");
  const std::string last = cut == std::string::npos ? path : path.substr(cut + 2);
  std::optional<std::string> name;
  for (const auto& [from, to] : kLegacyAdapters)
    if (last == from) name = std::string(to);
  if (!name) {
    std::string known;
    for (const auto& [from, to] : kLegacyAdapters)
      known += (known.empty() ? "" : ", ") + std::string(from) + " -> " + std::string(to);
    throw_at(source, line_of(cls, entry_line),
             "unknown adapter class '" + path + "' (known classes: " + known + ")");
  }
  YAML::Node rewritten(YAML::NodeType::Map);
  rewritten["name"] = *name;
  if (adapter["config"]) rewritten["config"] = adapter["config"];
  config["adapter"] = rewritten;
}

// `iii-http#2` (the original's own spelling of a second instance) and the newer engines'
// names without the `iii-` prefix (`http`, `state`, ...) name the same built-in workers.
std::string canonical_name(const std::string& raw) {
  std::string name = raw;
  const size_t hash = name.rfind('#');
  if (hash != std::string::npos && hash + 1 < name.size() &&
      std::all_of(name.begin() + static_cast<std::ptrdiff_t>(hash) + 1, name.end(),
                  [](char c) { return c >= '0' && c <= '9'; }))
    name.resize(hash);
  if (is_known_worker(name)) return name;
  if (name.rfind("iii-", 0) != 0 && is_known_worker("iii-" + name)) return "iii-" + name;
  return name;
}

WorkerEntry parse_entry(const YAML::Node& item, const std::string& source) {
  const int entry_line = line_of(item, 0);
  if (!item.IsMap()) {
    throw_at(source, entry_line, "worker entry must be a mapping with a 'name' key");
  }

  // optional + emplace, never Node::operator=: assigning to a bound YAML::Node rebinds the node it
  // shares with the document, so a repeated key would rewrite the parsed tree.
  using KeyValue = std::optional<std::pair<YAML::Node, YAML::Node>>;
  KeyValue name, config, image, cls;
  for (const auto& kv : item) {
    const auto key = key_string(kv.first);
    if (!key) continue;
    // Other keys are ignored silently, like the original (serde without deny_unknown_fields).
    if (*key == "name") {
      name.emplace(kv.first, kv.second);
    } else if (*key == "config") {
      config.emplace(kv.first, kv.second);
    } else if (*key == "image") {
      image.emplace(kv.first, kv.second);
    } else if (*key == "class") {
      cls.emplace(kv.first, kv.second);
    }
  }

  std::string raw_name;
  if (!name && cls) {
    // The older module docs' form: `- class: modules::stream::StreamModule`.
    const std::string c = cls->second.IsScalar() ? cls->second.Scalar() : std::string();
    const auto mapped = legacy_worker_name(c);
    if (!mapped) {
      std::string known;
      for (const auto& [from, to] : kLegacyClasses)
        known += (known.empty() ? "" : ", ") + std::string(from);
      throw_at(source, line_of(cls->second, entry_line),
               "unknown module class '" + c + "' (known classes: " + known + ")");
    }
    raw_name = *mapped;
  } else {
    if (!name) throw_at(source, entry_line, "worker entry is missing required key 'name'");
    if (!name->second.IsScalar() || name->second.Scalar().empty()) {
      throw_at(source, line_of(name->first, entry_line),
               "worker entry key 'name' must be a string");
    }
    raw_name = name->second.Scalar();
  }

  WorkerEntry entry;
  entry.name = canonical_name(raw_name);
  entry.instance_name = entry.name;
  entry.source = source;
  entry.line = entry_line;

  if (!is_known_worker(entry.name)) {
    throw_at(
        source, line_of(name ? name->second : cls->second, entry_line),
        "unknown worker '" + entry.name + "' (known workers: " + join(known_worker_names()) + ")");
  }
  if (image && !image->second.IsNull()) {
    throw_at(source, line_of(image->first, entry_line),
             "worker '" + entry.name +
                 "': 'image' is only allowed for external workers, not built-in ones");
  }

  if (!config || config->second.IsNull()) {
    entry.config = YAML::Node(YAML::NodeType::Map);
  } else if (config->second.IsMap()) {
    entry.config = config->second;
    map_legacy_adapter(entry.config, source, entry_line);
  } else {
    throw_at(source, line_of(config->first, entry_line),
             "worker '" + entry.name + "': 'config' must be a mapping");
  }
  return entry;
}

void parse_worker_list(const YAML::Node& key, const YAML::Node& list, const std::string& source,
                       std::vector<WorkerEntry>& out) {
  if (list.IsNull()) return;  // `workers:` with nothing under it
  if (!list.IsSequence()) {
    throw_at(source, line_of(key, 0), "'" + key.Scalar() + "' must be a list of workers");
  }
  for (const auto& item : list) out.push_back(parse_entry(item, source));
}

WorkerEntry implicit_entry(const std::string& name, const std::string& source) {
  WorkerEntry entry;
  entry.name = name;
  entry.instance_name = name;
  entry.config = YAML::Node(YAML::NodeType::Map);
  entry.source = source;
  return entry;
}

// First occurrence keeps the plain name; later ones become name#1, name#2, ...
void assign_instance_names(std::vector<WorkerEntry>& workers) {
  std::map<std::string, int> seen;
  for (auto& worker : workers) {
    const int count = seen[worker.name]++;
    worker.instance_name = count == 0 ? worker.name : worker.name + "#" + std::to_string(count);
  }
}

void append_mandatory(EngineConfig& config) {
  for (const auto& name : mandatory_worker_names()) {
    const bool present = std::any_of(config.workers.begin(), config.workers.end(),
                                     [&](const WorkerEntry& w) { return w.name == name; });
    if (!present) config.workers.push_back(implicit_entry(name, config.source));
  }
}

}  // namespace

std::string canonical_worker_name(const std::string& name) { return canonical_name(name); }

std::optional<std::string> legacy_class_worker_name(const std::string& cls) {
  return legacy_worker_name(cls);
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string expand_env(const std::string& text, const std::string& source, const EnvLookup& env) {
  std::string out;
  out.reserve(text.size());
  int line = 1;  // line of position i, for diagnostics
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c != '$' || i + 1 >= text.size() || text[i + 1] != '{') {
      if (c == '\n') ++line;
      out += c;
      ++i;
      continue;
    }
    // Same shape as the regex \$\{([^}:]+)(?::([^}]*))?\} : anything that does not match is
    // copied literally and scanning resumes right after the '$'.
    size_t j = i + 2;
    while (j < text.size() && text[j] != '}' && text[j] != ':') ++j;
    const size_t name_end = j;
    std::optional<std::string> def;
    bool matched = false;
    if (name_end > i + 2 && j < text.size()) {
      if (text[j] == '}') {
        matched = true;
      } else {  // ':' starts the default, which runs to the next '}'
        const size_t close = text.find('}', j + 1);
        if (close != std::string::npos) {
          def = text.substr(j + 1, close - j - 1);
          j = close;
          matched = true;
        }
      }
    }
    if (!matched) {
      out += c;
      ++i;
      continue;
    }

    const std::string name = text.substr(i + 2, name_end - i - 2);
    if (auto value = env(name)) {
      out += *value;
    } else if (def) {
      out += *def == kVersionPlaceholder ? std::string(III_VERSION) : *def;
    } else {
      throw_at(source, line,
               "environment variable '" + name + "' is not set and has no default (write ${" +
                   name + ":default})");
    }
    // Names and defaults may span lines; keep the line counter in step with the input.
    line += static_cast<int>(std::count(text.begin() + i, text.begin() + j + 1, '\n'));
    i = j + 1;
  }
  return out;
}

EngineConfig parse_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) throw ConfigError(source + ": invalid YAML: " + e.msg);
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) + ":" +
                      std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }

  EngineConfig config;
  config.source = source;

  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) {
      throw_at(source, line_of(root, 0),
               "top level must be a mapping with 'workers' and/or 'modules'");
    }
    std::optional<std::pair<YAML::Node, YAML::Node>> workers, modules;
    for (const auto& kv : root) {
      const auto key = key_string(kv.first);
      if (key && *key == "workers") {
        workers.emplace(kv.first, kv.second);
      } else if (key && *key == "modules") {
        modules.emplace(kv.first, kv.second);
      } else {
        const std::string shown = key ? *key : std::string("<non-scalar key>");
        throw_at(source, line_of(kv.first, 0),
                 "unknown top-level key '" + shown + "' (expected 'workers' or 'modules')");
      }
    }
    if (workers) parse_worker_list(workers->first, workers->second, source, config.workers);
    if (modules) parse_worker_list(modules->first, modules->second, source, config.workers);
  }

  append_mandatory(config);
  assign_instance_names(config.workers);
  return config;
}

EngineConfig load_config_file(const std::string& path, const EnvLookup& env) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw ConfigError("Config file not found: '" + path + "'");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  if (in) buf << in.rdbuf();
  if (!in || in.bad()) {
    throw ConfigError("Cannot read config file '" + path + "': " + std::strerror(errno));
  }
  return parse_config(expand_env(buf.str(), path, env), path);
}

EngineConfig default_config() {
  EngineConfig config;
  config.source = kDefaultSource;
  for (const auto& name : default_worker_names()) {
    config.workers.push_back(implicit_entry(name, kDefaultSource));
  }
  append_mandatory(config);  // no-op today; keeps the invariant if the list above shrinks
  assign_instance_names(config.workers);
  return config;
}

// --- WorkerConfigReader ---

WorkerConfigReader::WorkerConfigReader(const WorkerEntry& entry) : entry_(entry) {}

namespace {

// Looks a key up without mutating the (const) mapping; returns {key node, value node}.
std::pair<YAML::Node, YAML::Node> find_key(const YAML::Node& map, const std::string& key) {
  if (map.IsMap()) {
    for (const auto& kv : map) {
      if (kv.first.IsScalar() && kv.first.Scalar() == key) return {kv.first, kv.second};
    }
  }
  return {YAML::Node(YAML::NodeType::Undefined), YAML::Node(YAML::NodeType::Undefined)};
}

// Quoted scalars carry the non-specific tag "!"; plain ones "?". Numbers and booleans must be
// plain so that `port: "80"` is a type error as in the original (serde_yaml).
bool is_plain_scalar(const YAML::Node& node) { return node.IsScalar() && node.Tag() != "!"; }

enum class IntParse { kOk, kNotInteger, kOutOfRange };

// YAML 1.2 core-schema integers: [-+]?[0-9]+, 0x[0-9a-fA-F]+, 0o[0-7]+. Done by hand because
// yaml-cpp's own decoding treats a leading 0 as octal and is lenient about what follows.
IntParse parse_yaml_int(const std::string& text, int64_t& out) {
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    if (negative || text[0] == '+') return IntParse::kNotInteger;  // YAML 1.2: no sign here
    base = s[1] == 'x' ? 16 : 8;
    s.remove_prefix(2);
  }
  if (s.empty()) return IntParse::kNotInteger;
  // Parse the magnitude unsigned so that INT64_MIN is representable.
  uint64_t magnitude = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), magnitude, base);
  if (end != s.data() + s.size()) return IntParse::kNotInteger;
  if (ec == std::errc::result_out_of_range) return IntParse::kOutOfRange;
  if (ec != std::errc()) return IntParse::kNotInteger;
  constexpr uint64_t kMaxPositive = static_cast<uint64_t>(INT64_MAX);
  if (negative) {
    if (magnitude > kMaxPositive + 1) return IntParse::kOutOfRange;
    out = magnitude == kMaxPositive + 1 ? INT64_MIN : -static_cast<int64_t>(magnitude);
  } else {
    if (magnitude > kMaxPositive) return IntParse::kOutOfRange;
    out = static_cast<int64_t>(magnitude);
  }
  return IntParse::kOk;
}

}  // namespace

YAML::Node WorkerConfigReader::get_node(const std::string& key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.push_back(key);
  auto [k, value] = find_key(entry_.config, key);
  if (!value.IsDefined()) return YAML::Node(YAML::NodeType::Null);
  return value;
}

std::string WorkerConfigReader::get_string(const std::string& key, const std::string& def) {
  return get_optional_string(key).value_or(def);
}

std::optional<std::string> WorkerConfigReader::get_optional_string(const std::string& key) {
  const YAML::Node value = get_node(key);
  if (value.IsNull()) return std::nullopt;
  if (!value.IsScalar()) fail(key, "key '" + key + "' must be a string");
  return value.Scalar();
}

int64_t WorkerConfigReader::get_int(const std::string& key, int64_t def, int64_t min, int64_t max) {
  const YAML::Node value = get_node(key);
  if (value.IsNull()) return def;
  const std::string range = std::to_string(min) + " and " + std::to_string(max);
  int64_t result = 0;
  const IntParse parsed =
      is_plain_scalar(value) ? parse_yaml_int(value.Scalar(), result) : IntParse::kNotInteger;
  if (parsed == IntParse::kNotInteger) fail(key, "key '" + key + "' must be an integer");
  if (parsed == IntParse::kOutOfRange || result < min || result > max) {
    fail(key, "key '" + key + "' must be between " + range + " (got " + value.Scalar() + ")");
  }
  return result;
}

bool WorkerConfigReader::get_bool(const std::string& key, bool def) {
  const YAML::Node value = get_node(key);
  if (value.IsNull()) return def;
  // YAML 1.2 core booleans only; yaml-cpp would also take yes/no/on/off, serde_yaml does not.
  if (is_plain_scalar(value)) {
    const std::string& s = value.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  fail(key, "key '" + key + "' must be a boolean (true or false)");
}

void WorkerConfigReader::finish() {
  if (!entry_.config.IsMap()) return;
  for (const auto& kv : entry_.config) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    std::vector<std::string> sorted = known_;
    std::sort(sorted.begin(), sorted.end());
    fail_at(kv.first, "unknown key '" + key + "' (known keys: " + join(sorted) + ")");
  }
}

void WorkerConfigReader::fail(const std::string& key, const std::string& message) const {
  auto [k, value] = find_key(entry_.config, key);
  fail_at(k, message);
}

void WorkerConfigReader::fail_at(const YAML::Node& node, const std::string& message) const {
  const int line = line_of(node, entry_.line);
  const std::string source = entry_.source.empty() ? std::string(kDefaultSource) : entry_.source;
  throw_at(source, line, "worker '" + entry_.instance_name + "': " + message);
}

YAML::Node read_adapter_block(WorkerConfigReader& r, const YAML::Node& adapter,
                              const std::string& available, const std::vector<std::string>& later) {
  if (!adapter || adapter.IsNull()) return YAML::Node();
  if (!adapter.IsMap()) r.fail_at(adapter, "key 'adapter' must be a mapping {name, config}");
  for (const auto& kv : adapter) {
    const auto key = kv.first.as<std::string>("");
    if (key != "name" && key != "config")
      r.fail_at(kv.first, "adapter: unknown key '" + key + "' (known keys: config, name)");
  }
  const YAML::Node name = adapter["name"];
  if (!name || !name.IsScalar()) r.fail_at(adapter, "adapter: missing string key 'name'");
  const std::string adapter_name = name.Scalar();
  if (std::find(later.begin(), later.end(), adapter_name) != later.end())
    r.fail_at(name, "adapter '" + adapter_name +
                        "' is not available in this build yet (available: " + available + ")");
  if (adapter_name != available)
    r.fail_at(name,
              "Adapter factory '" + adapter_name + "' not found. Available: [" + available + "]");
  const YAML::Node cfg = adapter["config"];
  if (!cfg || cfg.IsNull()) return YAML::Node();
  if (!cfg.IsMap()) r.fail_at(cfg, "adapter.config must be a mapping");
  return cfg;
}

AdapterChoice read_adapter_choice(WorkerConfigReader& r, const YAML::Node& adapter,
                                  const std::vector<std::string>& available,
                                  const std::vector<std::string>& later) {
  AdapterChoice out{available.at(0), YAML::Node()};
  if (!adapter || adapter.IsNull()) return out;
  if (!adapter.IsMap()) r.fail_at(adapter, "key 'adapter' must be a mapping {name, config}");
  for (const auto& kv : adapter) {
    const auto key = kv.first.as<std::string>("");
    if (key != "name" && key != "config")
      r.fail_at(kv.first, "adapter: unknown key '" + key + "' (known keys: config, name)");
  }
  const YAML::Node name = adapter["name"];
  if (!name || !name.IsScalar()) r.fail_at(adapter, "adapter: missing string key 'name'");
  out.name = name.Scalar();
  std::string names;
  for (const auto& a : available) names += (names.empty() ? "" : ", ") + a;
  if (std::find(later.begin(), later.end(), out.name) != later.end())
    r.fail_at(name, "adapter '" + out.name +
                        "' is not available in this build yet (available: " + names + ")");
  if (std::find(available.begin(), available.end(), out.name) == available.end())
    r.fail_at(name, "Adapter factory '" + out.name + "' not found. Available: [" + names + "]");
  const YAML::Node cfg = adapter["config"];
  if (!cfg || cfg.IsNull()) return out;
  if (!cfg.IsMap()) r.fail_at(cfg, "adapter.config must be a mapping");
  out.config = cfg;
  return out;
}

}  // namespace iii::config
