#include "storage/adapter_config.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "storage/redis/redis_client.h"
#include "storage/redis/redis_store.h"

namespace iii::storage {

StoreOptions read_adapter_config(config::WorkerConfigReader& r) {
  StoreOptions opts;
  const config::AdapterChoice choice =
      config::read_adapter_choice(r, r.get_node("adapter"), {"kv", "redis"}, {"bridge"});
  const YAML::Node& cfg = choice.config;
  if (choice.name == "redis") {
    opts.method = StoreOptions::Method::kRedis;
    if (cfg.IsNull()) return opts;
    for (const auto& kv : cfg) {
      const auto key = kv.first.as<std::string>();
      if (key == "redis_url") {
        opts.redis_url = kv.second.as<std::string>("");
        try {
          redis::RedisUrl::parse(opts.redis_url);
        } catch (const std::invalid_argument& e) {
          r.fail_at(kv.second, std::string("adapter.config.redis_url: ") + e.what());
        }
      } else {
        r.fail_at(kv.first, "adapter.config: unknown key '" + key + "' (known keys: redis_url)");
      }
    }
    return opts;
  }
  if (cfg.IsNull()) return opts;
  for (const auto& kv : cfg) {
    const auto key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "store_method") {
      const auto m = v.as<std::string>("");
      if (m == "in_memory")
        opts.method = StoreOptions::Method::kInMemory;
      else if (m == "file_based")
        opts.method = StoreOptions::Method::kFileBased;
      else
        r.fail_at(v,
                  "adapter.config.store_method must be in_memory or file_based (got '" + m + "')");
    } else if (key == "file_path") {
      opts.file_path = v.as<std::string>("");
      if (opts.file_path.empty())
        r.fail_at(v, "adapter.config.file_path must be a non-empty string");
    } else if (key == "fsync") {
      if (!v.IsScalar() || (v.Scalar() != "true" && v.Scalar() != "false"))
        r.fail_at(v, "adapter.config.fsync must be true or false");
      opts.fsync = v.Scalar() == "true";
    } else if (key == "cache_mb") {
      try {
        opts.cache_mb = v.as<int64_t>();
      } catch (const YAML::Exception&) {
        r.fail_at(v, "adapter.config.cache_mb must be an integer");
      }
      if (opts.cache_mb < 1 || opts.cache_mb > 65536)
        r.fail_at(v, "adapter.config.cache_mb must be between 1 and 65536");
    } else if (key == "save_interval_ms" || key == "channel_size") {
      // Accepted for compatibility: writes are durable when acknowledged, so there is no
      // save interval, and fan-out is not a lossy broadcast channel.
    } else {
      r.fail_at(kv.first, "adapter.config: unknown key '" + key +
                              "' (known keys: cache_mb, channel_size, file_path, fsync, "
                              "save_interval_ms, store_method)");
    }
  }
  return opts;
}

std::unique_ptr<KvStore> open_store_for(const config::WorkerEntry& entry, const StoreOptions& opts,
                                        boost::asio::io_context& io) {
  if (opts.method == StoreOptions::Method::kRedis)
    return redis::make_redis_store(io, opts.redis_url, entry.instance_name);
  try {
    return make_store(opts,
                      [&io](std::function<void()> fn) { boost::asio::post(io, std::move(fn)); });
  } catch (const std::exception& e) {
    throw config::ConfigError(
        entry.source + ":" + std::to_string(entry.line) + ": worker '" + entry.instance_name +
        "': cannot open the file_based store (file_path '" + opts.file_path + "'): " + e.what());
  }
}

}  // namespace iii::storage
