// The `redis` adapter of iii-state and iii-stream: each index is a Redis HASH named after it
// ("state:<scope>", "stream:<name>:<group>"), field = key, value = the item's compact JSON
// text, as the original engine lays them out (modules.md §1.6, §3.3), so both can share a Redis.
#pragma once

#include <memory>
#include <string>

#include "storage/kv_store.h"

namespace boost::asio {
class io_context;
}

namespace iii::storage::redis {

// Starts connecting at once (calls wait for the first attempt, then fail fast while Redis is
// unreachable). Throws std::invalid_argument for a bad URL. `name` prefixes log lines.
std::unique_ptr<KvStore> make_redis_store(boost::asio::io_context& io, const std::string& url,
                                          const std::string& name);

// `prefix` with Redis glob characters escaped, for SCAN MATCH <escaped>*.
std::string glob_escape(const std::string& prefix);

}  // namespace iii::storage::redis
