// Channel ends (ChannelWriter, ChannelReader): one blocking Beast WebSocket each, on a private
// io_context used only from the caller's thread.
//
// Beast does the upgrade, the reading and the Close handshake. The writer's data frames are
// framed here instead: Beast masks a client frame by copying it into its write buffer and
// masking it there, and sends a 64 KiB frame in two calls (asio::write's per-call cap). Here
// the payload is masked while it is copied, with a fresh key from Beast's own secure generator
// for every frame, and header and payload leave in one send.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/detail/prng.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "iii/iii.h"
#include "net/ws_frame_header.h"
#include "support.h"

namespace iii {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
namespace net = iii::net;

namespace {

constexpr size_t kMaxBinaryFrame = 64 * 1024;  // what the Node and Python SDKs send

// dst = src ^ key, 8 bytes at a time (the key repeats every 4 bytes, so twice per word).
void mask_copy(char* dst, const char* src, size_t n, const unsigned char key[4]) {
  uint64_t k;
  unsigned char kk[8];
  for (int i = 0; i < 8; ++i) kk[i] = key[i & 3];
  std::memcpy(&k, kk, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= k;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<char>(src[i] ^ key[i & 3]);
}

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

  [[noreturn]] void fail(const std::string& what, const beast::error_code& ec) {
    done = true;
    throw std::runtime_error("channel " + ref.channel_id + ": " + what + ": " + ec.message());
  }

  void connect() {
    if (open) return;
    if (done) throw std::runtime_error("channel " + ref.channel_id + ": already closed");
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) fail("cannot resolve '" + url.host + "'", ec);
    asio::connect(ws.next_layer(), endpoints, ec);
    if (ec) fail("cannot connect", ec);
    ws.next_layer().set_option(tcp::no_delay(true), ec);
    ws.read_message_max(0);
    ws.auto_fragment(false);
    // `<worker endpoint without a trailing slash>/ws/channels/<id>?key=<key>&dir=<dir>`.
    std::string base = url.target.substr(0, url.target.find('?'));
    while (!base.empty() && base.back() == '/') base.pop_back();
    const std::string target = base + "/ws/channels/" + ref.channel_id + "?key=" +
                               boost::urls::encode(ref.access_key, boost::urls::unreserved_chars) +
                               "&dir=" + ref.direction;
    ws.handshake(url.host_header, target, ec);
    if (ec) fail("upgrade refused", ec);
    open = true;
  }

  // One unfragmented client frame: header, masking key and masked payload in one send.
  void send_frame(unsigned opcode, std::string_view payload) {
    connect();
    const size_t n = payload.size();
    const uint32_t key = prng();
    unsigned char k[4];
    std::memcpy(k, &key, 4);
    if (out.size() < net::kMaxClientFrameHeader + n) out.resize(net::kMaxClientFrameHeader + n);
    const size_t h = net::write_frame_header(reinterpret_cast<unsigned char*>(out.data()), opcode,
                                             true, n, k);
    mask_copy(out.data() + h, payload.data(), n, k);
    // write_some on a blocking socket sends it all in one call (asio::write would cut it into
    // 64 KiB calls); the loop is for signals and the rare short send.
    size_t sent = 0;
    beast::error_code ec;
    while (sent < h + n) {
      sent += ws.next_layer().write_some(asio::buffer(out.data() + sent, h + n - sent), ec);
      if (ec) fail("write failed (the engine closed the channel?)", ec);
    }
    // The engine sends a writer nothing but its Close (a departed reader, a refused frame), so
    // any byte waiting here means the channel is over. Checked about once per MiB.
    unchecked += h + n;
    if (unchecked >= kCheckEvery) {
      unchecked = 0;
      if (ws.next_layer().available(ec) > 0) closed_by_engine();
    }
  }

  [[noreturn]] void closed_by_engine() {
    beast::flat_buffer ignored;
    beast::error_code ec;
    ws.read(ignored, ec);  // Beast answers the Close
    ended_by_engine("closed by the engine");
  }

  // The engine's Close (already received) ended the channel before the caller did.
  [[noreturn]] void ended_by_engine(const char* what) {
    done = true;
    const websocket::close_reason& why = ws.reason();
    std::string message =
        "channel " + ref.channel_id + ": " + what + " (code " + std::to_string(why.code);
    if (!why.reason.empty()) message += " " + std::string(why.reason.data(), why.reason.size());
    throw std::runtime_error(message + ")");
  }

  void close(const char* reason) {
    if (done) return;
    connect();
    done = true;
    beast::error_code ec;
    ws.close(websocket::close_reason(websocket::close_code::normal, reason), ec);
    if (ec && ec != websocket::error::closed)
      throw std::runtime_error("channel " + ref.channel_id + ": close failed: " + ec.message());
    // The engine answers a writer's Close with the same code; anything else means it had
    // closed the channel first, and data written since then was not delivered.
    if (ws.reason().code != websocket::close_code::normal) ended_by_engine("closed by the engine");
  }

  ChannelRef ref;
  WsUrl url;
  asio::io_context ioc{1};
  websocket::stream<tcp::socket> ws{ioc};
  bool open = false;
  bool done = false;
  std::vector<char> out;  // the writer's frame being sent
  size_t unchecked = 0;   // bytes sent since the last look for the engine's Close
  static constexpr size_t kCheckEvery = 1024 * 1024;
  websocket::detail::generator prng = websocket::detail::make_prng(true);
  beast::flat_buffer in;  // the reader's last message
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
    s_->send_frame(0x2, bytes.substr(0, n));
    bytes.remove_prefix(n);
  } while (!bytes.empty());
}

void ChannelWriter::send_message(std::string_view text) { s_->send_frame(0x1, text); }
void ChannelWriter::end() { s_->close("stream_complete"); }
void ChannelWriter::close() { s_->close("channel_close"); }
const ChannelRef& ChannelWriter::ref() const { return s_->ref; }

ChannelReader::ChannelReader(std::string engine_url, ChannelRef ref)
    : s_(std::make_unique<detail::ChannelSocket>(std::move(engine_url), std::move(ref))) {}
ChannelReader::~ChannelReader() = default;
ChannelReader::ChannelReader(ChannelReader&&) noexcept = default;
ChannelReader& ChannelReader::operator=(ChannelReader&&) noexcept = default;

bool ChannelReader::next(bool* binary, std::string_view* data) {
  detail::ChannelSocket& s = *s_;
  if (s.done) return false;
  s.connect();
  s.in.consume(s.in.size());
  beast::error_code ec;
  s.ws.read(s.in, ec);
  if (ec == websocket::error::closed) {
    s.done = true;
    // 1000 (or no code, as the original engine sends): the writer finished and everything
    // was delivered. Any other code: the stream was cut short.
    const auto code = s.ws.reason().code;
    if (code == websocket::close_code::normal || code == websocket::close_code::none)
      return false;
    s.ended_by_engine("ended early");
  }
  if (ec) s.fail("read failed", ec);
  *binary = s.ws.got_binary();
  *data = std::string_view(static_cast<const char*>(s.in.data().data()), s.in.size());
  return true;
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
  if (s.done || !s.open) {
    s.done = true;
    return;
  }
  s.done = true;
  beast::error_code ec;
  s.ws.close(websocket::close_code::normal, ec);
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
