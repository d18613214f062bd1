// Data channels (engine-core.md §5): a bounded, ordered queue of text/binary frames between one
// writer connection and one reader connection. The registry and the queue live here; the
// WebSocket relays that feed and drain them are in src/net.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace iii::engine {

// What the writer sent: a whole message, or one fragment of one. The relay forwards bytes as
// it reads them, without waiting for the rest of a message or copying them; `owner` keeps the
// bytes alive (a block of the relay's read buffer).
struct ChannelFrame {
  std::shared_ptr<const void> owner;
  const char* data = nullptr;
  size_t size = 0;
  bool binary = true;
  bool first = true;  // starts a message (else continues the one before)
  bool last = true;   // ends its message

  // A whole message holding its own bytes.
  static ChannelFrame message(std::string bytes, bool binary);
  std::string_view view() const { return {data, size}; }
};

class Channel {
 public:
  Channel(std::string id, std::string key, size_t capacity, int64_t created_ms)
      : id_(std::move(id)), key_(std::move(key)), capacity_(capacity), created_ms_(created_ms) {}

  const std::string& id() const { return id_; }
  const std::string& key() const { return key_; }
  size_t capacity() const { return capacity_; }
  int64_t created_ms() const { return created_ms_; }

  // Writer side. push() returns false when the buffer is full after this frame: the writer
  // must stop reading its socket until `on_space` is called. The reader is woken by publish(),
  // once for everything pushed since, so that it can send it all in one write.
  bool push(ChannelFrame f);
  void publish();
  bool full() const { return frames_.size() >= capacity_ || bytes_ >= kMaxBufferedBytes; }
  // No more frames will come; `how` tells the reader whether the data is complete.
  enum class WriterEnd { kFinished, kBrokenOff, kShutdown };
  void close_writer(WriterEnd how = WriterEnd::kFinished);
  bool writer_closed() const { return writer_closed_; }
  WriterEnd writer_end() const { return writer_end_; }

  // Reader side.
  bool empty() const { return frames_.empty(); }
  ChannelFrame pop();
  bool drained() const { return writer_closed_ && frames_.empty(); }
  // The reader is gone (it left, or the channel was ended): sets `reader_gone` and tells the
  // writer through `on_reader_gone`.
  void drop_reader();

  // Each side is taken once.
  bool writer_taken = false;
  bool reader_taken = false;
  bool reader_gone = false;  // the reader disconnected: the writer stops
  // Wake-ups installed by the relays (called on the engine thread).
  std::function<void()> on_data;   // frames (or the writer's close) are available to the reader
  std::function<void()> on_space;  // the buffer has room again for the writer
  std::function<void()> on_reader_gone;

  static constexpr size_t kMaxBufferedBytes = 16 * 1024 * 1024;

 private:
  std::string id_, key_;
  size_t capacity_;
  int64_t created_ms_;
  std::deque<ChannelFrame> frames_;
  size_t bytes_ = 0;
  bool writer_closed_ = false;
  WriterEnd writer_end_ = WriterEnd::kFinished;
};

struct ChannelRefs {
  std::string channel_id;
  std::string access_key;
};

class ChannelRegistry {
 public:
  static constexpr size_t kDefaultBuffer = 64;
  static constexpr size_t kMaxBuffer = 1024;
  static constexpr int64_t kUnclaimedTtlMs = 5 * 60 * 1000;

  // buffer_size is clamped to [1, 1024]; absent means 64.
  ChannelRefs create(std::optional<int64_t> buffer_size, int64_t now_ms);
  enum class Lookup { kOk, kNotFound, kWrongKey };
  Lookup find(const std::string& id, const std::string& key, std::shared_ptr<Channel>& out) const;
  void remove(const std::string& id) { channels_.erase(id); }
  // Removes channels older than the TTL where a side never connected (a connected side is told
  // to finish). Returns how many.
  size_t sweep(int64_t now_ms);
  // Ends every channel (engine shutdown): writers are stopped, readers are closed after what
  // was buffered.
  void close_all();
  size_t size() const { return channels_.size(); }

 private:
  std::unordered_map<std::string, std::shared_ptr<Channel>> channels_;
};

}  // namespace iii::engine
