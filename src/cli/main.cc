// `iii`: runs the engine, or `iii trigger` to invoke one function from the shell.
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/trigger_command.h"
#include "cli/worker_command.h"
#include "common/logging.h"
#include "config/config.h"
#include "engine/builtin_worker.h"
#include "engine/engine.h"

namespace {

namespace asio = boost::asio;

struct RunOptions {
  std::string config_path;
  bool use_default_config = false;
  std::string log_level;
  std::string log_format;
};

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

iii::config::EngineConfig load_config(const RunOptions& o) {
  if (!o.config_path.empty()) return iii::config::load_config_file(o.config_path);
  if (!o.use_default_config && std::filesystem::exists("config.yaml"))
    return iii::config::load_config_file("config.yaml");
  return iii::config::default_config();
}

// Waits (bounded) for connections to finish their close handshakes, then stops the loop.
void drain_then_stop(asio::io_context& io, iii::engine::Engine& engine,
                     std::shared_ptr<asio::steady_timer> timer, int attempts_left) {
  if (engine.worker_count() == 0 || attempts_left == 0) {
    io.stop();
    return;
  }
  timer->expires_after(std::chrono::milliseconds(10));
  timer->async_wait([&io, &engine, timer, attempts_left](boost::system::error_code) {
    drain_then_stop(io, engine, timer, attempts_left - 1);
  });
}

// Messages of up to 64 MiB come and go. glibc serves each large one with a fresh mmap and gives
// it back on free, so every such message paid page faults on new memory (14 % of the engine's
// time for 1 MiB HTTP bodies). Keep blocks under 4 MiB in the heap and up to 32 MiB of freed
// heap for reuse: 1 MiB round trips need ~35 % less engine CPU (docs/performance.md, iii-http).
void tune_malloc() {
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

int run_engine(const RunOptions& opts) {
  tune_malloc();
  iii::config::EngineConfig cfg;
  try {
    // Checked here so that a bad value is blamed on the option, not on the config file.
    if (!opts.log_level.empty()) iii::logging::parse_level(opts.log_level);
    if (!opts.log_format.empty()) iii::logging::parse_format(opts.log_format);
  } catch (const std::exception& e) {
    std::cerr << "Error: " << (opts.log_level.empty() ? "--log-format" : "--log-level") << ": "
              << e.what() << "\n";
    return 2;
  }
  try {
    cfg = load_config(opts);
    for (auto& w : cfg.workers) {
      if (w.name != "iii-observability") continue;
      if (!opts.log_level.empty()) w.config["level"] = opts.log_level;
      if (!opts.log_format.empty()) w.config["format"] = opts.log_format;
    }
  } catch (const std::exception& e) {
    std::cerr << "Error: " << e.what() << "\n";
    return 2;
  }

  asio::io_context io(1);
  iii::engine::Engine engine;
  engine.set_deferrer([&io](std::function<void()> fn) { asio::post(io, std::move(fn)); });
  // One timer for every invocation deadline: re-armed only when an earlier deadline appears.
  asio::steady_timer deadline_timer(io);
  engine.set_timer([&engine, &deadline_timer](iii::engine::Engine::Clock::time_point when) {
    deadline_timer.expires_at(when);
    deadline_timer.async_wait([&engine](boost::system::error_code ec) {
      if (!ec) engine.expire_due(iii::engine::Engine::Clock::now());
    });
  });
  iii::engine::Runtime rt{io, engine};
  std::vector<std::unique_ptr<iii::engine::BuiltinWorker>> workers;
  try {
    workers = iii::engine::create_workers(cfg, rt);
  } catch (const std::exception& e) {
    std::cerr << "Error: " << e.what() << "\n";
    return 2;
  }
  raise_fd_limit();
  spdlog::info("iii engine {} starting with {} ({} workers)", III_VERSION, cfg.source,
               cfg.workers.size());
  try {
    for (auto& w : workers) w->start();
  } catch (const std::exception& e) {
    spdlog::error("startup failed: {}", e.what());
    return 1;
  }

  asio::signal_set signals(io, SIGINT, SIGTERM);
  // Graceful shutdown: first every worker stops taking outside work and finishes what it took
  // (HTTP requests in flight; bounded by a grace period) while the engine still routes; then
  // new calls are refused, stores flush and post their acknowledgements, what is still pending
  // is answered, and the connections close.
  auto finish = [&io, &engine, &workers] {
    engine.stop_accepting();
    for (auto& w : workers) w->stop();
    asio::post(io, [&io, &engine] {
      engine.shutdown();
      drain_then_stop(io, engine, std::make_shared<asio::steady_timer>(io), 200);
    });
  };
  auto grace = std::make_shared<asio::steady_timer>(io);
  signals.async_wait([&, grace](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("received signal {}; shutting down", sig);
    auto remaining = std::make_shared<size_t>(workers.size() + 1);
    auto finished = std::make_shared<bool>(false);
    auto one_done = [remaining, finished, finish, grace] {
      if (--*remaining > 0 || *finished) return;
      *finished = true;
      grace->cancel();
      finish();
    };
    grace->expires_after(std::chrono::seconds(5));
    grace->async_wait([finished, finish](boost::system::error_code e) {
      if (e || *finished) return;
      spdlog::warn("shutdown: requests still in flight after 5 s; stopping anyway");
      *finished = true;
      finish();
    });
    for (auto& w : workers) w->drain(one_done);
    one_done();
  });
  spdlog::info("engine ready");
  io.run();
  spdlog::info("engine stopped");
  return 0;
}

// Writes out what is still queued for the log and returns `code`. When stdout does not drain
// (a reader that stopped reading), the process leaves at once with `code`: a normal exit would
// join the logging thread, which may be stuck in write() for good.
int finish(int code) {
  if (!iii::logging::shutdown()) {
    // write(2): std::cerr is tied to std::cout and would flush the blocked stdout.
    const std::string msg = "iii: log output blocked at exit; " +
                            std::to_string(iii::logging::dropped_messages()) +
                            " log messages were dropped and the ones still queued are lost\n";
    [[maybe_unused]] const auto n = ::write(STDERR_FILENO, msg.data(), msg.size());
    std::_Exit(code);
  }
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  iii::logging::init("info", "text");
  CLI::App app{"iii engine: routes function invocations between workers"};
  app.set_version_flag("-v,--version", III_VERSION);
  RunOptions run;
  auto* config_opt = app.add_option("-c,--config", run.config_path,
                                    "Config file (default: ./config.yaml if present)");
  app.add_flag("--use-default-config", run.use_default_config,
               "Ignore ./config.yaml and use the embedded default workers")
      ->excludes(config_opt);
  app.add_option("--log-level", run.log_level, "trace|debug|info|warn|error (overrides config)");
  app.add_option("--log-format", run.log_format, "text|json (overrides config)");
  bool no_update_check = false;
  app.add_flag("--no-update-check", no_update_check, "Accepted for compatibility; no effect");

  iii::cli::TriggerOptions trig;
  auto* trigger = app.add_subcommand("trigger", "Invoke a function and print its result");
  trigger->add_option("--function-id", trig.function_id, "Function id")->required();
  trigger->add_option("--payload", trig.payload, "JSON payload (default {})");
  trigger->add_option("--address", trig.address, "Engine host, or a ws:// URL");
  trigger->add_option("--port", trig.port, "Engine port (default 49134)");
  trigger->add_option("--timeout-ms", trig.timeout_ms, "Timeout in milliseconds (default 30000)");

  // `iii worker add|remove|list`: the built-in workers of a project's config.yaml.
  iii::cli::WorkerOptions wopts;
  auto* worker = app.add_subcommand("worker", "Manage the built-in workers of config.yaml");
  worker->require_subcommand(1);
  worker->add_option("-c,--config", wopts.config_path, "Config file (default: config.yaml)");
  auto* wadd = worker->add_subcommand(
      "add", "Add a built-in worker with its documented default config (nothing is downloaded)");
  wadd->add_option("name", wopts.name, "Worker name, optionally @version (e.g. iii-stream@0.11.6)")
      ->required();
  auto* wremove = worker->add_subcommand("remove", "Remove a worker's entry from config.yaml");
  wremove->add_option("name", wopts.name, "Worker name (name#N for one of several entries)")
      ->required();
  auto* wlist = worker->add_subcommand("list", "List the workers configured in config.yaml");
  for (auto* sub : {wadd, wremove, wlist})
    sub->add_option("-c,--config", wopts.config_path, "Config file (default: config.yaml)");

  CLI11_PARSE(app, argc, argv);
  if (trigger->parsed()) return finish(iii::cli::run_trigger(trig));
  if (worker->parsed()) {
    wopts.action = wadd->parsed() ? "add" : wremove->parsed() ? "remove" : "list";
    if (!run.config_path.empty()) wopts.config_path = run.config_path;
    return finish(iii::cli::run_worker_command(wopts));
  }
  return finish(run_engine(run));
}
