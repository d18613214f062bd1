// The channel relays behind a real listener, driven by real Beast clients over loopback:
// messages (fragmented, text, larger than a read block) arrive whole and in order through a
// small buffer, a reader that connects after the writer has finished still gets everything,
// and the writer's Ping, protocol errors, oversized messages and a departed reader are answered
// with the right control frames.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "engine/builtin_worker.h"
#include "engine/engine.h"
#include "iii/iii.h"
#include "net/ws_listener.h"

namespace iii::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Client = websocket::stream<tcp::socket>;

struct Message {
  bool binary;
  std::string data;
  bool operator==(const Message&) const = default;
};

std::string pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (seed * 7 + i) % 26);
  return s;
}

// Shuts the clients' sockets down if a test has not finished in time, so that a stuck relay
// fails the test instead of hanging it.
class Watchdog {
 public:
  explicit Watchdog(std::vector<Client*> clients) : clients_(std::move(clients)) {
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::seconds(20), [this] { return done_; })) return;
      ADD_FAILURE() << "the relay stalled";
      for (Client* c : clients_) ::shutdown(c->next_layer().native_handle(), SHUT_RDWR);
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::vector<Client*> clients_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

class ChannelRelayTest : public ::testing::Test {
 protected:
  // Channels are created before the engine thread starts: the registry is the engine's.
  engine::ChannelRefs create(int64_t buffer_size) {
    return engine_.channels().create(buffer_size, 0);
  }

  void start(ListenerOptions opts = {}) {
    opts.host = "127.0.0.1";
    opts.port = 0;
    // engine::channels::create and the other engine functions, for the SDK test.
    config::WorkerEntry entry;
    entry.name = entry.instance_name = "iii-engine-functions";
    entry.config = YAML::Node(YAML::NodeType::Map);
    for (const auto& type : engine::worker_types())
      if (type.name == entry.name) functions_ = type.factory(entry, runtime_);
    functions_->start();
    listener_ = start_ws_listener(io_, engine_, opts);
    port_ = listener_->port();
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] { listener_->stop(); });
    io_.stop();
    thread_.join();
  }

  std::unique_ptr<Client> open(asio::io_context& ioc, const engine::ChannelRefs& ch,
                               const char* dir) {
    auto ws = std::make_unique<Client>(ioc);
    ws->next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    ws->read_message_max(0);
    ws->auto_fragment(false);
    ws->handshake("127.0.0.1",
                  "/ws/channels/" + ch.channel_id + "?key=" + ch.access_key + "&dir=" + dir);
    return ws;
  }

  // A reader connected first, then a writer, each with its own io_context.
  struct Ends {
    asio::io_context cr, cw;
    std::pair<std::unique_ptr<Client>, std::unique_ptr<Client>> clients;  // reader, writer
  };
  std::unique_ptr<Ends> open_both(const engine::ChannelRefs& ch) {
    auto ends = std::make_unique<Ends>();
    ends->clients.first = open(ends->cr, ch, "read");
    ends->clients.second = open(ends->cw, ch, "write");
    return ends;
  }

  // Reads until the relay closes; returns the messages and sets the close reason.
  static std::vector<Message> read_all(Client& ws, websocket::close_reason* reason) {
    std::vector<Message> got;
    for (;;) {
      beast::flat_buffer buf;
      beast::error_code ec;
      ws.read(buf, ec);
      if (ec) {
        EXPECT_EQ(ec, websocket::error::closed) << ec.message();
        *reason = ws.reason();
        return got;
      }
      got.push_back({ws.got_binary(), beast::buffers_to_string(buf.data())});
    }
  }

  asio::io_context io_{1};
  engine::Engine engine_;
  engine::Runtime runtime_{io_, engine_};
  std::unique_ptr<engine::BuiltinWorker> functions_;
  std::unique_ptr<Listener> listener_;
  uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(ChannelRelayTest, MessagesArriveWholeAndInOrderThroughASmallBuffer) {
  const auto ch = create(2);  // the writer pauses and resumes many times
  start();
  std::vector<Message> sent;
  for (int i = 0; i < 48; ++i) sent.push_back({true, pattern(64 * 1024, i)});
  sent.insert(sent.begin() + 10, {false, "a text message between binary ones \xC3\xA9"});
  sent.insert(sent.begin() + 20, {true, pattern(3 * 1024 * 1024 + 5, 99)});  // > one block
  sent.push_back({true, ""});
  const Message fragmented{false, "sent in three fragments"};

  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  std::vector<Message> got;
  websocket::close_reason reader_close;
  std::thread rt([&] { got = read_all(*reader, &reader_close); });

  for (size_t i = 0; i < sent.size(); ++i) {
    writer->binary(sent[i].binary);
    writer->write(asio::buffer(sent[i].data));
    if (i == 5) writer->ping("are you there");
  }
  writer->text(true);
  writer->write_some(false, asio::buffer(fragmented.data.substr(0, 4)));
  writer->ping("are you there");  // a control frame inside a fragmented message
  writer->write_some(false, asio::buffer(fragmented.data.substr(4, 10)));
  writer->write_some(true, asio::buffer(fragmented.data.substr(14)));
  sent.push_back(fragmented);
  writer->close(websocket::close_reason(websocket::close_code::normal, "stream_complete"));
  // Beast's close reads to the relay's Close answer (past the Pongs).
  EXPECT_EQ(writer->reason().code, websocket::close_code::normal);
  rt.join();
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_TRUE(got[i] == sent[i]) << "message " << i;
  EXPECT_EQ(reader_close.code, websocket::close_code::normal);
}

