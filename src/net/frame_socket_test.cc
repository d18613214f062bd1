// FrameSocket under a real Beast server stream, read by a real Beast client over loopback:
// header encoding at every length boundary, order, Beast's own control frames interleaved with
// queued frames, and the Close frame arriving after the data queued before it.
#include "net/frame_socket.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <string>
#include <thread>
#include <vector>

namespace iii::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

struct Message {
  bool binary;
  std::string data;
};

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (seed + i) % 26);
  return s;
}

class FrameSocketTest : public ::testing::Test {
 protected:
  // Runs `serve` on the accepted server stream (on the io_context thread) and collects what a
  // Beast client receives until the server's Close.
  std::vector<Message> exchange(std::function<void(websocket::stream<FrameSocket>&)> serve,
                                websocket::close_reason* got_close, int* pings_seen) {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const auto port = acceptor.local_endpoint().port();
    std::vector<Message> received;
    std::thread client([&] {
      asio::io_context cioc;
      websocket::stream<tcp::socket> ws(cioc);
      ws.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
      ws.control_callback([&](websocket::frame_type kind, beast::string_view) {
        if (kind == websocket::frame_type::ping) ++*pings_seen;
      });
      ws.handshake("127.0.0.1", "/");
      ws.read_message_max(0);
      for (;;) {
        beast::flat_buffer buf;
        beast::error_code ec;
        ws.read(buf, ec);
        if (ec) {
          EXPECT_EQ(ec, websocket::error::closed) << ec.message();
          *got_close = ws.reason();
          break;
        }
        received.push_back({ws.got_binary(), beast::buffers_to_string(buf.data())});
      }
    });
    tcp::socket sock = acceptor.accept();
    websocket::stream<FrameSocket> ws(std::move(sock));
    ws.read_message_max(0);
    bool accepted = false;
    ws.async_accept([&](beast::error_code ec) {
      ASSERT_FALSE(ec) << ec.message();
      accepted = true;
      serve(ws);
      // Keep reading so that the client's Close reply is taken and the close completes.
      auto buf = std::make_shared<beast::flat_buffer>();
      ws.async_read(*buf, [buf](beast::error_code, size_t) {});
    });
    ioc.run();
    client.join();
    EXPECT_TRUE(accepted);
    return received;
  }
};

TEST_F(FrameSocketTest, EncodesEveryLengthBoundaryInOrder) {
  // The 48 MiB frame is more than the socket takes at once: the rest of it and the frames after
  // it wait in the queue, and the rest is written from where the socket stopped.
  const std::vector<size_t> sizes = {
      0, 1, 125, 126, 127, 65535, 65536, 65537, 3 * 1024 * 1024, 48 * 1024 * 1024, 126, 70000};
  websocket::close_reason reason;
  int pings = 0;
  auto got = exchange(
      [&](websocket::stream<FrameSocket>& ws) {
        size_t total = 0;
        for (size_t i = 0; i < sizes.size(); ++i) {
          ws.next_layer().send_frame(i % 2 == 1, std::make_shared<const std::string>(
                                                     pattern(sizes[i], static_cast<char>(i))));
          total += sizes[i];
        }
        EXPECT_GT(ws.next_layer().queued_bytes(), 0u);
        EXPECT_LT(ws.next_layer().queued_bytes(), total + 10 * sizes.size());
        ws.async_close(websocket::close_code::normal, [](beast::error_code) {});
      },
      &reason, &pings);
  ASSERT_EQ(got.size(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(got[i].binary, i % 2 == 1) << i;
    EXPECT_EQ(got[i].data, pattern(sizes[i], static_cast<char>(i))) << "frame " << i;
  }
  EXPECT_EQ(reason.code, websocket::close_code::normal);
}

TEST_F(FrameSocketTest, BeastControlFramesInterleaveWithoutSplittingFrames) {
  constexpr int kFrames = 200;
  websocket::close_reason reason;
  int pings = 0;
  auto got = exchange(
      [&](websocket::stream<FrameSocket>& ws) {
        // Batches of frames with one of Beast's Pings queued between them (Beast allows one
        // ping in flight, so the next batch follows its completion). A Ping must land between
        // frames, never inside one.
        auto batch = std::make_shared<std::function<void(int)>>();
        *batch = [&ws, batch](int b) {
          for (int i = b * 50; i < (b + 1) * 50; ++i)
            ws.next_layer().send_frame(true, std::make_shared<const std::string>(
                                                 pattern(70000 + i, static_cast<char>(i))));
          if (b + 1 == kFrames / 50) {
            ws.async_close(websocket::close_reason(websocket::close_code::going_away, "bye"),
                           [batch](beast::error_code) { *batch = nullptr; });
            return;
          }
          ws.async_ping({}, [batch, b](beast::error_code ec) {
            EXPECT_FALSE(ec) << ec.message();
            if (*batch) (*batch)(b + 1);
          });
        };
        (*batch)(0);
      },
      &reason, &pings);
  ASSERT_EQ(static_cast<int>(got.size()), kFrames);
  for (int i = 0; i < kFrames; ++i)
    ASSERT_EQ(got[i].data, pattern(70000 + i, static_cast<char>(i))) << "frame " << i;
  EXPECT_GE(pings, 1);
  EXPECT_EQ(reason.code, websocket::close_code::going_away);
  EXPECT_EQ(reason.reason, "bye");
}

TEST_F(FrameSocketTest, FramesQueuedAfterTheSocketFailsAreDropped) {
  websocket::close_reason reason;
  int pings = 0;
  auto got = exchange(
      [&](websocket::stream<FrameSocket>& ws) {
        ws.next_layer().send_frame(false, std::make_shared<const std::string>("first"));
        ws.async_close(websocket::close_code::normal, [&ws](beast::error_code) {
          // Closed: the socket is gone, a late frame must be dropped, not crash.
          ws.next_layer().send_frame(false, std::make_shared<const std::string>("late"));
        });
      },
      &reason, &pings);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "first");
}

}  // namespace
}  // namespace iii::net
