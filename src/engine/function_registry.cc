#include "engine/function_registry.h"

#include <algorithm>

namespace iii::engine {

namespace json = boost::json;

json::object FunctionInfo::to_json() const {
  json::object o;
  o["function_id"] = id;
  o["description"] = description ? json::value(*description) : json::value(nullptr);
  o["request_format"] = request_format ? *request_format : json::value(nullptr);
  o["response_format"] = response_format ? *response_format : json::value(nullptr);
  o["metadata"] = metadata ? *metadata : json::value(nullptr);
  return o;
}

FunctionRegistry::AddResult FunctionRegistry::add(Registrant r) {
  auto [it, inserted] = by_id_.try_emplace(r.info.id);
  auto& regs = it->second;
  if (inserted) ++generation_;
  if (!regs.empty() && regs.front().worker == 0 && r.worker != 0) return AddResult::kRefusedBuiltin;
  auto same = std::find_if(regs.begin(), regs.end(),
                           [&](const Registrant& x) { return x.worker == r.worker; });
  AddResult result = AddResult::kAdded;
  if (same != regs.end()) {
    regs.erase(same);
    result = AddResult::kUpdated;
  }
  regs.push_back(std::move(r));
  return result;
}

bool FunctionRegistry::remove(const std::string& id, uint64_t worker) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  auto& regs = it->second;
  auto pos = std::find_if(regs.begin(), regs.end(),
                          [&](const Registrant& x) { return x.worker == worker; });
  if (pos == regs.end()) return false;
  regs.erase(pos);
  if (!regs.empty()) return false;
  by_id_.erase(it);
  ++generation_;
  return true;
}

bool FunctionRegistry::remove_builtin(const std::string& id) { return remove(id, 0); }

bool FunctionRegistry::reassign(const std::string& id, uint64_t from, uint64_t to) {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || from == 0 || to == 0) return false;
  auto& regs = it->second;
  auto pos =
      std::find_if(regs.begin(), regs.end(), [&](const Registrant& x) { return x.worker == from; });
  if (pos == regs.end()) return false;
  const bool to_has_one =
      std::any_of(regs.begin(), regs.end(), [&](const Registrant& x) { return x.worker == to; });
  if (to_has_one)
    regs.erase(pos);
  else
    pos->worker = to;
  return true;
}

const Registrant* FunctionRegistry::serving(const std::string& id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second.empty()) return nullptr;
  return &it->second.back();
}

size_t FunctionRegistry::registrant_count(const std::string& id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? 0 : it->second.size();
}

void FunctionRegistry::for_each_sorted(const std::function<void(const Registrant&)>& fn) const {
  std::vector<const Registrant*> all;
  all.reserve(by_id_.size());
  for (const auto& [id, regs] : by_id_)
    if (!regs.empty()) all.push_back(&regs.back());
  std::sort(all.begin(), all.end(),
            [](const Registrant* a, const Registrant* b) { return a->info.id < b->info.id; });
  for (const auto* r : all) fn(*r);
}

}  // namespace iii::engine