TEST_F(ChannelRelayTest, AReaderThatComesLateGetsEverythingTheWriterLeft) {
  const auto ch = create(64);
  start();
  asio::io_context cw, cr;
  auto writer = open(cw, ch, "write");
  std::vector<Message> sent;
  for (int i = 0; i < 40; ++i) sent.push_back({true, pattern(64 * 1024, i)});  // 2.5 MiB
  writer->binary(true);
  for (const auto& m : sent) writer->write(asio::buffer(m.data));
  writer->close(websocket::close_reason(websocket::close_code::normal, "stream_complete"));
  auto reader = open(cr, ch, "read");
  Watchdog dog({reader.get()});
  websocket::close_reason reason;
  const auto got = read_all(*reader, &reason);
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i)
    ASSERT_TRUE(got[i] == sent[i]) << "message " << i << ": " << got[i].binary << " "
                                   << got[i].data.size() << " " << got[i].data.substr(0, 20);
  EXPECT_EQ(reason.code, websocket::close_code::normal);
}

// The writer reads after the relay has closed on it: Beast reports the relay's close code.
websocket::close_reason close_seen_by(Client& writer) {
  beast::flat_buffer buf;
  beast::error_code ec;
  writer.read(buf, ec);
  EXPECT_EQ(ec, websocket::error::closed) << ec.message();
  return writer.reason();
}

TEST_F(ChannelRelayTest, AProtocolErrorClosesTheWriterWith1002AndEndsTheReader) {
  const auto ch = create(8);
  start();
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  writer->write(asio::buffer(std::string("before")));
  // A masked binary frame with RSV1 set, though no extension was negotiated.
  const unsigned char bad[] = {0xC2, 0x81, 1, 2, 3, 4, 'x' ^ 1};
  asio::write(writer->next_layer(), asio::buffer(bad));
  EXPECT_EQ(close_seen_by(*writer).code, websocket::close_code::protocol_error);
  websocket::close_reason reason;
  const auto got = read_all(*reader, &reason);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "before");
  EXPECT_EQ(reason.code, websocket::close_code::internal_error);  // not a complete stream
}

TEST_F(ChannelRelayTest, AWriterThatDropsItsConnectionLeavesTheReaderAnIncompleteStream) {
  const auto ch = create(8);
  start();
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get()});
  writer->write(asio::buffer(std::string("partial")));
  writer->next_layer().close();  // no Close frame
  websocket::close_reason reason;
  const auto got = read_all(*reader, &reason);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(reason.code, websocket::close_code::internal_error);
}

TEST_F(ChannelRelayTest, AMessageOverTheLimitClosesTheWriterWith1009) {
  const auto ch = create(8);
  ListenerOptions opts;
  opts.max_message_bytes = 1024 * 1024;
  start(opts);
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  writer->write(asio::buffer(pattern(1024 * 1024, 1)));  // at the limit: delivered
  beast::error_code ec;
  writer->write(asio::buffer(pattern(1024 * 1024 + 1, 2)), ec);  // one byte over
  EXPECT_EQ(close_seen_by(*writer).code, websocket::close_code::too_big);
  websocket::close_reason reason;
  const auto got = read_all(*reader, &reason);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data.size(), 1024u * 1024);
}

