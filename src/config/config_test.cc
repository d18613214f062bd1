#include "config/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace iii::config {
namespace {

EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Runs `fn`, expects a ConfigError and returns its message ("" when nothing was thrown).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected ConfigError";
  return "";
}

std::vector<std::string> instance_names(const EngineConfig& c) {
  std::vector<std::string> out;
  for (const auto& w : c.workers) out.push_back(w.instance_name);
  return out;
}

// --- expand_env ---

TEST(ExpandEnv, SetVariableIsSubstituted) {
  EXPECT_EQ(expand_env("port: ${PORT}\n", "c.yaml", fake_env({{"PORT", "1234"}})), "port: 1234\n");
}

TEST(ExpandEnv, SetButEmptyVariableWinsOverDefault) {
  EXPECT_EQ(expand_env("host: '${HOST:localhost}'", "c.yaml", fake_env({{"HOST", ""}})),
            "host: ''");
}

TEST(ExpandEnv, DefaultUsedWhenUnset) {
  EXPECT_EQ(expand_env("port: ${PORT:49134}", "c.yaml", fake_env({})), "port: 49134");
  EXPECT_EQ(expand_env("x: '${X:}'", "c.yaml", fake_env({})), "x: ''");
}

TEST(ExpandEnv, DefaultMayContainColons) {
  EXPECT_EQ(expand_env("url: ${URL:redis://localhost:6379}", "c.yaml", fake_env({})),
            "url: redis://localhost:6379");
}

TEST(ExpandEnv, MissingVariableIsErrorWithLine) {
  const std::string msg = error_of(
      [] { expand_env("a: 1\n# ${IN_COMMENT:x}\nb: ${NOPE}\n", "cfg.yaml", fake_env({})); });
  EXPECT_EQ(msg,
            "cfg.yaml:3: environment variable 'NOPE' is not set and has no default "
            "(write ${NOPE:default})");
}

TEST(ExpandEnv, CommentsAreExpandedToo) {
  EXPECT_EQ(expand_env("# ${A}\n", "c.yaml", fake_env({{"A", "x"}})), "# x\n");
  EXPECT_NE(error_of([] { expand_env("# ${A}\n", "c.yaml", fake_env({})); }), "");
}

TEST(ExpandEnv, DollarNameWithoutBracesIsUntouched) {
  EXPECT_EQ(expand_env("cmd: echo $HOME $", "c.yaml", fake_env({{"HOME", "/h"}})),
            "cmd: echo $HOME $");
}

TEST(ExpandEnv, UnclosedBraceIsUntouched) {
  EXPECT_EQ(expand_env("a: ${OPEN", "c.yaml", fake_env({{"OPEN", "x"}})), "a: ${OPEN");
  EXPECT_EQ(expand_env("a: ${OPEN:def", "c.yaml", fake_env({})), "a: ${OPEN:def");
  EXPECT_EQ(expand_env("a: ${}", "c.yaml", fake_env({})), "a: ${}");
  EXPECT_EQ(expand_env("a: $${A}", "c.yaml", fake_env({{"A", "x"}})), "a: $x");
}

TEST(ExpandEnv, VersionPlaceholderDefault) {
  EXPECT_EQ(expand_env("v: ${V:__III_ENGINE_VERSION__}", "c.yaml", fake_env({})),
            std::string("v: ") + III_VERSION);
  EXPECT_EQ(expand_env("v: ${V:__III_ENGINE_VERSION__}", "c.yaml", fake_env({{"V", "1"}})), "v: 1");
}

TEST(ExpandEnv, SubstitutedValuesAreNotRescanned) {
  EXPECT_EQ(expand_env("${A}", "c.yaml", fake_env({{"A", "${B}"}})), "${B}");
}

// --- parse_config ---

TEST(ParseConfig, EmptyFileGivesMandatoryWorkers) {
  const EngineConfig c = parse_config("", "c.yaml");
  EXPECT_EQ(instance_names(c),
            (std::vector<std::string>{"iii-worker-manager", "iii-engine-functions",
                                      "iii-observability", "iii-telemetry"}));
  EXPECT_EQ(c.source, "c.yaml");
  EXPECT_TRUE(c.workers[0].config.IsMap());
  EXPECT_EQ(c.workers[0].config.size(), 0u);
}

