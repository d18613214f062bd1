// The `adapter:` block shared by iii-state and iii-stream:
//   adapter: { name: kv, config: { store_method: in_memory|file_based, file_path: ... } }
#pragma once

#include "config/config.h"
#include "storage/kv_store.h"

namespace iii::storage {

// Reads `adapter` (absent = kv in memory). Unknown adapter names and keys are config errors.
StoreOptions read_adapter_config(config::WorkerConfigReader& reader);

}  // namespace iii::storage