// The reader's own messages are dropped, and bounded like the writer's: one over
// max_message_bytes closes the reader with 1009 (before, it was buffered whole), and the
// writer is told that the reader left.
TEST_F(ChannelRelayTest, AReaderMessageOverTheLimitClosesTheReaderWith1009) {
  const auto ch = create(8);
  ListenerOptions opts;
  opts.max_message_bytes = 256 * 1024;
  start(opts);
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  reader->write(asio::buffer(pattern(256 * 1024, 1)));  // at the limit: dropped quietly
  writer->write(asio::buffer(std::string("still open")));
  beast::flat_buffer buf;
  reader->read(buf);
  EXPECT_EQ(beast::buffers_to_string(buf.data()), "still open");
  beast::error_code ec;
  reader->write(asio::buffer(pattern(4 * 1024 * 1024, 2)), ec);  // over it
  EXPECT_EQ(close_seen_by(*reader).code, websocket::close_code::too_big);
  EXPECT_EQ(close_seen_by(*writer).code, websocket::close_code::going_away);
}

TEST_F(ChannelRelayTest, TheWriterGetsPongsAndIsToldWhenTheReaderLeaves) {
  const auto ch = create(8);
  start();
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  int pongs = 0;
  writer->control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::pong && payload == "are you there") ++pongs;
  });
  writer->ping("are you there");
  writer->write(asio::buffer(std::string("x")));
  beast::flat_buffer buf;
  reader->read(buf);  // the relay has read the Ping (it came first) and queued the Pong
  reader->close(websocket::close_code::normal);
  EXPECT_EQ(close_seen_by(*writer).code, websocket::close_code::going_away);
  EXPECT_EQ(pongs, 1);
}

// The C++ SDK's channel API end to end: create_channel through the engine, a writer and a
// reader opened from the refs, binary data split into 64 KiB messages and masked by the SDK,
// text messages in between, and the end of the stream.
TEST_F(ChannelRelayTest, CppSdkChannelsCarryBinaryAndTextMessages) {
  start();
  auto client = iii::register_worker("ws://127.0.0.1:" + std::to_string(port_));
  ASSERT_TRUE(client->wait_connected(std::chrono::seconds(5))) << client->last_error();
  iii::Channel ch = client->create_channel(4);
  EXPECT_EQ(ch.writer_ref.direction, "write");
  EXPECT_EQ(ch.reader_ref.direction, "read");
  EXPECT_EQ(ch.writer_ref.channel_id, ch.reader_ref.channel_id);
  // A ref survives a trip through JSON, as it does inside a payload.
  auto back = iii::ChannelRef::from_json(ch.reader_ref.to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->access_key, ch.reader_ref.access_key);
  EXPECT_FALSE(iii::ChannelRef::from_json(boost::json::value{{"channel_id", "x"}}));

  const std::string first = pattern(3 * 1024 * 1024 + 7, 5), second = pattern(100, 6);
  std::thread writer([&] {
    ch.writer.write(first);  // 49 messages of at most 64 KiB
    ch.writer.send_message("status: half way");
    ch.writer.write(second);
    ch.writer.end();
  });
  iii::ChannelReader reader = client->channel_reader(*back);
  std::vector<std::string> texts;
  size_t messages = 0;
  bool binary;
  std::string_view data;
  std::string all;
  while (reader.next(&binary, &data)) {
    ++messages;
    if (binary) {
      EXPECT_LE(data.size(), 64u * 1024);
      all.append(data);
    } else {
      texts.emplace_back(data);
      EXPECT_EQ(all.size(), first.size());  // in order with the binary data
    }
  }
  writer.join();
  EXPECT_TRUE(all == first + second);
  EXPECT_EQ(texts, std::vector<std::string>{"status: half way"});
  EXPECT_EQ(messages, 49u + 1 + 1);
  EXPECT_FALSE(reader.next());  // stays at the end
  client->shutdown();
}

