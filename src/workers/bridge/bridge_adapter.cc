#include "workers/bridge/bridge_adapter.h"

namespace iii::workers::bridge {

std::optional<std::string> read_bridge_adapter(config::WorkerConfigReader& r) {
  const YAML::Node adapter = r.get_node("adapter");
  if (!adapter || !adapter.IsMap()) return std::nullopt;
  const YAML::Node name = adapter["name"];
  if (!name || !name.IsScalar() || name.Scalar() != "bridge") return std::nullopt;
  const YAML::Node cfg = config::read_adapter_block(r, adapter, "bridge");
  std::string url = "ws://localhost:49134";
  if (cfg && cfg.IsMap())
    for (const auto& kv : cfg) {
      const auto key = kv.first.as<std::string>("");
      if (key != "bridge_url")
        r.fail_at(kv.first, "adapter.config: unknown key '" + key + "' (known keys: bridge_url)");
      if (!kv.second.IsScalar() || (kv.second.Scalar().rfind("ws://", 0) != 0 &&
                                    kv.second.Scalar().rfind("http://", 0) != 0))
        r.fail_at(kv.second, "adapter.config.bridge_url must be a ws:// URL");
      url = kv.second.Scalar();
    }
  return url;
}

}  // namespace iii::workers::bridge
