#include "protocol/codec.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_stack.hpp>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>

#include "protocol/json_writer.h"
#include "protocol/uuid.h"

namespace iii::protocol {

namespace json = boost::json;
namespace {

// Field readers record the first problem and keep going, so one decode pass yields
// the most useful error message for the sender.
class Reader {
 public:
  explicit Reader(json::object& obj) : obj_(obj) {}

  std::string required_string(std::string_view key) {
    auto* v = obj_.if_contains(key);
    if (!v) {
      fail(fmt_missing(key));
      return {};
    }
    if (!v->is_string()) {
      fail("field '" + std::string(key) + "' must be a string");
      return {};
    }
    return std::string(v->get_string());
  }

  std::optional<std::string> optional_string(std::string_view key) {
    auto* v = obj_.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) {
      fail("field '" + std::string(key) + "' must be a string");
      return std::nullopt;
    }
    return std::string(v->get_string());
  }

  std::optional<json::value> optional_value(std::string_view key) {
    auto* v = obj_.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    return std::move(*v);
  }

  // Like optional_value but keeps an explicit null (result: null is not the same as absent).
  std::optional<json::value> present_value(std::string_view key) {
    auto* v = obj_.if_contains(key);
    if (!v) return std::nullopt;
    return std::move(*v);
  }

  std::optional<ErrorBody> optional_error(std::string_view key) {
    auto* v = obj_.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_object()) {
      fail("field '" + std::string(key) + "' must be an object {code, message}");
      return std::nullopt;
    }
    auto& o = v->get_object();
    Reader r(o);
    ErrorBody e;
    e.code = r.required_string("code");
    e.message = r.required_string("message");
    e.stacktrace = r.optional_string("stacktrace");
    if (!r.ok()) {
      fail("field '" + std::string(key) + "': " + r.error());
      return std::nullopt;
    }
    return e;
  }

  void fail(std::string msg) {
    if (error_.empty()) error_ = std::move(msg);
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  static std::string fmt_missing(std::string_view key) {
    return "missing required field '" + std::string(key) + "'";
  }
  json::object& obj_;
  std::string error_;
};

Action read_action(Reader& r, json::object& obj) {
  Action a;
  auto* v = obj.if_contains("action");
  if (!v || v->is_null()) return a;
  if (!v->is_object()) {
    r.fail("field 'action' must be an object");
    return a;
  }
  auto& ao = v->get_object();
  auto* t = ao.if_contains("type");
  if (!t || !t->is_string()) {
    r.fail("field 'action.type' must be \"void\" or \"enqueue\"");
    return a;
  }
  if (t->get_string() == "void") {
    a.type = ActionType::kVoid;
  } else if (t->get_string() == "enqueue") {
    a.type = ActionType::kEnqueue;
    auto* q = ao.if_contains("queue");
    if (!q || !q->is_string()) {
      r.fail("field 'action.queue' must be a string for enqueue actions");
      return a;
    }
    a.queue = std::string(q->get_string());
  } else {
    r.fail("unknown action type '" + std::string(t->get_string()) + "'");
  }
  return a;
}

template <typename T>
DecodeResult finish(Reader& r, std::string_view type, T&& msg) {
  if (!r.ok()) return DecodeError{r.error(), std::string(type), std::nullopt, std::nullopt};
  return Message(std::forward<T>(msg));
}

DecodeResult decode_invoke(Reader& r, json::object& obj) {
  InvokeFunction m;
  // Read ids first so that an error reply can be addressed even if other fields are bad.
  m.invocation_id = r.optional_string("invocation_id");
  auto* fid = obj.if_contains("function_id");
  std::optional<std::string> function_id;
  if (fid && fid->is_string()) function_id = std::string(fid->get_string());
  if (m.invocation_id && !is_uuid(*m.invocation_id))
    r.fail("invocation_id '" + *m.invocation_id + "' is not a UUID");
  m.function_id = r.required_string("function_id");
  if (auto* d = obj.if_contains("data")) m.data = std::move(*d);
  m.traceparent = r.optional_string("traceparent");
  m.baggage = r.optional_string("baggage");
  m.action = read_action(r, obj);
  m.metadata = r.optional_value("metadata");
  if (!r.ok()) return DecodeError{r.error(), "invokefunction", m.invocation_id, function_id};
  return Message(std::move(m));
}

// Builds the value as Boost's json::parser does (its detail::handler), except for numbers with
// a fraction or an exponent. Boost 1.81 converts those with a fast method that is not correctly
// rounded (1.8446744073701114e82 comes out one ulp off), so a double could reach the executor
// changed; and it reads 1e400 as infinity and 0e400 as NaN, which it writes as `Infinity` and
// `NaN`, not JSON. Here the number's text is converted with std::from_chars (correctly rounded,
// as serde_json does), and a magnitude beyond the double range is refused, as serde_json does
// ("number out of range"); an underflow becomes 0 (or Boost's subnormal), as there.
struct ValueBuilder {
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  using error_code = boost::system::error_code;
  using string_view = json::string_view;

