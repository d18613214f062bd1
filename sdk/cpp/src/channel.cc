// Channel ends (ChannelWriter, ChannelReader): one blocking socket each, used only from the
// caller's thread.
//
// Beast builds and parses the upgrade (HTTP request, response, Sec-WebSocket-Key/Accept); the
// frames are handled here. The engine's frames are read in large reads straight into one
// buffer and parsed where they lie (net::FrameParser, shared with the engine's relay), so a
// 64 KiB message costs a fraction of a recv() and no copy: Beast's stream reads each message
// in two or three calls through a 1.5 KiB buffer. The writer masks each payload while copying
// it into its frame, with a fresh key from Beast's secure generator, and sends header and
// payload in one call; Beast would copy, then mask, then send a 64 KiB frame in two calls.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/detail/prng.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "iii/iii.h"
#include "net/frame_parser.h"
#include "net/ws_frame_header.h"
#include "net/ws_mask.h"
#include "support.h"

namespace iii {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace wsd = beast::websocket::detail;
namespace json = boost::json;
using tcp = asio::ip::tcp;
namespace net = iii::net;
using Kind = net::FrameParser::Kind;

namespace {

constexpr size_t kMaxBinaryFrame = 64 * 1024;  // what the Node and Python SDKs send
constexpr uint8_t kText = 0x1, kBinary = 0x2, kClose = 0x8, kPong = 0xA;
constexpr uint16_t kNormal = 1000, kProtocolError = 1002, kNoStatus = 1005;
// The least free space a reader's recv() asks for: one call takes several 64 KiB messages.
constexpr size_t kReaderRead = 256 * 1024;
// A writer only ever reads the engine's Close.
constexpr size_t kWriterRead = 4 * 1024;

}  // namespace

json::value ChannelRef::to_json() const {
  return json::object{
      {"channel_id", channel_id}, {"access_key", access_key}, {"direction", direction}};
}

std::optional<ChannelRef> ChannelRef::from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (!o) return std::nullopt;
  const auto* id = o->if_contains("channel_id");
  const auto* key = o->if_contains("access_key");
  const auto* dir = o->if_contains("direction");
  if (!id || !id->is_string() || !key || !key->is_string() || !dir || !dir->is_string())
    return std::nullopt;
  if (dir->get_string() != "write" && dir->get_string() != "read") return std::nullopt;
  return ChannelRef{std::string(id->get_string()), std::string(key->get_string()),
                    std::string(dir->get_string())};
}

namespace detail {

struct ChannelSocket {
  ChannelSocket(std::string engine_url, ChannelRef r) : ref(std::move(r)) {
    std::string error;
    auto parsed = parse_ws_url(engine_url, &error);
    if (!parsed) throw std::invalid_argument(error);
    url = std::move(*parsed);
  }

  // Ends the connection with an error, which every later call on this end throws again.
  [[noreturn]] void fail(const std::string& what) {
    error = "channel " + ref.channel_id + ": " + what;
    done = true;
    beast::error_code ignored;
    sock.close(ignored);
    throw std::runtime_error(error);
  }
  [[noreturn]] void fail(const std::string& what, const beast::error_code& ec) {
    fail(what + ": " + ec.message());
  }

  void throw_if_failed() const {
    if (!error.empty()) throw std::runtime_error(error);
  }

  void connect() {
    throw_if_failed();
    if (open) return;
    if (done) throw std::runtime_error("channel " + ref.channel_id + ": already closed");
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) fail("cannot resolve '" + url.host + "'", ec);
    asio::connect(sock, endpoints, ec);
    if (ec) fail("cannot connect", ec);
    sock.set_option(tcp::no_delay(true), ec);
    // `<worker endpoint without a trailing slash>/ws/channels/<id>?key=<key>&dir=<dir>`.
    std::string base = url.target.substr(0, url.target.find('?'));
    while (!base.empty() && base.back() == '/') base.pop_back();
    upgrade(base + "/ws/channels/" + ref.channel_id +
            "?key=" + boost::urls::encode(ref.access_key, boost::urls::unreserved_chars) +
            "&dir=" + ref.direction);
    open = true;
  }

