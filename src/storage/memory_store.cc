// In-memory adapter: completes every call synchronously on the engine thread.
#include <algorithm>
#include <map>
#include <unordered_map>

#include "protocol/json_writer.h"
#include "storage/kv_store.h"

namespace iii::storage {

namespace json = boost::json;
namespace {

class MemoryStore : public KvStore {
 public:
  void get(const std::string& index, const std::string& key, GetCallback cb) override {
    const Item* item = find(index, key);
    cb({item ? std::optional<json::value>(item->value) : std::nullopt, std::nullopt});
  }

  void set(const std::string& index, const std::string& key, json::value value,
           SetCallback cb) override {
    SetResult r;
    Item& item = slot(index, key, r.old_value);
    item.value = value;
    r.new_value = std::move(value);
    cb({std::move(r), std::nullopt});
  }

  void del(const std::string& index, const std::string& key, DeleteCallback cb) override {
    auto idx = indexes_.find(index);
    if (idx == indexes_.end()) return cb({});
    auto it = idx->second.by_key.find(key);
    if (it == idx->second.by_key.end()) return cb({});
    std::optional<json::value> old = std::move(it->second.value);
    idx->second.by_seq.erase(it->second.seq);
    idx->second.by_key.erase(it);
    if (idx->second.by_key.empty()) indexes_.erase(idx);  // an empty group disappears
    cb({std::move(old), std::nullopt});
  }

  void update(const std::string& index, const std::string& key, std::vector<UpdateOp> ops,
              UpdateCallback cb) override {
    const Item* existing = find(index, key);
    UpdateResult r = apply_update_ops(
        existing ? std::optional<json::value>(existing->value) : std::nullopt, ops);
    std::optional<json::value> ignored;
    slot(index, key, ignored).value = r.new_value;
    cb({std::move(r), std::nullopt});
  }

  void list(const std::string& index, ListCallback cb) override {
    std::vector<json::value> out;
    if (auto idx = indexes_.find(index); idx != indexes_.end()) {
      out.reserve(idx->second.by_seq.size());
      for (const auto& [seq, key] : idx->second.by_seq)
        out.push_back(idx->second.by_key.at(key).value);
    }
    cb({std::move(out), std::nullopt});
  }

  // Serialises the stored values in place, without copying them into a list first.
  void list_raw(const std::string& index, RawListCallback cb) override {
    std::string out = "[";
    if (auto idx = indexes_.find(index); idx != indexes_.end()) {
      bool first = true;
      for (const auto& [seq, key] : idx->second.by_seq) {
        if (!first) out += ',';
        first = false;
        protocol::append_json(out, idx->second.by_key.at(key).value);
      }
    }
    out += ']';
    cb({std::make_shared<const std::string>(std::move(out)), std::nullopt});
  }

  void list_indexes(const std::string& prefix, IndexesCallback cb) override {
    std::vector<std::string> out;
    for (const auto& [name, idx] : indexes_)
      if (name.compare(0, prefix.size(), prefix) == 0) out.push_back(name);
    std::sort(out.begin(), out.end());
    cb({std::move(out), std::nullopt});
  }

 private:
  struct Item {
    json::value value;
    uint64_t seq = 0;
  };
  struct Index {
    std::unordered_map<std::string, Item> by_key;
    std::map<uint64_t, std::string> by_seq;  // insertion order
  };

  const Item* find(const std::string& index, const std::string& key) const {
    auto idx = indexes_.find(index);
    if (idx == indexes_.end()) return nullptr;
    auto it = idx->second.by_key.find(key);
    return it == idx->second.by_key.end() ? nullptr : &it->second;
  }

  Item& slot(const std::string& index, const std::string& key, std::optional<json::value>& old) {
    Index& idx = indexes_[index];
    auto [it, inserted] = idx.by_key.try_emplace(key);
    if (inserted) {
      it->second.seq = ++seq_;
      idx.by_seq.emplace(it->second.seq, key);
    } else {
      old = it->second.value;
    }
    return it->second;
  }

  std::unordered_map<std::string, Index> indexes_;
  uint64_t seq_ = 0;
};

}  // namespace

std::unique_ptr<KvStore> make_memory_store(Poster) { return std::make_unique<MemoryStore>(); }

std::unique_ptr<KvStore> make_store(const StoreOptions& opts, Poster post) {
  if (opts.method == StoreOptions::Method::kFileBased)
    return make_sqlite_store(opts, std::move(post));
  return make_memory_store(std::move(post));
}

}  // namespace iii::storage