TEST(ParseConfig, WorkersThenModulesAreConcatenated) {
  // `modules` appears first in the file but workers still come first.
  const std::string yaml =
      "modules:\n"
      "  - name: iii-cron\n"
      "workers:\n"
      "  - name: iii-http\n"
      "    config:\n"
      "      port: 3111\n"
      "  - name: iii-state\n";
  const EngineConfig c = parse_config(yaml, "c.yaml");
  ASSERT_EQ(c.workers.size(), 7u);
  EXPECT_EQ(c.workers[0].name, "iii-http");
  EXPECT_EQ(c.workers[0].line, 4);
  EXPECT_EQ(c.workers[0].config["port"].as<int>(), 3111);
  EXPECT_EQ(c.workers[1].name, "iii-state");
  EXPECT_EQ(c.workers[2].name, "iii-cron");
  EXPECT_EQ(c.workers[2].line, 2);
  EXPECT_EQ(c.workers[3].name, "iii-worker-manager");
  EXPECT_EQ(c.workers[3].source, "c.yaml");
}

TEST(ParseConfig, LegacyModulesKeyAlone) {
  const EngineConfig c = parse_config("modules:\n  - name: iii-queue\n", "c.yaml");
  EXPECT_EQ(c.workers.front().name, "iii-queue");
  EXPECT_EQ(c.workers.size(), 5u);
}

TEST(ParseConfig, NullConfigAndExtraKeysAreAccepted) {
  const EngineConfig c =
      parse_config("workers:\n  - name: iii-http\n    config:\n    description: x\n", "c.yaml");
  EXPECT_TRUE(c.workers[0].config.IsMap());
}

TEST(ParseConfig, UnknownTopLevelKeyMentionsKeyAndLine) {
  const std::string msg = error_of([] { parse_config("workers: []\nport: 49134\n", "cfg.yaml"); });
  EXPECT_NE(msg.find("cfg.yaml:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'port'"), std::string::npos) << msg;
}