  json::value_stack st;
  std::string number;  // the start of a number cut by the end of a write (on_number_part)
  bool out_of_range = false;

  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_object_begin(error_code&) { return true; }
  bool on_object_end(std::size_t n, error_code&) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(error_code&) { return true; }
  bool on_array_end(std::size_t n, error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(string_view s, std::size_t, error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_key(string_view s, std::size_t, error_code&) {
    st.push_key(s);
    return true;
  }
  bool on_string_part(string_view s, std::size_t, error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_string(string_view s, std::size_t, error_code&) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(string_view s, error_code&) {
    number.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, string_view, error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, string_view, error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double boost_value, string_view s, error_code& ec) {
    std::string_view text(s.data(), s.size());
    if (!number.empty()) {
      number.append(text);
      text = number;
    }
    double v = boost_value;
    const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), v);
    number.clear();
    if (err == std::errc::result_out_of_range) {
      if (!std::isfinite(boost_value) || std::fabs(boost_value) >= 1.0) {
        out_of_range = true;
        ec = json::error::exponent_overflow;
        return false;
      }
      v = boost_value;  // an underflow
    } else if (err != std::errc() || end != text.data() + text.size()) {
      v = boost_value;  // not expected for text the parser accepted
    }
    if (!std::isfinite(v)) {
      out_of_range = true;
      ec = json::error::exponent_overflow;
      return false;
    }
    st.push_double(v);
    return true;
  }
  bool on_bool(bool b, error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }
};

}  // namespace

bool is_uuid(std::string_view s) { return Uuid::parse(s).has_value(); }

json::parse_options json_parse_options() {
  json::parse_options o;
  o.max_depth = kMaxJsonDepth + 1;  // the frame's own object is one level
  return o;
}

namespace {

// Top-level string fields of a JSON object, read without building it: nested values are
// skipped with a depth counter, so input of any depth costs no recursion (Boost.JSON's parser
// recurses once per level, which is why frames are parsed with a depth limit at all).
class TopLevelScanner {
 public:
  explicit TopLevelScanner(std::string_view text) : s_(text) {}

  // Calls `on_string(key, value)` for each top-level string member. False if not an object.
  template <typename Fn>
  bool scan(Fn on_string) {
    skip_ws();
    if (!eat('{')) return false;
    skip_ws();
    if (eat('}')) return true;
    while (pos_ < s_.size()) {
      std::optional<std::string> key = read_string();
      skip_ws();
      if (!key || !eat(':')) return false;
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == '"') {
        std::optional<std::string> value = read_string();
        if (!value) return false;
        on_string(*key, *value);
      } else if (!skip_value()) {
        return false;
      }
      skip_ws();
      if (eat('}')) return true;
      if (!eat(',')) return false;
      skip_ws();
    }
    return false;
  }

 private:
  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  // Position just past the string literal starting at `pos_`, or npos.
  size_t string_end() const {
    for (size_t i = pos_ + 1; i < s_.size(); ++i) {
      if (s_[i] == '\\')
        ++i;
      else if (s_[i] == '"')
        return i + 1;
    }
    return std::string_view::npos;
  }
  std::optional<std::string> read_string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') return std::nullopt;
    const size_t end = string_end();
    if (end == std::string_view::npos) return std::nullopt;
    boost::system::error_code ec;
    json::value v = json::parse(s_.substr(pos_, end - pos_), ec);  // one flat literal
    pos_ = end;
    if (ec || !v.is_string()) return std::nullopt;
    return std::string(v.get_string());
  }
  // Skips a number, literal, array or object (strings inside included).
  bool skip_value() {
    size_t depth = 0;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == '"') {
        const size_t end = string_end();
        if (end == std::string_view::npos) return false;
        pos_ = end;
      } else if (c == '[' || c == '{') {
        ++depth;
        ++pos_;
      } else if (c == ']' || c == '}') {
        if (depth == 0) return true;  // the end of the enclosing object
        --depth;
        ++pos_;
      } else if (c == ',' && depth == 0) {
        return true;
      } else {
        ++pos_;
      }
    }
    return false;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

