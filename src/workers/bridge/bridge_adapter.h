// The `bridge` adapter of iii-state and iii-stream: `adapter: {name: bridge, config:
// {bridge_url}}` serves the worker's functions from another engine (modules.md §1.6, §3.3).
#pragma once

#include <optional>
#include <string>

#include "config/config.h"

namespace iii::workers::bridge {

// When the worker's adapter is `bridge`, reads and checks its config and returns the URL
// (default ws://localhost:49134); nullopt for any other adapter, which the caller reads.
std::optional<std::string> read_bridge_adapter(config::WorkerConfigReader& r);

}  // namespace iii::workers::bridge
