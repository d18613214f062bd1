// Warnings for bad frames are rate-limited per connection (Engine::handle_decode_error).
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "engine/engine.h"

namespace iii::engine {
namespace {

class NullConnection : public Connection {
 public:
  void send(SharedFrame) override {}
  void close(uint16_t, std::string_view) override {}
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

size_t count_containing(const std::vector<std::string>& lines, const std::string& needle) {
  size_t n = 0;
  for (const auto& l : lines) n += l.find(needle) != std::string::npos;
  return n;
}

TEST(InvalidMessagesLog, TenThousandBadFramesFromOneConnectionGiveAHandfulOfLines) {
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
  logger->set_pattern("%l %v");
  logger->set_level(spdlog::level::info);
  spdlog::set_default_logger(logger);

  std::string bad_id, good_id;
  {
    Engine engine;
    const uint64_t bad = engine.connect(std::make_shared<NullConnection>(), {"127.0.0.1", "t"});
    const uint64_t good = engine.connect(std::make_shared<NullConnection>(), {"127.0.0.1", "t"});
    bad_id = engine.find_worker(bad)->id;
    good_id = engine.find_worker(good)->id;
    // Invalid JSON, unknown types and undecodable fields alike.
    const std::string frames[] = {"{not json", R"({"type":"no_such_type"})",
                                  R"({"type":"registerfunction","id":42})"};
    for (int i = 0; i < 10000; ++i) engine.on_frame(bad, frames[i % 3]);
    // Another connection is limited on its own: its first bad frame is still logged.
    engine.on_frame(good, "{not json");
    EXPECT_EQ(engine.stats().decode_errors, 10001u);
    engine.disconnect(bad);
    engine.disconnect(good);
  }
  spdlog::set_default_logger(previous);

  const auto lines = lines_of(out.str());
  const auto from_bad = count_containing(lines, "worker " + bad_id);
  // 5 at once, perhaps one more if the loop took over a second, and the summary at disconnect.
  EXPECT_GE(from_bad, 6u) << out.str();
  EXPECT_LE(from_bad, 7u) << out.str();
  EXPECT_EQ(count_containing(lines, "warning worker " + bad_id + ": invalid"), from_bad)
      << out.str();
  ASSERT_EQ(count_containing(lines, "more suppressed"), from_bad - 5) << out.str();
  // Every suppressed frame is accounted for: 10,000 = 5 + what the lines say was suppressed
  // + the ones those lines were about.
  uint64_t accounted = 5;
  for (const auto& l : lines) {
    if (l.find("worker " + bad_id) == std::string::npos) continue;
    const auto more = l.find(" more suppressed");
    if (more == std::string::npos) continue;
    const auto num_start = l.rfind(' ', more - 1) + 1;
    accounted += std::stoull(l.substr(num_start, more - num_start));
    if (l.find("before this one") != std::string::npos) ++accounted;  // a logged frame
  }
  EXPECT_EQ(accounted, 10000u) << out.str();
  EXPECT_NE(lines.back().find("worker " + bad_id + ": invalid messages: "), std::string::npos)
      << out.str();
  EXPECT_EQ(count_containing(lines, "worker " + good_id), 1u) << out.str();
}

}  // namespace
}  // namespace iii::engine