  // RFC 6455 §4.1 opening handshake. Whatever the engine sent after its response (frames
  // already) stays in `in` as the first input.
  void upgrade(const std::string& target) {
    wsd::sec_ws_key_type key;
    wsd::make_sec_ws_key(key);
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, url.host_header);
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::connection, "Upgrade");
    const beast::string_view key_text(key.data(), key.size());
    req.set(http::field::sec_websocket_key, key_text);
    req.set(http::field::sec_websocket_version, "13");
    beast::error_code ec;
    http::write(sock, req, ec);
    if (ec) fail("cannot send the upgrade request", ec);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    http::read(sock, buf, parser, ec);
    if (ec) fail("no answer to the upgrade request", ec);
    const auto& res = parser.get();
    if (res.result() != http::status::switching_protocols) {
      std::string why = "upgrade refused: HTTP " + std::to_string(res.result_int());
      std::string body = res.body();
      while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
      if (!body.empty()) why += " (" + body + ")";
      fail(why);
    }
    wsd::sec_ws_accept_type accept;
    wsd::make_sec_ws_accept(accept, key_text);
    if (!beast::iequals(res[http::field::upgrade], "websocket") ||
        !http::token_list(res[http::field::connection]).exists("upgrade") ||
        res[http::field::sec_websocket_accept] != beast::string_view(accept.data(), accept.size()))
      fail("upgrade refused: not a WebSocket answer");
    // Neither was offered (RFC 6455 §4.1: the client must then fail the connection).
    if (res.count(http::field::sec_websocket_extensions) > 0 ||
        res.count(http::field::sec_websocket_protocol) > 0)
      fail("upgrade refused: the answer names an extension or subprotocol that was not offered");
    const size_t extra = buf.size();
    if (extra > 0) {
      in = std::make_unique_for_overwrite<char[]>(extra);
      in_size = extra;
      std::memcpy(in.get(), buf.data().data(), extra);
    }
    end = extra;
  }

  // One unfragmented client frame: header, masking key and masked payload in one send.
  beast::error_code send(unsigned opcode, std::string_view payload) {
    const size_t n = payload.size();
    const uint32_t random = prng();
    net::MaskKey key;
    std::memcpy(key.data(), &random, 4);
    if (out.size() < net::kMaxClientFrameHeader + n) out.resize(net::kMaxClientFrameHeader + n);
    const size_t h = net::write_frame_header(reinterpret_cast<unsigned char*>(out.data()), opcode,
                                             true, n, key.data());
    net::mask_copy(out.data() + h, payload.data(), n, key);
    // write_some on a blocking socket sends it all in one call (asio::write would cut it into
    // 64 KiB calls); the loop is for signals and the rare short send.
    size_t sent = 0;
    beast::error_code ec;
    while (sent < h + n && !ec)
      sent += sock.write_some(asio::buffer(out.data() + sent, h + n - sent), ec);
    if (out.size() > kKeepOut) std::vector<char>().swap(out);  // after a large text message
    if (opcode == kClose) close_sent = true;
    return ec;
  }

  void send_data(unsigned opcode, std::string_view payload) {
    connect();
    if (done) throw std::runtime_error("channel " + ref.channel_id + ": already closed");
    if (auto ec = send(opcode, payload)) fail("write failed (the engine closed the channel?)", ec);
    // The engine closes a writer's channel when its reader leaves or it refuses a frame; that
    // Close is looked for about once per MiB.
    unchecked += payload.size();
    if (unchecked >= kCheckEvery) {
      unchecked = 0;
      check_engine();
    }
  }

  // Takes what the engine has sent a writer so far, without waiting for more: a Ping is
  // answered, a Close ends the channel (thrown), anything else is dropped.
  void check_engine() {
    beast::error_code ec;
    while (sock.available(ec) > 0) {
      fill(kWriterRead);
      for (;;) {
        const auto it = parser.next(in.get() + parsed, in.get() + end, true);
        parsed += it.consumed;
        if (it.kind == Kind::kNeedMore) break;
        if (it.kind == Kind::kPing) {
          answer_ping(it);
        } else if (it.kind == Kind::kClose) {
          closed(it);
          ended_by_engine("closed by the engine");
        } else if (it.kind == Kind::kError) {
          protocol_error(it);
        }
      }
    }
  }

  void answer_ping(const net::FrameParser::Item& ping) {
    if (auto ec = send(kPong, std::string_view(ping.data, ping.size)))
      fail("cannot answer a Ping", ec);
  }

  // 1005 (no code received) is echoed as a Close without a payload.
  beast::error_code send_close(uint16_t code, std::string_view reason) {
    return send(kClose, code == kNoStatus ? std::string() : net::close_payload(code, reason));
  }

  // Reads more input into `in` after [keep, end). When less than `min_free` is left behind
  // those bytes, they move to the front; the buffer is twice `min_free`, grows (doubling)
  // only while a message does not fit, and shrinks back once it has been read.
  void fill(size_t min_free) {
    const size_t keep = assembling ? msg_begin : parsed;
    const size_t live = end - keep;
    const size_t usual = 2 * min_free;
    const bool fits_usual = live + min_free <= usual;
    if (in_size - end < min_free || (in_size > usual && fits_usual)) {
      size_t size = in_size;
      if (fits_usual)
        size = usual;
      else if (live + min_free > in_size)
        size = std::max(live + min_free, in_size * 2);
      if (size == in_size) {
        if (live > 0 && keep > 0) std::memmove(in.get(), in.get() + keep, live);
      } else {
        auto fresh = std::make_unique_for_overwrite<char[]>(size);
        if (live > 0) std::memcpy(fresh.get(), in.get() + keep, live);
        in = std::move(fresh);
        in_size = size;
      }
      parsed -= keep;
      end -= keep;
      msg_begin -= assembling ? keep : 0;
      msg_end -= assembling ? keep : 0;
    }
    beast::error_code ec;
    const size_t n = sock.read_some(asio::buffer(in.get() + end, in_size - end), ec);
    if (ec) fail("read failed", ec);
    end += n;
  }

  // The next frame (or error) from the engine, reading as needed: whole data frames, or with
  // `flush` whatever part of one has arrived (for data that is dropped).
  net::FrameParser::Item next_item(size_t min_free, bool flush = false) {
    for (;;) {
      const auto it = parser.next(in.get() + parsed, in.get() + end, flush);
      parsed += it.consumed;
      if (it.kind != Kind::kNeedMore) return it;
      fill(min_free);
    }
  }

  // The engine's Close: answered with its code unless ours went first; the connection ends.
  void closed(const net::FrameParser::Item& it) {
    done = true;
    close_code = it.code;
    close_reason.assign(it.data ? it.data : "", it.size);
    // Errors are ignored: the engine may already have gone; its Close said all there was.
    if (!close_sent) (void)send_close(it.code, {});
    beast::error_code ignored;
    sock.close(ignored);
  }

  // A frame the engine should never have sent: answers with the parser's code (1002, or 1007
  // for text that is not UTF-8) and fails.
  [[noreturn]] void protocol_error(const net::FrameParser::Item& it) {
    if (!close_sent) (void)send_close(it.code, {});
    fail(std::string("the engine broke the WebSocket protocol: ") + it.error);
  }

  // After our Close: reads (dropping data as it comes) until the engine's answer.
  void read_until_close(size_t min_free) {
    assembling = false;  // data is dropped here, so nothing is put together
    for (;;) {
      const auto it = next_item(min_free, true);
      if (it.kind == Kind::kClose) return closed(it);
      if (it.kind == Kind::kError) protocol_error(it);
    }
  }

  // The engine's Close (already received) ended the channel before the caller did.
  [[noreturn]] void ended_by_engine(const char* what) {
    error = "channel " + ref.channel_id + ": " + what + " (code " + std::to_string(close_code);
    if (!close_reason.empty()) error += " " + close_reason;
    error += ")";
    throw std::runtime_error(error);
  }

  // A writer's end()/close(): our Close, then the engine's answer, which must be 1000. If
  // ours cannot be sent, the engine closed first and its Close is still there to be read.
  void finish_writing(const char* reason) {
    throw_if_failed();
    if (done) return;
    connect();
    (void)send_close(kNormal, reason);
    read_until_close(kWriterRead);
    // The engine answers a writer's Close with the same code; anything else means it had
    // closed the channel first, and data written since then was not delivered.
    if (close_code != kNormal) ended_by_engine("closed by the engine");
  }

  ChannelRef ref;
  WsUrl url;
  asio::io_context ioc{1};
  tcp::socket sock{ioc};
  bool open = false;
  bool done = false;        // closed, or failed
  bool close_sent = false;  // our Close went out
  std::string error;        // why the end failed; thrown again by every later call
  uint16_t close_code = 0;  // the engine's Close, once received
  std::string close_reason;
  // Writing.
  std::vector<char> out;  // the frame being sent
  size_t unchecked = 0;   // bytes sent since the last look for the engine's Close
  static constexpr size_t kCheckEvery = 1024 * 1024;
  static constexpr size_t kKeepOut = 1024 * 1024;  // a larger frame buffer is not kept
  wsd::generator prng = wsd::make_prng(true);
  // Reading: [parsed, end) of `in` is input not parsed yet; a message that came in fragments
  // is put together at [msg_begin, msg_end) while `assembling`.
  std::unique_ptr<char[]> in;
  size_t in_size = 0;
  size_t parsed = 0, end = 0, msg_begin = 0, msg_end = 0;
  bool assembling = false;
  net::FrameParser parser{net::FrameParser::From::kServer, 0};
};

}  // namespace detail