TEST(ParseConfig, UnknownWorkerMentionsLineNameAndKnownNames) {
  const std::string msg = error_of(
      [] { parse_config("workers:\n  - name: iii-http\n  - name: iii-nope\n", "cfg.yaml"); });
  EXPECT_NE(msg.find("cfg.yaml:3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'iii-nope'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("iii-worker-manager"), std::string::npos) << msg;
  EXPECT_NE(msg.find("iii-bridge"), std::string::npos) << msg;
}

TEST(ParseConfig, YamlSyntaxErrorHasFileLineColumn) {
  const std::string msg =
      error_of([] { parse_config("workers:\n  - name: [unclosed\n", "cfg.yaml"); });
  EXPECT_EQ(msg.rfind("cfg.yaml:", 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;

  const std::string msg2 =
      error_of([] { parse_config("workers:\n  - name: a\n bad: [\n", "cfg.yaml"); });
  EXPECT_EQ(msg2.rfind("cfg.yaml:3:", 0), 0u) << msg2;
}

TEST(ParseConfig, DuplicateNamesGetSuffixes) {
  const std::string yaml =
      "workers:\n"
      "  - name: iii-worker-manager\n"
      "    config: {port: 49199}\n"
      "  - name: iii-worker-manager\n"
      "    config: {port: 49135}\n"
      "  - name: iii-worker-manager\n";
  const EngineConfig c = parse_config(yaml, "c.yaml");
  EXPECT_EQ(instance_names(c),
            (std::vector<std::string>{"iii-worker-manager", "iii-worker-manager#1",
                                      "iii-worker-manager#2", "iii-engine-functions",
                                      "iii-observability", "iii-telemetry"}));
  EXPECT_EQ(c.workers[1].name, "iii-worker-manager");
  EXPECT_EQ(c.workers[1].config["port"].as<int>(), 49135);
}

TEST(ParseConfig, MandatoryAppendedOnlyWhenAbsent) {
  const EngineConfig c = parse_config(
      "workers:\n  - name: iii-observability\n    config: {level: debug}\n  - name: iii-http\n",
      "c.yaml");
  EXPECT_EQ(instance_names(c),
            (std::vector<std::string>{"iii-observability", "iii-http", "iii-worker-manager",
                                      "iii-engine-functions", "iii-telemetry"}));
  EXPECT_EQ(c.workers[0].config["level"].as<std::string>(), "debug");
}

TEST(ParseConfig, TelemetryIsMandatoryAndAppendedOnce) {
  const EngineConfig c =
      parse_config("workers:\n  - name: iii-telemetry\n    config: {enabled: false}\n", "c.yaml");
  EXPECT_EQ(c.workers.size(), 4u);
  EXPECT_EQ(c.workers[0].name, "iii-telemetry");
  EXPECT_TRUE(is_mandatory_worker("iii-telemetry"));
  EXPECT_TRUE(is_mandatory_worker("iii-engine-functions"));
}

TEST(ParseConfig, LegacyModuleClassesMapToTodaysNames) {
  const std::string yaml =
      "modules:\n"
      "  - class: modules::stream::StreamModule\n"
      "    config:\n"
      "      port: 3112\n"
      "      adapter:\n"
      "        class: modules::stream::adapters::RedisAdapter\n"
      "        config:\n"
      "          redis_url: redis://localhost:6379\n"
      "  - class: modules::state::StateModule\n"
      "    config:\n"
      "      adapter:\n"
      "        class: modules::state::adapters::KvStore\n"
      "  - class: modules::queue::QueueModule\n"
      "    config: {adapter: {class: modules::queue::BuiltinQueueAdapter}}\n"
      "  - class: modules::cron::CronModule\n"
      "    config: {adapter: {class: modules::cron::KvCronAdapter}}\n"
      "  - class: modules::api::RestApiModule\n"
      "  - class: modules::shell::ExecModule\n"
      "  - class: modules::worker::WorkerModule\n"
      "  - class: modules::observability::OtelModule\n";
  const EngineConfig c = parse_config(yaml, "c.yaml");
  std::vector<std::string> names;
  for (const auto& w : c.workers) names.push_back(w.name);
  EXPECT_EQ(names, (std::vector<std::string>{"iii-stream", "iii-state", "iii-queue", "iii-cron",
                                             "iii-http", "iii-exec", "iii-worker-manager",
                                             "iii-observability", "iii-engine-functions",
                                             "iii-telemetry"}));
  EXPECT_EQ(c.workers[0].line, 2);
  EXPECT_EQ(c.workers[0].config["port"].as<int>(), 3112);
  EXPECT_EQ(c.workers[0].config["adapter"]["name"].as<std::string>(), "redis");
  EXPECT_EQ(c.workers[0].config["adapter"]["config"]["redis_url"].as<std::string>(),
            "redis://localhost:6379");
  EXPECT_FALSE(c.workers[0].config["adapter"]["class"]);
  EXPECT_EQ(c.workers[1].config["adapter"]["name"].as<std::string>(), "kv");
  EXPECT_FALSE(c.workers[1].config["adapter"]["config"]);
  EXPECT_EQ(c.workers[2].config["adapter"]["name"].as<std::string>(), "builtin");
  EXPECT_EQ(c.workers[3].config["adapter"]["name"].as<std::string>(), "kv");

  const std::string msg =
      error_of([] { parse_config("modules:\n  - class: modules::nope::NopeModule\n", "c.yaml"); });
  EXPECT_NE(msg.find("c.yaml:2: unknown module class 'modules::nope::NopeModule'"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("modules::stream::StreamModule"), std::string::npos) << msg;
  const std::string msg2 = error_of([] {
    parse_config(
        "modules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n"
        "        class: modules::state::adapters::Weird\n",
        "c.yaml");
  });
  EXPECT_NE(msg2.find("c.yaml:5: unknown adapter class 'modules::state::adapters::Weird'"),
            std::string::npos)
      << msg2;
}

TEST(ParseConfig, NewerShortNamesAndInstanceSuffixes) {
  const EngineConfig c = parse_config(
      "workers:\n  - name: http\n  - name: state\n  - name: worker-manager\n"
      "  - name: iii-worker-manager#1\n    config: {port: 49135}\n  - name: http-functions\n",
      "c.yaml");
  EXPECT_EQ(instance_names(c), (std::vector<std::string>{
                                   "iii-http", "iii-state", "iii-worker-manager",
                                   "iii-worker-manager#1", "iii-http-functions",
                                   "iii-engine-functions", "iii-observability", "iii-telemetry"}));
  EXPECT_EQ(c.workers[3].name, "iii-worker-manager");
  EXPECT_NE(error_of([] {
              parse_config("workers:\n  - name: iii-http#x\n", "c.yaml");
            }).find("unknown worker 'iii-http#x'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_config("workers:\n  - name: nope\n", "c.yaml");
            }).find("unknown worker 'nope'"),
            std::string::npos);
}

TEST(ParseConfig, EntryErrors) {
  EXPECT_NE(error_of([] {
              parse_config("workers:\n  - config: {}\n", "c.yaml");
            }).find("c.yaml:2: worker entry is missing required key 'name'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_config("workers:\n  - name: iii-http\n    config: [1]\n", "c.yaml");
            }).find("c.yaml:3:"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_config("workers:\n  - name: iii-http\n    image: foo:latest\n", "c.yaml");
            }).find("c.yaml:3:"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("workers: 3\n", "c.yaml"); }).find("c.yaml:1:"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_config("- name: iii-http\n", "c.yaml"); }), "");
  EXPECT_NE(error_of([] { parse_config("workers:\n  - iii-http\n", "c.yaml"); }), "");
}