// A frame too deep to decode may still be an invokefunction whose caller waits for an answer.
DecodeError too_deep_error(std::string_view frame) {
  DecodeError e{"JSON nesting is deeper than the limit of " + std::to_string(kMaxJsonDepth) +
                    " levels inside a message",
                "", std::nullopt, std::nullopt};
  std::optional<std::string> invocation_id, function_id;
  TopLevelScanner(frame).scan([&](const std::string& key, std::string& value) {
    if (key == "type")
      e.type = std::move(value);
    else if (key == "invocation_id")
      invocation_id = std::move(value);
    else if (key == "function_id")
      function_id = std::move(value);
  });
  if (e.type == "invokefunction") {
    e.invocation_id = std::move(invocation_id);
    e.function_id = std::move(function_id);
  }
  return e;
}

}  // namespace

DecodeResult decode(std::string_view frame) {
  // One parser per thread: its internal stack is kept from one message to the next instead of
  // being allocated for each (json::parse builds a new parser every call).
  thread_local json::basic_parser<ValueBuilder> parser{json_parse_options()};
  boost::system::error_code ec;
  parser.reset();
  ValueBuilder& builder = parser.handler();
  builder.st.reset();
  builder.number.clear();
  builder.out_of_range = false;
  const size_t n = parser.write_some(false, frame.data(), frame.size(), ec);
  if (!ec && n < frame.size()) ec = json::error::extra_data;
  if (ec == json::error::too_deep) return too_deep_error(frame);
  if (builder.out_of_range)
    return DecodeError{"malformed JSON: number out of range", "", std::nullopt, std::nullopt};
  if (ec) return DecodeError{"malformed JSON: " + ec.message(), "", std::nullopt, std::nullopt};
  json::value v = builder.st.release();
  if (!v.is_object())
    return DecodeError{"a message must be a JSON object", "", std::nullopt, std::nullopt};
  return decode(std::move(v.get_object()));
}

