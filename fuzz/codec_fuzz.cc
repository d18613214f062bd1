// Fuzzes the worker-protocol codec: protocol::decode on any bytes, and for every frame that
// decodes, the encoders: encode(decode(x)) must decode again to the same kind of message and
// encode to the same bytes (one encode reaches a fixed point), the engine-side encoders must
// agree with the client-side ones where both exist, and append_json must match
// boost::json::serialize byte for byte (json_writer.h promises that).
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "protocol/codec.h"
#include "protocol/json_writer.h"

namespace {

namespace json = boost::json;
using namespace iii::protocol;

[[noreturn]] void fail(const char* what, std::string_view a, std::string_view b) {
  std::fprintf(stderr, "codec_fuzz: %s\n  first:  %.*s\n  second: %.*s\n", what,
               static_cast<int>(a.size()), a.data(), static_cast<int>(b.size()), b.data());
  std::abort();
}

void check_json_writer(std::string_view frame) {
  json::parse_options opt;
  opt.max_depth = 64;
  boost::system::error_code ec;
  const json::value v = json::parse(frame, ec, {}, opt);
  if (ec) return;
  std::string ours;
  append_json(ours, v);
  const std::string boost = json::serialize(v);
  if (ours != boost) fail("append_json differs from boost::json::serialize", ours, boost);
  (void)json_size_hint(v);
  if (v.is_string()) {
    std::string portable;
    detail::append_json_string_portable(portable, v.get_string());
    if (portable != boost) fail("portable string writer differs from Boost", portable, boost);
  }
}

// Engine -> worker encoders that have a client-side twin producing the same fields in the
// same order.
void check_engine_encoders(const Message& m, const std::string& client) {
  if (const auto* r = std::get_if<InvocationResult>(&m)) {
    const std::string s = encode_result(r->invocation_id, r->function_id, r->result, r->error,
                                        r->traceparent, r->baggage);
    if (s != client) fail("encode_result differs from encode(InvocationResult)", s, client);
  } else if (const auto* i = std::get_if<InvokeFunction>(&m)) {
    if (i->invocation_id && i->action.type == ActionType::kNone) {
      const std::string s =
          encode_invoke(*i->invocation_id, i->function_id, i->data, i->traceparent, i->baggage);
      if (s != client) fail("encode_invoke differs from encode(InvokeFunction)", s, client);
    }
  } else if (const auto* t = std::get_if<RegisterTrigger>(&m)) {
    (void)encode_unregister_trigger(t->id, t->trigger_type);
  } else if (const auto* w = std::get_if<WorkerRegistered>(&m)) {
    (void)encode_worker_registered(w->worker_id);
  } else if (const auto* e = std::get_if<TriggerRegistrationResult>(&m)) {
    if (e->error) {
      (void)error_to_json(*e->error);
      (void)encode_error_frame(e->error->code, e->error->message);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  check_json_writer(frame);

  DecodeResult r = decode(frame);
  const auto* m = std::get_if<Message>(&r);
  if (!m) {
    const auto& e = std::get<DecodeError>(r);
    if (e.reason.empty()) fail("a DecodeError without a reason", frame, "");
    return 0;
  }
  (void)is_uuid(frame);
  const std::string once = encode(*m);
  check_engine_encoders(*m, once);

  DecodeResult again = decode(once);
  const auto* m2 = std::get_if<Message>(&again);
  if (!m2) fail("an encoded message does not decode", once, std::get<DecodeError>(again).reason);
  if (m2->index() != m->index()) fail("an encoded message decodes to another type", frame, once);
  const std::string twice = encode(*m2);
  if (twice != once) fail("encode(decode(encode(m))) != encode(m)", once, twice);
  return 0;
}