TEST(DefaultConfig, HasMandatoryAndDefaultWorkers) {
  const EngineConfig c = default_config();
  EXPECT_EQ(c.source, "<default config>");
  EXPECT_EQ(instance_names(c),
            (std::vector<std::string>{"iii-worker-manager", "iii-engine-functions",
                                      "iii-observability", "iii-telemetry", "iii-http", "iii-state",
                                      "iii-stream", "iii-queue", "iii-pubsub", "iii-cron"}));
  for (const auto& w : c.workers) {
    EXPECT_EQ(w.source, "<default config>");
    EXPECT_TRUE(w.config.IsMap());
    EXPECT_EQ(w.config.size(), 0u);
  }
}

TEST(LoadConfigFile, MissingFile) {
  EXPECT_EQ(error_of([] { load_config_file("/nonexistent/dir/config.yaml"); }),
            "Config file not found: '/nonexistent/dir/config.yaml'");
}

TEST(LoadConfigFile, ReadsExpandsAndParses) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("iii_cfg_test_" + std::to_string(getpid()) + ".yaml"))
                               .string();
  {
    std::ofstream out(path);
    out << "workers:\n  - name: iii-worker-manager\n    config:\n      port: ${P:1}\n";
  }
  const EngineConfig c = load_config_file(path, fake_env({{"P", "49199"}}));
  std::remove(path.c_str());
  EXPECT_EQ(c.source, path);
  EXPECT_EQ(c.workers[0].source, path);
  EXPECT_EQ(c.workers[0].config["port"].as<int>(), 49199);
}

// --- WorkerConfigReader ---

WorkerEntry entry_from(const std::string& yaml) {
  EngineConfig c = parse_config(yaml, "w.yaml");
  return c.workers.front();
}

TEST(WorkerConfigReader, ReadsTypedValuesAndDefaults) {
  const WorkerEntry e = entry_from(
      "workers:\n"
      "  - name: iii-worker-manager\n"
      "    config:\n"
      "      host: 127.0.0.1\n"
      "      port: 49199\n"
      "      verbose: true\n"
      "      big: -0x10\n"
      "      rbac:\n"
      "        auth_function_id: auth\n");
  WorkerConfigReader r(e);
  EXPECT_EQ(r.get_string("host", "0.0.0.0"), "127.0.0.1");
  EXPECT_EQ(r.get_int("port", 49134, 1, 65535), 49199);
  EXPECT_TRUE(r.get_bool("verbose", false));
  EXPECT_EQ(r.get_optional_string("middleware_function_id"), std::nullopt);
  EXPECT_EQ(r.get_int("timeout", 7, 0, 10), 7);
  EXPECT_EQ(r.get_string("absent", "d"), "d");
  YAML::Node rbac = r.get_node("rbac");
  EXPECT_TRUE(rbac.IsMap());
  EXPECT_TRUE(r.get_node("nothing").IsNull());
  // -0x10 is not a YAML 1.2 integer (no sign on hex) and big was read, so no unknown-key error.
  EXPECT_NE(error_of([&] { r.get_int("big", 0, INT64_MIN, INT64_MAX); }), "");
  r.finish();
}

