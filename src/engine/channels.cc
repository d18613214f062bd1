#include "engine/channels.h"

#include <algorithm>

#include "protocol/uuid.h"

namespace iii::engine {

ChannelFrame ChannelFrame::message(std::string bytes, bool binary) {
  auto held = std::make_shared<const std::string>(std::move(bytes));
  ChannelFrame f;
  f.data = held->data();
  f.size = held->size();
  f.owner = std::move(held);
  f.binary = binary;
  return f;
}

bool Channel::push(ChannelFrame f) {
  bytes_ += f.size;
  frames_.push_back(std::move(f));
  return !full();
}

void Channel::publish() {
  if (!frames_.empty() && on_data) on_data();
}

void Channel::drop_reader() {
  reader_gone = true;
  // A copy: the writer clears the callback while it runs.
  if (auto stop_writer = on_reader_gone) stop_writer();
}

void Channel::close_writer(WriterEnd how) {
  if (writer_closed_) return;
  writer_closed_ = true;
  writer_end_ = how;
  if (on_data) on_data();
}

ChannelFrame Channel::pop() {
  const bool was_full = full();
  ChannelFrame f = std::move(frames_.front());
  frames_.pop_front();
  bytes_ -= f.size;
  if (was_full && !full() && on_space) on_space();
  return f;
}

ChannelRefs ChannelRegistry::create(std::optional<int64_t> buffer_size, int64_t now_ms) {
  const int64_t requested = buffer_size.value_or(static_cast<int64_t>(kDefaultBuffer));
  const size_t capacity =
      static_cast<size_t>(std::clamp<int64_t>(requested, 1, static_cast<int64_t>(kMaxBuffer)));
  std::string id;
  do id = protocol::Uuid::random_v4().str();
  while (channels_.count(id));
  std::string key = protocol::Uuid::random_v4().str();
  channels_.emplace(id, std::make_shared<Channel>(id, key, capacity, now_ms));
  return ChannelRefs{id, key};
}

ChannelRegistry::Lookup ChannelRegistry::find(const std::string& id, const std::string& key,
                                              std::shared_ptr<Channel>& out) const {
  auto it = channels_.find(id);
  if (it == channels_.end()) return Lookup::kNotFound;
  if (!protocol::secrets_equal(it->second->key(), key)) return Lookup::kWrongKey;
  out = it->second;
  return Lookup::kOk;
}

namespace {
void end_channel(Channel& ch, Channel::WriterEnd how) {
  ch.close_writer(how);  // first: the writer, told to stop below, would say it broke off
  ch.drop_reader();
}
}  // namespace

void ChannelRegistry::close_all() {
  auto all = std::move(channels_);
  channels_.clear();
  for (auto& [id, ch] : all) end_channel(*ch, Channel::WriterEnd::kShutdown);
}

size_t ChannelRegistry::sweep(int64_t now_ms) {
  size_t removed = 0;
  for (auto it = channels_.begin(); it != channels_.end();) {
    const Channel& c = *it->second;
    const bool unclaimed = !c.writer_taken || !c.reader_taken;
    if (unclaimed && now_ms - c.created_ms() >= kUnclaimedTtlMs) {
      auto ch = it->second;
      it = channels_.erase(it);
      end_channel(*ch, Channel::WriterEnd::kBrokenOff);  // a waiting writer stops, a reader ends
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

}  // namespace iii::engine
