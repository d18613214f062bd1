// The `adapter:` block shared by iii-state and iii-stream:
//   adapter: { name: kv, config: { store_method: in_memory|file_based, file_path: ... } }
#pragma once

#include "config/config.h"

namespace boost::asio {
class io_context;
}
#include "storage/kv_store.h"

namespace iii::storage {

// Reads `adapter` (absent = kv in memory). Unknown adapter names and keys are config errors.
StoreOptions read_adapter_config(config::WorkerConfigReader& reader);

// Opens the store for a worker, completing on `io`. A store that cannot be opened is a
// ConfigError naming the worker entry and the path.
std::unique_ptr<KvStore> open_store_for(const config::WorkerEntry& entry, const StoreOptions& opts,
                                        boost::asio::io_context& io);

}  // namespace iii::storage
