#include "engine/channels.h"

#include <gtest/gtest.h>

namespace iii::engine {
namespace {

TEST(Channels, CreateClampsBufferSizeAndSharesIdAndKey) {
  ChannelRegistry reg;
  std::shared_ptr<Channel> ch;
  auto refs = reg.create(std::nullopt, 0);
  ASSERT_EQ(reg.find(refs.channel_id, refs.access_key, ch), ChannelRegistry::Lookup::kOk);
  EXPECT_EQ(ch->capacity(), 64u);
  auto big = reg.create(1'000'000, 0);
  reg.find(big.channel_id, big.access_key, ch);
  EXPECT_EQ(ch->capacity(), 1024u);
  auto tiny = reg.create(-5, 0);
  reg.find(tiny.channel_id, tiny.access_key, ch);
  EXPECT_EQ(ch->capacity(), 1u);
}

TEST(Channels, LookupDistinguishesWrongKeyFromUnknownId) {
  ChannelRegistry reg;
  std::shared_ptr<Channel> ch;
  auto refs = reg.create(8, 0);
  EXPECT_EQ(reg.find(refs.channel_id, "nope", ch), ChannelRegistry::Lookup::kWrongKey);
  EXPECT_EQ(reg.find("missing", refs.access_key, ch), ChannelRegistry::Lookup::kNotFound);
}

TEST(Channels, BoundedQueueSignalsBackpressureAndOrder) {
  Channel ch("id", "key", 2, 0);
  int data_signals = 0, space_signals = 0;
  ch.on_data = [&] { ++data_signals; };
  ch.on_space = [&] { ++space_signals; };
  EXPECT_TRUE(ch.push(ChannelFrame::message("a", false)));
  EXPECT_FALSE(ch.push(ChannelFrame::message("b", true)));  // full: the writer must pause
  EXPECT_TRUE(ch.full());
  EXPECT_EQ(data_signals, 0);  // the reader is woken once per batch
  ch.publish();
  EXPECT_EQ(data_signals, 1);
  auto first = ch.pop();
  EXPECT_EQ(first.view(), "a");
  EXPECT_FALSE(first.binary);
  EXPECT_EQ(space_signals, 1);  // room again: the writer resumes
  ch.close_writer();
  EXPECT_FALSE(ch.drained());
  EXPECT_EQ(ch.pop().view(), "b");
  EXPECT_TRUE(ch.drained());
}

TEST(Channels, SweepRemovesOnlyOldHalfConnectedChannels) {
  ChannelRegistry reg;
  std::shared_ptr<Channel> a, b, c;
  auto ra = reg.create(1, 0);
  auto rb = reg.create(1, 0);
  auto rc = reg.create(1, ChannelRegistry::kUnclaimedTtlMs);
  reg.find(ra.channel_id, ra.access_key, a);
  reg.find(rb.channel_id, rb.access_key, b);
  reg.find(rc.channel_id, rc.access_key, c);
  b->writer_taken = b->reader_taken = true;  // both sides connected: kept
  a->writer_taken = true;                    // reader never came: removed, writer told
  bool writer_told = false;
  a->on_reader_gone = [&] { writer_told = true; };
  EXPECT_EQ(reg.sweep(ChannelRegistry::kUnclaimedTtlMs), 1u);
  EXPECT_TRUE(writer_told);
  EXPECT_EQ(reg.size(), 2u);  // b (connected) and c (young)
}

TEST(Channels, ShutdownTellsTheReaderTheEngineStoppedNotThatTheWriterBrokeOff) {
  ChannelRegistry reg;
  std::shared_ptr<Channel> ch;
  auto refs = reg.create(4, 0);
  reg.find(refs.channel_id, refs.access_key, ch);
  ch->writer_taken = ch->reader_taken = true;
  // The writer relay, told to stop, ends its side as broken off.
  ch->on_reader_gone = [&] { ch->close_writer(Channel::WriterEnd::kBrokenOff); };
  reg.close_all();
  EXPECT_TRUE(ch->writer_closed());
  EXPECT_EQ(ch->writer_end(), Channel::WriterEnd::kShutdown);
  EXPECT_EQ(reg.size(), 0u);
}

}  // namespace
}  // namespace iii::engine
