// Fuzzes the config loader: expand_env on the raw text (with a fake environment), then
// parse_config, then a WorkerConfigReader over every entry reading each key of its `config:`
// mapping as one of the typed getters (picked from the key) and finish(). Every problem must
// surface as a ConfigError; any other exception escapes and is reported as a crash.
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace {

using namespace iii::config;

// Names of length 0 mod 3 are unset, 1 mod 3 set but empty, 2 mod 3 set to a YAML-ish value.
std::optional<std::string> fake_env(const std::string& name) {
  switch (name.size() % 3) {
    case 0:
      return std::nullopt;
    case 1:
      return std::string();
    default:
      return "{k: [" + name + ", 1]}";
  }
}

template <typename Fn>
void expect_config_error_only(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError&) {
  }
}

void read_entry(const WorkerEntry& entry) {
  WorkerConfigReader r(entry);
  std::vector<std::string> keys;
  if (entry.config.IsMap()) {
    for (const auto& kv : entry.config)
      if (kv.first.IsScalar()) keys.push_back(kv.first.Scalar());
  }
  keys.push_back("absent_key");
  for (const std::string& key : keys) {
    expect_config_error_only([&] {
      switch (key.size() % 5) {
        case 0:
          (void)r.get_string(key, "default");
          break;
        case 1:
          (void)r.get_optional_string(key);
          break;
        case 2:
          (void)r.get_int(key, 7, -1000, 1 << 20);
          break;
        case 3:
          (void)r.get_bool(key, false);
          break;
        default: {
          const YAML::Node n = r.get_node(key);
          if (n.IsSequence() && n.size() > 0) r.fail_at(n[0], "first item of '" + key + "'");
          if (n.IsMap()) r.fail(key, "a mapping under '" + key + "'");
          break;
        }
      }
    });
  }
  expect_config_error_only([&] { r.finish(); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<EngineConfig> config;
  expect_config_error_only(
      [&] { config = parse_config(expand_env(text, "fuzz.yaml", fake_env), "fuzz.yaml"); });
  if (!config) return 0;
  for (const WorkerEntry& entry : config->workers) read_entry(entry);
  return 0;
}