// The SDK's writer learns when the engine has closed the channel on it: at end() (a refused
// frame is answered with 1007 before the writer's own Close), and while writing (its reader
// left: 1001, noticed within about 1 MiB).
TEST_F(ChannelRelayTest, CppSdkWriterReportsTheEnginesClose) {
  start();
  auto client = iii::register_worker("ws://127.0.0.1:" + std::to_string(port_));
  ASSERT_TRUE(client->wait_connected(std::chrono::seconds(5))) << client->last_error();

  iii::Channel bad = client->create_channel();
  bad.writer.write("fine");
  bad.writer.send_message("\xff\xfe not UTF-8");
  try {
    bad.writer.end();
    ADD_FAILURE() << "end() did not report the engine's Close";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("code 1007"), std::string::npos) << e.what();
  }
  // What came before is delivered, then the reader learns the stream was cut short.
  auto before = bad.reader.next();
  ASSERT_TRUE(before);
  EXPECT_EQ(before->data, "fine");
  std::string cut_short;
  try {
    bad.reader.next();
    ADD_FAILURE() << "the reader took a broken-off stream for a complete one";
  } catch (const std::runtime_error& e) {
    cut_short = e.what();
    EXPECT_NE(cut_short.find("code 1011"), std::string::npos) << cut_short;
  }
  // The failure sticks: later calls say the same instead of looking like a clean end.
  for (int i = 0; i < 2; ++i) {
    try {
      bad.reader.read_all();
      ADD_FAILURE() << "a failed reader later looked finished";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(e.what(), cut_short);
    }
    EXPECT_THROW(bad.writer.end(), std::runtime_error);
  }

  iii::Channel ch = client->create_channel();
  ch.writer.write("first");
  ASSERT_TRUE(ch.reader.next());
  ch.reader.close();
  const std::string chunk = pattern(64 * 1024, 3);
  std::string error;
  for (int i = 0; i < 1024 && error.empty(); ++i) {  // at most 64 MiB
    try {
      ch.writer.write(chunk);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  }
  EXPECT_NE(error.find("code 1001"), std::string::npos) << error;
  try {
    ch.writer.end();
    ADD_FAILURE() << "end() after a failed write reported success";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(e.what(), error);
  }
  client->shutdown();
}

// A writer that closes in the middle of a fragmented message did not finish its stream: the
// reader gets what was forwarded, then 1011, not the 1000 of a complete stream.
TEST_F(ChannelRelayTest, ACloseInTheMiddleOfAMessageIsNotAFinishedStream) {
  const auto ch = create(8);
  start();
  auto ends = open_both(ch);
  auto& [reader, writer] = ends->clients;
  Watchdog dog({reader.get(), writer.get()});
  writer->write(asio::buffer(std::string("whole")));
  writer->binary(true);
  writer->write_some(false, asio::buffer(std::string("first half")));
  writer->close(websocket::close_reason(websocket::close_code::normal, "stream_complete"));
  websocket::close_reason reason;
  const auto got = read_all(*reader, &reason);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "whole");
  EXPECT_EQ(reason.code, websocket::close_code::internal_error);
}

// The SDK's reader parses the engine's frames itself: a message the writer sent in fragments
// (with a Ping between them) and one the relay forwards in pieces (larger than its read block)
// arrive whole; the engine's keep-alive Pings to an idle reader are answered, so the reader
// outlives several idle timeouts; a refused upgrade says why.
TEST_F(ChannelRelayTest, CppSdkReaderPutsFragmentsTogetherAndAnswersPings) {
  const auto ch = create(8);
  ListenerOptions opts;
  opts.idle_timeout = std::chrono::milliseconds(200);
  start(opts);
  const std::string url = "ws://127.0.0.1:" + std::to_string(port_);
  iii::ChannelReader reader(url, {ch.channel_id, ch.access_key, "read"});
  const std::string big = pattern(3 * 1024 * 1024 + 3, 8), parts = pattern(150000, 9);
  asio::io_context cw;
  std::unique_ptr<Client> writer;
  std::thread wt([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));  // the reader waits, idle
    try {
      writer = open(cw, ch, "write");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "the channel is gone (the reader was dropped?): " << e.what();
      return;
    }
    writer->binary(true);
    writer->write_some(false, asio::buffer(parts.substr(0, 70000)));
    writer->ping("between fragments");
    writer->write_some(false, asio::buffer(parts.substr(70000, 1)));
    writer->write_some(true, asio::buffer(parts.substr(70001)));
    writer->write(asio::buffer(big));
    writer->text(true);
    writer->write(asio::buffer(std::string("done \xC3\xA9")));
    writer->close(websocket::close_reason(websocket::close_code::normal, "stream_complete"));
  });
  std::vector<Message> got;
  try {
    while (auto m = reader.next()) got.push_back({m->binary, std::move(m->data)});
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  wt.join();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0] == (Message{true, parts}));
  EXPECT_TRUE(got[1] == (Message{true, big}));
  EXPECT_TRUE(got[2] == (Message{false, "done \xC3\xA9"}));

  iii::ChannelReader wrong(url, {ch.channel_id, "not-the-key", "read"});
  try {
    wrong.next();
    ADD_FAILURE() << "a wrong key was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("upgrade refused: HTTP 404 (Channel not found)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace iii::net
