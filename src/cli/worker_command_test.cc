#include "cli/worker_command.h"

#include <gtest/gtest.h>

#include "config/config.h"

namespace iii::cli {
namespace {

const char* kCommented =
    "# Project engine config\n"
    "workers:\n"
    "  # the worker listener\n"
    "  - name: iii-worker-manager\n"
    "    config:\n"
    "      port: ${III_PORT:49134}   # overridable\n"
    "\n"
    "  - name: iii-http\n"
    "    config:\n"
    "      port: 3111\n"
    "      # cors comes later\n"
    "\n"
    "  # state is kept on disk\n"
    "  - name: iii-state\n"
    "    config: { adapter: { name: kv } }\n"
    "\n"
    "# end of file\n";

TEST(WorkerCommand, AddAppendsTheDocumentedBlockAndKeepsEverythingElse) {
  const WorkerEdit e = add_worker(kCommented, "iii-stream@0.11.6-next.3", "config.yaml");
  ASSERT_TRUE(e.changed);
  const std::string expected =
      "# Project engine config\n"
      "workers:\n"
      "  # the worker listener\n"
      "  - name: iii-worker-manager\n"
      "    config:\n"
      "      port: ${III_PORT:49134}   # overridable\n"
      "\n"
      "  - name: iii-http\n"
      "    config:\n"
      "      port: 3111\n"
      "      # cors comes later\n"
      "\n"
      "  # state is kept on disk\n"
      "  - name: iii-state\n"
      "    config: { adapter: { name: kv } }\n"
      "\n"
      "  - name: iii-stream\n"
      "    config:\n"
      "      port: 3112\n"
      "      host: 127.0.0.1\n"
      "      adapter:\n"
      "        name: kv\n"
      "        config:\n"
      "          store_method: file_based\n"
      "          file_path: ./data/stream_store\n"
      "\n"
      "# end of file\n";
  EXPECT_EQ(e.text, expected);
  EXPECT_NE(e.message.find("added iii-stream"), std::string::npos) << e.message;
  // The result loads, with the new worker.
  const auto cfg = config::parse_config(
      config::expand_env(e.text, "config.yaml", [](const std::string&) { return std::nullopt; }),
      "config.yaml");
  EXPECT_EQ(cfg.workers[3].name, "iii-stream");
  EXPECT_EQ(cfg.workers[3].config["port"].as<int>(), 3112);
}

TEST(WorkerCommand, AddIsIdempotentAndAcceptsShortNames) {
  const WorkerEdit e = add_worker(kCommented, "http", "config.yaml");
  EXPECT_FALSE(e.changed);
  EXPECT_EQ(e.text, kCommented);
  EXPECT_NE(e.message.find("already in config.yaml (line 8)"), std::string::npos) << e.message;
  const WorkerEdit q = add_worker(kCommented, "queue", "config.yaml");
  EXPECT_NE(q.text.find("  - name: iii-queue\n    config:\n      queue_configs:\n"),
            std::string::npos)
      << q.text;
}

TEST(WorkerCommand, AddRefusesUnknownNamesAndVersions) {
  for (const char* bad : {"iii-nope", "left-pad", "iii-stream@0.12.0", "iii-stream@1.0.0",
                          "iii-stream@0.11.7", "iii-stream@banana", "iii-stream@0.11"}) {
    try {
      add_worker(kCommented, bad, "config.yaml");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const WorkerCommandError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("downloads nothing"), std::string::npos) << m;
    }
  }
  for (const char* ok : {"iii-stream@0.11.6", "iii-stream@0.11.0", "stream@v0.11.6",
                         "iii-stream@latest", "iii-stream@0.11.6-next.3"})
    EXPECT_TRUE(add_worker(kCommented, ok, "config.yaml").changed) << ok;
}

TEST(WorkerCommand, AddToEmptyOrMissingLists) {
  EXPECT_EQ(add_worker("", "iii-cron", "c.yaml").text,
            "workers:\n  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n");
  EXPECT_EQ(add_worker("# only a comment\n", "iii-engine-functions", "c.yaml").text,
            "# only a comment\n\nworkers:\n  - name: iii-engine-functions\n");
  EXPECT_EQ(add_worker("workers: []  # none yet\n", "iii-pubsub", "c.yaml").text,
            "workers:  # none yet\n  - name: iii-pubsub\n    config:\n      adapter:\n"
            "        name: local\n");
  EXPECT_EQ(add_worker("workers:\n# later\n", "telemetry", "c.yaml").text,
            "workers:\n  - name: iii-telemetry\n# later\n");
  // Legacy `modules:` lists get the entry in today's form, at their indentation.
  EXPECT_EQ(
      add_worker("modules:\n- class: modules::api::RestApiModule\n", "iii-pubsub", "c.yaml").text,
      "modules:\n- class: modules::api::RestApiModule\n- name: iii-pubsub\n  config:\n"
      "    adapter:\n      name: local\n");
  EXPECT_THROW(add_worker("workers: [{name: iii-http}]\n", "iii-cron", "c.yaml"),
               WorkerCommandError);
  EXPECT_THROW(add_worker("workers: [\n", "iii-cron", "c.yaml"), WorkerCommandError);
}

TEST(WorkerCommand, RemoveTakesOnlyTheEntry) {
  const WorkerEdit e = remove_worker(kCommented, "iii-http", "config.yaml");
  EXPECT_EQ(e.text,
            "# Project engine config\n"
            "workers:\n"
            "  # the worker listener\n"
            "  - name: iii-worker-manager\n"
            "    config:\n"
            "      port: ${III_PORT:49134}   # overridable\n"
            "\n"
            "  # state is kept on disk\n"
            "  - name: iii-state\n"
            "    config: { adapter: { name: kv } }\n"
            "\n"
            "# end of file\n");
  const WorkerEdit last = remove_worker(kCommented, "state", "config.yaml");
  EXPECT_NE(last.text.find("  # state is kept on disk\n\n# end of file\n"), std::string::npos)
      << last.text;
  EXPECT_EQ(last.text.find("iii-state"), std::string::npos);
  const WorkerEdit m = remove_worker(kCommented, "iii-worker-manager", "config.yaml");
  EXPECT_NE(m.message.find("mandatory"), std::string::npos);
  EXPECT_THROW(remove_worker(kCommented, "iii-cron", "config.yaml"), WorkerCommandError);
  EXPECT_THROW(remove_worker(kCommented, "iii-nope", "config.yaml"), WorkerCommandError);
}

TEST(WorkerCommand, RemoveOneOfSeveralInstances) {
  const std::string two =
      "workers:\n  - name: iii-worker-manager\n    config: {port: 1}\n"
      "  - name: iii-worker-manager\n    config: {port: 2}\n";
  EXPECT_THROW(remove_worker(two, "iii-worker-manager", "c.yaml"), WorkerCommandError);
  EXPECT_EQ(remove_worker(two, "iii-worker-manager#1", "c.yaml").text,
            "workers:\n  - name: iii-worker-manager\n    config: {port: 1}\n");
  EXPECT_EQ(remove_worker(two, "worker-manager#0", "c.yaml").text,
            "workers:\n  - name: iii-worker-manager\n    config: {port: 2}\n");
  EXPECT_THROW(remove_worker(two, "iii-worker-manager#2", "c.yaml"), WorkerCommandError);
}

TEST(WorkerCommand, ListNamesEntriesLinesAndTheRest) {
  const std::string out =
      list_workers(std::string(kCommented) + "modules:\n  - class: modules::stream::StreamModule\n",
                   "config.yaml");
  EXPECT_NE(out.find("iii-worker-manager    line 4"), std::string::npos) << out;
  EXPECT_NE(out.find("iii-http              line 8"), std::string::npos) << out;
  EXPECT_NE(out.find("iii-stream            line 19  (written as modules::stream::StreamModule)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("always running (mandatory): iii-engine-functions, iii-observability, "
                     "iii-telemetry"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("built in, not configured: "), std::string::npos) << out;
}

}  // namespace
}  // namespace iii::cli