DecodeResult decode(json::object&& obj) {
  auto* tv = obj.if_contains("type");
  if (!tv || !tv->is_string())
    return DecodeError{"missing string field 'type'", "", std::nullopt, std::nullopt};
  const std::string type(tv->get_string());
  Reader r(obj);

  if (type == "invokefunction") return decode_invoke(r, obj);
  if (type == "invocationresult") {
    InvocationResult m;
    m.invocation_id = r.required_string("invocation_id");
    if (r.ok() && !is_uuid(m.invocation_id))
      r.fail("invocation_id '" + m.invocation_id + "' is not a UUID");
    m.function_id = r.required_string("function_id");
    m.result = r.present_value("result");
    m.error = r.optional_error("error");
    m.traceparent = r.optional_string("traceparent");
    m.baggage = r.optional_string("baggage");
    return finish(r, type, std::move(m));
  }
  if (type == "registerfunction") {
    RegisterFunction m;
    m.id = r.required_string("id");
    if (r.ok() && m.id.empty()) r.fail("field 'id' must not be empty");
    m.description = r.optional_string("description");
    m.request_format = r.optional_value("request_format");
    m.response_format = r.optional_value("response_format");
    m.metadata = r.optional_value("metadata");
    m.invocation = r.optional_value("invocation");
    if (m.invocation && !m.invocation->is_object()) r.fail("field 'invocation' must be an object");
    return finish(r, type, std::move(m));
  }
  if (type == "unregisterfunction") {
    UnregisterFunction m;
    m.id = r.required_string("id");
    return finish(r, type, std::move(m));
  }
  if (type == "registertriggertype") {
    RegisterTriggerType m;
    m.id = r.required_string("id");
    if (r.ok() && m.id.empty()) r.fail("field 'id' must not be empty");
    m.description = r.optional_string("description").value_or("");
    m.trigger_request_format = r.optional_value("trigger_request_format");
    m.call_request_format = r.optional_value("call_request_format");
    return finish(r, type, std::move(m));
  }
  if (type == "unregistertriggertype") {
    UnregisterTriggerType m;
    m.id = r.required_string("id");
    return finish(r, type, std::move(m));
  }
  if (type == "registertrigger") {
    RegisterTrigger m;
    m.id = r.required_string("id");
    m.trigger_type = r.required_string("trigger_type");
    m.function_id = r.required_string("function_id");
    // The Node SDK omits config when the user passed none; treat it as an empty object.
    if (auto c = r.optional_value("config"))
      m.config = std::move(*c);
    else
      m.config = json::object();
    m.metadata = r.optional_value("metadata");
    return finish(r, type, std::move(m));
  }
  if (type == "unregistertrigger") {
    UnregisterTrigger m;
    m.id = r.required_string("id");
    m.trigger_type = r.optional_string("trigger_type");
    return finish(r, type, std::move(m));
  }
  if (type == "triggerregistrationresult") {
    TriggerRegistrationResult m;
    m.id = r.required_string("id");
    m.trigger_type = r.optional_string("trigger_type").value_or("");
    m.function_id = r.optional_string("function_id").value_or("");
    m.error = r.optional_error("error");
    return finish(r, type, std::move(m));
  }
  if (type == "registerservice") {
    RegisterService m;
    m.id = r.required_string("id");
    m.name = r.optional_string("name").value_or("");
    if (m.name.empty()) m.name = m.id;
    m.description = r.optional_string("description");
    m.parent_service_id = r.optional_string("parent_service_id");
    return finish(r, type, std::move(m));
  }
  if (type == "ping") return Message(Ping{});
  if (type == "pong") return Message(Pong{});
  if (type == "workerregistered") {
    WorkerRegistered m;
    m.worker_id = r.optional_string("worker_id").value_or("");
    m.reattach_token = r.optional_string("reattach_token");
    return finish(r, type, std::move(m));
  }
  if (type == "reattach") {
    Reattach m;
    m.previous_worker_id = r.required_string("previous_worker_id");
    m.reattach_token = r.optional_string("reattach_token");
    return finish(r, type, std::move(m));
  }
  return DecodeError{"unknown message type '" + type + "'", type, std::nullopt, std::nullopt};
}

json::object error_to_json(const ErrorBody& e) {
  json::object o;
  o["code"] = e.code;
  o["message"] = e.message;
  if (e.stacktrace) o["stacktrace"] = *e.stacktrace;
  return o;
}

namespace {

// Writes one JSON object field by field straight into `out`, so large values are serialised
// once with no intermediate json::object copy. Fields appear in call order, as they did with
// json::object, keeping the bytes identical to the former json::serialize output.
class ObjectWriter {
 public:
  explicit ObjectWriter(std::string& out) : out_(out) { out_ += '{'; }

  ObjectWriter& str(std::string_view key, std::string_view s) {
    this->key(key);
    append_json_string(out_, s);
    return *this;
  }
  ObjectWriter& val(std::string_view key, const json::value& v) {
    this->key(key);
    append_json(out_, v);
    return *this;
  }
  ObjectWriter& raw(std::string_view key, std::string_view json_text) {
    this->key(key);
    out_.append(json_text);
    return *this;
  }
  ObjectWriter& opt(std::string_view key, const std::optional<std::string>& s) {
    if (s) str(key, *s);
    return *this;
  }
  ObjectWriter& opt(std::string_view key, const std::optional<json::value>& v) {
    if (v) val(key, *v);
    return *this;
  }
  // Starts a nested object under `key`; close() it before writing the next field here.
  ObjectWriter nested(std::string_view key) {
    this->key(key);
    return ObjectWriter(out_);
  }
  // Same shape as error_to_json.
  ObjectWriter& error(std::string_view key, const ErrorBody& e) {
    nested(key)
        .str("code", e.code)
        .str("message", e.message)
        .opt("stacktrace", e.stacktrace)
        .close();
    return *this;
  }
  void close() { out_ += '}'; }