ChannelWriter::ChannelWriter(std::string engine_url, ChannelRef ref)
    : s_(std::make_unique<detail::ChannelSocket>(std::move(engine_url), std::move(ref))) {}
ChannelWriter::~ChannelWriter() = default;
ChannelWriter::ChannelWriter(ChannelWriter&&) noexcept = default;
ChannelWriter& ChannelWriter::operator=(ChannelWriter&&) noexcept = default;

void ChannelWriter::write(std::string_view bytes) {
  do {
    const size_t n = std::min(bytes.size(), kMaxBinaryFrame);
    s_->send_data(kBinary, bytes.substr(0, n));
    bytes.remove_prefix(n);
  } while (!bytes.empty());
}

void ChannelWriter::send_message(std::string_view text) { s_->send_data(kText, text); }
void ChannelWriter::end() { s_->finish_writing("stream_complete"); }
void ChannelWriter::close() { s_->finish_writing("channel_close"); }
const ChannelRef& ChannelWriter::ref() const { return s_->ref; }

ChannelReader::ChannelReader(std::string engine_url, ChannelRef ref)
    : s_(std::make_unique<detail::ChannelSocket>(std::move(engine_url), std::move(ref))) {}
ChannelReader::~ChannelReader() = default;
ChannelReader::ChannelReader(ChannelReader&&) noexcept = default;
ChannelReader& ChannelReader::operator=(ChannelReader&&) noexcept = default;

