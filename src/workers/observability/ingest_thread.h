// The thread that parses telemetry frames, so the engine thread only copies a frame into a
// bounded queue: parsing a large OTLP batch never delays routing. Parsed batches are handed
// back to the engine thread through `post`.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "workers/observability/otlp_ingest.h"

namespace iii::observability {

class IngestThread {
 public:
  // Runs a closure on the engine thread (asio::post onto its io_context).
  using Post = std::function<void(std::function<void()>)>;
  // Receives each parsed frame on the engine thread.
  using Deliver = std::function<void(IngestResult&&)>;

  IngestThread(Post post, Deliver deliver, size_t max_queue_bytes, IngestLimits limits = {});
  ~IngestThread();  // stop()
  IngestThread(const IngestThread&) = delete;
  IngestThread& operator=(const IngestThread&) = delete;

  // Engine thread: queues a copy of the frame; false (frame dropped) when the queue already
  // holds max_queue_bytes.
  bool push(std::string_view frame);
  // Stops taking frames and joins the thread; frames still queued are dropped.
  void stop();

  uint64_t frames_parsed() const;
  uint64_t queued_bytes() const;

 private:
  void run();

  Post post_;
  Deliver deliver_;
  const size_t max_queue_bytes_;
  const IngestLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  uint64_t parsed_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace iii::observability