 private:
  // Keys are the protocol's own field names, plain ASCII: written without an escape scan.
  void key(std::string_view k) {
    assert(k.find_first_of("\\\"") == std::string_view::npos);
    // `,"key":` in one append (libstdc++'s append is an out-of-line call).
    char buf[64];
    if (k.size() > sizeof(buf) - 4) {  // no protocol key is this long
      out_.append(first_ ? "\"" : ",\"");
      out_.append(k);
      out_.append("\":", 2);
      first_ = false;
      return;
    }
    char* d = buf;
    if (!first_) *d++ = ',';
    *d++ = '"';
    std::memcpy(d, k.data(), k.size());
    d += k.size();
    *d++ = '"';
    *d++ = ':';
    out_.append(buf, static_cast<size_t>(d - buf));
    first_ = false;
  }

  std::string& out_;
  bool first_ = true;
};

size_t opt_size(const std::optional<std::string>& s) { return s ? s->size() : 0; }

}  // namespace

std::string encode_worker_registered(std::string_view worker_id) {
  std::string out;
  out.reserve(48 + worker_id.size());
  ObjectWriter(out).str("type", "workerregistered").str("worker_id", worker_id).close();
  return out;
}

std::string encode_worker_registered(std::string_view worker_id, std::string_view reattach_token) {
  std::string out;
  out.reserve(72 + worker_id.size() + reattach_token.size());
  ObjectWriter(out)
      .str("type", "workerregistered")
      .str("worker_id", worker_id)
      .str("reattach_token", reattach_token)
      .close();
  return out;
}

std::string encode_pong() { return R"({"type":"pong"})"; }

std::string encode_invoke(std::string_view invocation_id, std::string_view function_id,
                          const json::value& data, const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage,
                          const std::optional<json::value>& metadata) {
  // The (possibly MiB-sized) data is written once, straight into the frame; reserving up
  // front spares a regrow-and-copy of the whole frame when the closing fields are appended.
  std::string out;
  out.reserve(128 + invocation_id.size() + function_id.size() + opt_size(traceparent) +
              opt_size(baggage) + json_size_hint(data));
  ObjectWriter(out)
      .str("type", "invokefunction")
      .str("invocation_id", invocation_id)
      .str("function_id", function_id)
      .val("data", data)
      .opt("traceparent", traceparent)
      .opt("baggage", baggage)
      .opt("metadata", metadata)
      .close();
  return out;
}

std::string encode_result(std::string_view invocation_id, std::string_view function_id,
                          const std::optional<json::value>& result,
                          const std::optional<ErrorBody>& error,
                          const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage) {
  std::string out;
  size_t hint =
      128 + invocation_id.size() + function_id.size() + opt_size(traceparent) + opt_size(baggage);
  if (error)
    hint += error->code.size() + error->message.size() + opt_size(error->stacktrace);
  else if (result)
    hint += json_size_hint(*result);
  out.reserve(hint);
  ObjectWriter w(out);
  w.str("type", "invocationresult")
      .str("invocation_id", invocation_id)
      .str("function_id", function_id);
  if (error)
    w.error("error", *error);
  else if (result)
    w.val("result", *result);
  w.opt("traceparent", traceparent).opt("baggage", baggage).close();
  return out;
}

std::string encode_result_raw(std::string_view invocation_id, std::string_view function_id,
                              std::string_view result_json,
                              const std::optional<std::string>& traceparent,
                              const std::optional<std::string>& baggage) {
  std::string out;
  out.reserve(128 + invocation_id.size() + function_id.size() + opt_size(traceparent) +
              opt_size(baggage) + result_json.size());
  ObjectWriter(out)
      .str("type", "invocationresult")
      .str("invocation_id", invocation_id)
      .str("function_id", function_id)
      .raw("result", result_json)
      .opt("traceparent", traceparent)
      .opt("baggage", baggage)
      .close();
  return out;
}

std::string encode_register_trigger(const RegisterTrigger& t) {
  std::string out;
  out.reserve(128 + t.id.size() + t.trigger_type.size() + t.function_id.size() +
              json_size_hint(t.config));
  ObjectWriter(out)
      .str("type", "registertrigger")
      .str("id", t.id)
      .str("trigger_type", t.trigger_type)
      .str("function_id", t.function_id)
      .val("config", t.config)
      .opt("metadata", t.metadata)
      .close();
  return out;
}

std::string encode_unregister_trigger(std::string_view id, std::string_view trigger_type) {
  std::string out;
  out.reserve(64 + id.size() + trigger_type.size());
  ObjectWriter(out)
      .str("type", "unregistertrigger")
      .str("id", id)
      .str("trigger_type", trigger_type)
      .close();
  return out;
}