bool ChannelReader::next(bool* binary, std::string_view* data) {
  detail::ChannelSocket& s = *s_;
  s.throw_if_failed();
  if (s.done) return false;
  s.connect();
  for (;;) {
    const auto it = s.next_item(kReaderRead);
    switch (it.kind) {
      case Kind::kData: {
        const size_t at = static_cast<size_t>(it.data - s.in.get());
        if (it.first) {
          s.msg_begin = at;
          s.msg_end = at + it.size;
        } else {
          // A later fragment: joined to the earlier ones, over the header(s) between them.
          if (at != s.msg_end) std::memmove(s.in.get() + s.msg_end, it.data, it.size);
          s.msg_end += it.size;
        }
        s.assembling = !it.last;
        if (s.assembling) continue;
        *binary = !it.text;
        *data = std::string_view(s.in.get() + s.msg_begin, s.msg_end - s.msg_begin);
        return true;
      }
      case Kind::kPing:
        s.answer_ping(it);
        continue;
      case Kind::kPong:
        continue;
      case Kind::kClose: {
        const bool mid_message = s.assembling;
        s.assembling = false;
        s.closed(it);
        if (mid_message) s.ended_by_engine("ended in the middle of a message");
        // 1000 (or no code, as the original engine sends): the writer finished and everything
        // was delivered. Any other code: the stream was cut short.
        if (s.close_code == kNormal || s.close_code == kNoStatus) return false;
        s.ended_by_engine("ended early");
      }
      case Kind::kError:
        s.protocol_error(it);
      case Kind::kNeedMore:
        break;  // next_item never returns it
    }
  }
}

std::optional<ChannelMessage> ChannelReader::next() {
  bool binary;
  std::string_view data;
  if (!next(&binary, &data)) return std::nullopt;
  return ChannelMessage{binary, std::string(data)};
}

std::string ChannelReader::read_all(const std::function<void(std::string_view)>& on_text) {
  std::string all;
  bool binary;
  std::string_view data;
  while (next(&binary, &data)) {
    if (binary)
      all.append(data);
    else if (on_text)
      on_text(data);
  }
  return all;
}

void ChannelReader::close() {
  detail::ChannelSocket& s = *s_;
  if (s.done || !s.open || !s.error.empty()) {
    s.done = true;
    return;
  }
  // Our Close; whatever is still on its way is dropped until the engine's answer.
  (void)s.send_close(kNormal, {});
  try {
    s.read_until_close(kReaderRead);
  } catch (const std::runtime_error&) {
    // The connection ended without the engine's Close: closed all the same.
    s.error.clear();
  }
  s.done = true;
}

const ChannelRef& ChannelReader::ref() const { return s_->ref; }

Channel III::create_channel(std::optional<int64_t> buffer_size) {
  json::object payload;
  if (buffer_size) payload["buffer_size"] = *buffer_size;
  const Result r = trigger({.function_id = "engine::channels::create", .payload = payload});
  const json::object* o = r ? r->if_object() : nullptr;
  std::optional<ChannelRef> w, rd;
  if (o && o->contains("writer") && o->contains("reader")) {
    w = ChannelRef::from_json(o->at("writer"));
    rd = ChannelRef::from_json(o->at("reader"));
  }
  if (!w || !rd)
    throw InvocationError("INVALID_RESULT",
                          "engine::channels::create did not return writer and reader refs");
  return Channel{ChannelWriter(url_, *w), ChannelReader(url_, *rd), *w, *rd};
}

}  // namespace iii
