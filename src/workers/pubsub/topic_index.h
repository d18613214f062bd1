// The local pub/sub adapter's subscription index: topic -> subscriptions in binding order, and
// trigger id -> topic, so that a publish costs O(subscribers of the topic) and removing one
// subscription removes only that one (the original dropped every subscription of the topic).
#pragma once

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

namespace iii::workers::pubsub {

class TopicIndex {
 public:
  // False when `trigger_id` is already subscribed (to any topic).
  bool add(const std::string& topic, const std::string& trigger_id,
           const std::string& function_id) {
    if (!topic_of_.emplace(trigger_id, topic).second) return false;
    by_topic_[topic].push_back({trigger_id, function_id});
    return true;
  }

  void remove(const std::string& trigger_id) {
    auto t = topic_of_.find(trigger_id);
    if (t == topic_of_.end()) return;
    auto subs = by_topic_.find(t->second);
    if (subs != by_topic_.end()) {
      std::erase_if(subs->second, [&](const Sub& s) { return s.trigger_id == trigger_id; });
      if (subs->second.empty()) by_topic_.erase(subs);
    }
    topic_of_.erase(t);
  }

  // The functions subscribed to `topic`, one entry per subscription, in binding order.
  std::vector<std::string> functions_of(const std::string& topic) const {
    std::vector<std::string> out;
    auto it = by_topic_.find(topic);
    if (it == by_topic_.end()) return out;
    out.reserve(it->second.size());
    for (const auto& s : it->second) out.push_back(s.function_id);
    return out;
  }

  // The topic `trigger_id` is subscribed to, or null.
  const std::string* topic_of(const std::string& trigger_id) const {
    auto it = topic_of_.find(trigger_id);
    return it == topic_of_.end() ? nullptr : &it->second;
  }
  bool has_topic(const std::string& topic) const { return by_topic_.count(topic) > 0; }

  size_t topic_count() const { return by_topic_.size(); }
  size_t subscription_count() const { return topic_of_.size(); }

 private:
  struct Sub {
    std::string trigger_id;
    std::string function_id;
  };
  std::unordered_map<std::string, std::vector<Sub>> by_topic_;
  std::unordered_map<std::string, std::string> topic_of_;
};

}  // namespace iii::workers::pubsub
