#include "workers/observability/ingest_thread.h"

#include <memory>

namespace iii::observability {

IngestThread::IngestThread(Post post, Deliver deliver, size_t max_queue_bytes, IngestLimits limits)
    : post_(std::move(post)),
      deliver_(std::move(deliver)),
      max_queue_bytes_(max_queue_bytes),
      limits_(limits),
      thread_([this] { run(); }) {}

IngestThread::~IngestThread() { stop(); }

bool IngestThread::push(std::string_view frame) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queued_bytes_ + frame.size() > max_queue_bytes_) return false;
    queued_bytes_ += frame.size();
    queue_.emplace_back(frame);
  }
  cv_.notify_one();
  return true;
}

void IngestThread::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    queue_.clear();
    queued_bytes_ = 0;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

uint64_t IngestThread::frames_parsed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parsed_;
}

uint64_t IngestThread::queued_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_bytes_;
}

void IngestThread::run() {
  for (;;) {
    std::string frame;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      frame = std::move(queue_.front());
      queue_.pop_front();
    }
    auto result = std::make_shared<IngestResult>(parse_frame(frame, limits_));
    {
      std::lock_guard<std::mutex> lock(mu_);
      queued_bytes_ -= frame.size();
      ++parsed_;
    }
    post_([deliver = deliver_, result] { deliver(std::move(*result)); });
  }
}

}  // namespace iii::observability
