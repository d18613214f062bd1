// Default implementations shared by the KvStore adapters.
#include "storage/kv_store.h"

#include "protocol/json_writer.h"

namespace iii::storage {

namespace json = boost::json;

std::string serialise_list(const std::vector<json::value>& values) {
  std::string out;
  size_t hint = 2 + values.size();
  for (const auto& v : values) hint += protocol::json_size_hint(v);
  out.reserve(hint);
  out += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    protocol::append_json(out, values[i]);
  }
  out += ']';
  return out;
}

void KvStore::list_raw(const std::string& index, RawListCallback cb) {
  list(index, [cb = std::move(cb)](Stored<std::vector<json::value>> r) {
    if (!r.ok()) return cb({nullptr, std::move(r.error)});
    cb({std::make_shared<const std::string>(serialise_list(r.value)), std::nullopt});
  });
}

}  // namespace iii::storage