TEST(WorkerConfigReader, UnknownKeyReportedWithLineAndKnownKeys) {
  const WorkerEntry e = entry_from(
      "workers:\n"
      "  - name: iii-worker-manager\n"
      "    config:\n"
      "      port: 1\n"
      "      prot: 2\n");
  WorkerConfigReader r(e);
  r.get_int("port", 49134, 1, 65535);
  r.get_string("host", "0.0.0.0");
  EXPECT_EQ(error_of([&] { r.finish(); }),
            "w.yaml:5: worker 'iii-worker-manager': unknown key 'prot' (known keys: host, port)");
}

TEST(WorkerConfigReader, TypeErrorsCarryKeyLine) {
  // The second entry, so the error names the instance (iii-http#1).
  const EngineConfig c = parse_config(
      "workers:\n"
      "  - name: iii-http\n"
      "  - name: iii-http\n"
      "    config:\n"
      "      a: abc\n"
      "      b: 1.5\n"
      "      c: \"80\"\n"
      "      d: 70000\n"
      "      e: maybe\n"
      "      f: [x]\n"
      "      g: 99999999999999999999\n"
      "      h: 010\n"
      "      i: 0x1f\n",
      "w.yaml");
  const WorkerEntry& second = c.workers[1];
  ASSERT_EQ(second.instance_name, "iii-http#1");
  WorkerConfigReader r(second);
  EXPECT_EQ(error_of([&] { r.get_int("a", 0, 0, 100); }),
            "w.yaml:5: worker 'iii-http#1': key 'a' must be an integer");
  EXPECT_EQ(error_of([&] { r.get_int("b", 0, 0, 100); }),
            "w.yaml:6: worker 'iii-http#1': key 'b' must be an integer");
  EXPECT_EQ(error_of([&] { r.get_int("c", 0, 0, 100); }),
            "w.yaml:7: worker 'iii-http#1': key 'c' must be an integer");
  EXPECT_EQ(error_of([&] { r.get_int("d", 0, 1, 65535); }),
            "w.yaml:8: worker 'iii-http#1': key 'd' must be between 1 and 65535 (got 70000)");
  EXPECT_EQ(error_of([&] { r.get_bool("e", false); }),
            "w.yaml:9: worker 'iii-http#1': key 'e' must be a boolean (true or false)");
  EXPECT_EQ(error_of([&] { r.get_string("f", ""); }),
            "w.yaml:10: worker 'iii-http#1': key 'f' must be a string");
  EXPECT_NE(error_of([&] { r.get_int("g", 0, INT64_MIN, INT64_MAX); }).find("w.yaml:11:"),
            std::string::npos);
  EXPECT_EQ(r.get_int("h", 0, 0, 100), 10);  // YAML 1.2: leading zero is still decimal
  EXPECT_EQ(r.get_int("i", 0, 0, 100), 31);
  EXPECT_EQ(error_of([&] { r.fail("missing", "custom"); }),
            "w.yaml:3: worker 'iii-http#1': custom");
}

TEST(WorkerConfigReader, FailAtUsesNodeLine) {
  const WorkerEntry e = entry_from(
      "workers:\n"
      "  - name: iii-worker-manager\n"
      "    config:\n"
      "      rbac:\n"
      "        expose_functions:\n"
      "          - match(\"a*\")\n"
      "          - 42\n");
  WorkerConfigReader r(e);
  YAML::Node items = r.get_node("rbac")["expose_functions"];
  EXPECT_EQ(error_of([&] { r.fail_at(items[1], "bad filter"); }),
            "w.yaml:7: worker 'iii-worker-manager': bad filter");
}

TEST(WorkerConfigReader, EmptyConfigFinishesCleanly) {
  const EngineConfig c = default_config();
  WorkerConfigReader r(c.workers[0]);
  EXPECT_EQ(r.get_int("port", 49134, 1, 65535), 49134);
  r.finish();
}

}  // namespace
}  // namespace iii::config