std::string encode_error_frame(std::string_view code, std::string_view message) {
  std::string out;
  out.reserve(64 + code.size() + message.size());
  ObjectWriter w(out);
  w.str("type", "error").nested("error").str("code", code).str("message", message).close();
  w.close();
  return out;
}

namespace {

// Client-side (worker -> engine) messages, one overload per alternative.
struct Encoder {
  std::string& out;

  void operator()(const RegisterFunction& m) {
    ObjectWriter(out)
        .str("type", "registerfunction")
        .str("id", m.id)
        .opt("description", m.description)
        .opt("request_format", m.request_format)
        .opt("response_format", m.response_format)
        .opt("metadata", m.metadata)
        .opt("invocation", m.invocation)
        .close();
  }
  void operator()(const UnregisterFunction& m) {
    ObjectWriter(out).str("type", "unregisterfunction").str("id", m.id).close();
  }
  void operator()(const InvokeFunction& m) {
    out.reserve(160 + m.function_id.size() + json_size_hint(m.data));
    ObjectWriter w(out);
    w.str("type", "invokefunction")
        .opt("invocation_id", m.invocation_id)
        .str("function_id", m.function_id)
        .val("data", m.data)
        .opt("traceparent", m.traceparent)
        .opt("baggage", m.baggage)
        .opt("metadata", m.metadata);
    if (m.action.type == ActionType::kVoid) w.nested("action").str("type", "void").close();
    if (m.action.type == ActionType::kEnqueue)
      w.nested("action").str("type", "enqueue").str("queue", m.action.queue).close();
    w.close();
  }
  void operator()(const InvocationResult& m) {
    if (!m.error && m.result) out.reserve(160 + m.function_id.size() + json_size_hint(*m.result));
    ObjectWriter w(out);
    w.str("type", "invocationresult")
        .str("invocation_id", m.invocation_id)
        .str("function_id", m.function_id);
    if (m.error)
      w.error("error", *m.error);
    else
      w.opt("result", m.result);
    w.opt("traceparent", m.traceparent).opt("baggage", m.baggage).close();
  }
  void operator()(const RegisterTriggerType& m) {
    ObjectWriter(out)
        .str("type", "registertriggertype")
        .str("id", m.id)
        .str("description", m.description)
        .opt("trigger_request_format", m.trigger_request_format)
        .opt("call_request_format", m.call_request_format)
        .close();
  }
  void operator()(const UnregisterTriggerType& m) {
    ObjectWriter(out).str("type", "unregistertriggertype").str("id", m.id).close();
  }
  void operator()(const RegisterTrigger& m) { out = encode_register_trigger(m); }
  void operator()(const UnregisterTrigger& m) {
    ObjectWriter(out)
        .str("type", "unregistertrigger")
        .str("id", m.id)
        .opt("trigger_type", m.trigger_type)
        .close();
  }
  void operator()(const TriggerRegistrationResult& m) {
    ObjectWriter w(out);
    w.str("type", "triggerregistrationresult")
        .str("id", m.id)
        .str("trigger_type", m.trigger_type)
        .str("function_id", m.function_id);
    if (m.error) w.error("error", *m.error);
    w.close();
  }
  void operator()(const RegisterService& m) {
    ObjectWriter(out)
        .str("type", "registerservice")
        .str("id", m.id)
        .str("name", m.name)
        .opt("description", m.description)
        .opt("parent_service_id", m.parent_service_id)
        .close();
  }
  void operator()(const Ping&) { out = R"({"type":"ping"})"; }
  void operator()(const Pong&) { out = encode_pong(); }
  void operator()(const WorkerRegistered& m) {
    out = m.reattach_token ? encode_worker_registered(m.worker_id, *m.reattach_token)
                           : encode_worker_registered(m.worker_id);
  }
  void operator()(const Reattach& m) {
    ObjectWriter(out)
        .str("type", "reattach")
        .str("previous_worker_id", m.previous_worker_id)
        .opt("reattach_token", m.reattach_token)
        .close();
  }
};

}  // namespace

std::string encode(const Message& m) {
  std::string out;
  std::visit(Encoder{out}, m);
  return out;
}

}  // namespace iii::protocol
