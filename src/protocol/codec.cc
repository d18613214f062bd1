#include "protocol/codec.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace iii::protocol {
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

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

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
  if (!r.ok()) return DecodeError{r.error(), "invokefunction", m.invocation_id, function_id};
  return Message(std::move(m));
}

}  // namespace

bool is_uuid(std::string_view s) {
  if (s.size() == 45 && (s.substr(0, 9) == "urn:uuid:" || s.substr(0, 9) == "URN:UUID:"))
    s.remove_prefix(9);
  if (s.size() == 38 && s.front() == '{' && s.back() == '}') s = s.substr(1, 36);
  if (s.size() == 32) {
    for (char c : s)
      if (!is_hex(c)) return false;
    return true;
  }
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!is_hex(s[i])) {
      return false;
    }
  }
  return true;
}

DecodeResult decode(std::string_view frame) {
  boost::system::error_code ec;
  json::value v = json::parse(frame, ec);
  if (ec) return DecodeError{"malformed JSON: " + ec.message(), "", std::nullopt, std::nullopt};
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
    if (auto c = r.optional_value("config")) m.config = std::move(*c);
    else m.config = json::object();
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

std::string encode_worker_registered(std::string_view worker_id) {
  json::object o;
  o["type"] = "workerregistered";
  o["worker_id"] = worker_id;
  return json::serialize(o);
}

std::string encode_pong() { return R"({"type":"pong"})"; }

std::string encode_invoke(std::string_view invocation_id, std::string_view function_id,
                          const json::value& data, const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage) {
  // Serialised by hand around the payload so the (possibly large) data is written once
  // without building a second object tree.
  std::string out;
  std::string payload = json::serialize(data);
  out.reserve(payload.size() + function_id.size() + 160);
  out += R"({"type":"invokefunction","invocation_id":)";
  out += json::serialize(json::string_view(invocation_id));
  out += R"(,"function_id":)";
  out += json::serialize(json::string_view(function_id));
  out += R"(,"data":)";
  out += payload;
  if (traceparent) {
    out += R"(,"traceparent":)";
    out += json::serialize(json::string_view(*traceparent));
  }
  if (baggage) {
    out += R"(,"baggage":)";
    out += json::serialize(json::string_view(*baggage));
  }
  out += '}';
  return out;
}

std::string encode_result(std::string_view invocation_id, std::string_view function_id,
                          const std::optional<json::value>& result,
                          const std::optional<ErrorBody>& error,
                          const std::optional<std::string>& traceparent,
                          const std::optional<std::string>& baggage) {
  std::string out;
  std::string payload = result ? json::serialize(*result) : std::string();
  out.reserve(payload.size() + function_id.size() + 160);
  out += R"({"type":"invocationresult","invocation_id":)";
  out += json::serialize(json::string_view(invocation_id));
  out += R"(,"function_id":)";
  out += json::serialize(json::string_view(function_id));
  if (error) {
    out += R"(,"error":)";
    out += json::serialize(error_to_json(*error));
  } else if (result) {
    out += R"(,"result":)";
    out += payload;
  }
  if (traceparent) {
    out += R"(,"traceparent":)";
    out += json::serialize(json::string_view(*traceparent));
  }
  if (baggage) {
    out += R"(,"baggage":)";
    out += json::serialize(json::string_view(*baggage));
  }
  out += '}';
  return out;
}

std::string encode_register_trigger(const RegisterTrigger& t) {
  json::object o;
  o["type"] = "registertrigger";
  o["id"] = t.id;
  o["trigger_type"] = t.trigger_type;
  o["function_id"] = t.function_id;
  o["config"] = t.config;
  if (t.metadata) o["metadata"] = *t.metadata;
  return json::serialize(o);
}

std::string encode_unregister_trigger(std::string_view id, std::string_view trigger_type) {
  json::object o;
  o["type"] = "unregistertrigger";
  o["id"] = id;
  o["trigger_type"] = trigger_type;
  return json::serialize(o);
}

std::string encode_error_frame(std::string_view code, std::string_view message) {
  json::object e;
  e["code"] = code;
  e["message"] = message;
  json::object o;
  o["type"] = "error";
  o["error"] = std::move(e);
  return json::serialize(o);
}

namespace {
void put_opt(json::object& o, std::string_view k, const std::optional<std::string>& v) {
  if (v) o[k] = *v;
}
void put_opt(json::object& o, std::string_view k, const std::optional<json::value>& v) {
  if (v) o[k] = *v;
}
struct Encoder {
  json::object o;
  void operator()(const RegisterFunction& m) {
    o["type"] = "registerfunction";
    o["id"] = m.id;
    put_opt(o, "description", m.description);
    put_opt(o, "request_format", m.request_format);
    put_opt(o, "response_format", m.response_format);
    put_opt(o, "metadata", m.metadata);
    put_opt(o, "invocation", m.invocation);
  }
  void operator()(const UnregisterFunction& m) {
    o["type"] = "unregisterfunction";
    o["id"] = m.id;
  }
  void operator()(const InvokeFunction& m) {
    o["type"] = "invokefunction";
    put_opt(o, "invocation_id", m.invocation_id);
    o["function_id"] = m.function_id;
    o["data"] = m.data;
    put_opt(o, "traceparent", m.traceparent);
    put_opt(o, "baggage", m.baggage);
    if (m.action.type == ActionType::kVoid) o["action"] = {{"type", "void"}};
    if (m.action.type == ActionType::kEnqueue)
      o["action"] = {{"type", "enqueue"}, {"queue", m.action.queue}};
  }
  void operator()(const InvocationResult& m) {
    o["type"] = "invocationresult";
    o["invocation_id"] = m.invocation_id;
    o["function_id"] = m.function_id;
    if (m.error) o["error"] = error_to_json(*m.error);
    else put_opt(o, "result", m.result);
    put_opt(o, "traceparent", m.traceparent);
    put_opt(o, "baggage", m.baggage);
  }
  void operator()(const RegisterTriggerType& m) {
    o["type"] = "registertriggertype";
    o["id"] = m.id;
    o["description"] = m.description;
    put_opt(o, "trigger_request_format", m.trigger_request_format);
    put_opt(o, "call_request_format", m.call_request_format);
  }
  void operator()(const UnregisterTriggerType& m) {
    o["type"] = "unregistertriggertype";
    o["id"] = m.id;
  }
  void operator()(const RegisterTrigger& m) {
    o["type"] = "registertrigger";
    o["id"] = m.id;
    o["trigger_type"] = m.trigger_type;
    o["function_id"] = m.function_id;
    o["config"] = m.config;
    put_opt(o, "metadata", m.metadata);
  }
  void operator()(const UnregisterTrigger& m) {
    o["type"] = "unregistertrigger";
    o["id"] = m.id;
    put_opt(o, "trigger_type", m.trigger_type);
  }
  void operator()(const TriggerRegistrationResult& m) {
    o["type"] = "triggerregistrationresult";
    o["id"] = m.id;
    o["trigger_type"] = m.trigger_type;
    o["function_id"] = m.function_id;
    if (m.error) o["error"] = error_to_json(*m.error);
  }
  void operator()(const RegisterService& m) {
    o["type"] = "registerservice";
    o["id"] = m.id;
    o["name"] = m.name;
    put_opt(o, "description", m.description);
    put_opt(o, "parent_service_id", m.parent_service_id);
  }
  void operator()(const Ping&) { o["type"] = "ping"; }
  void operator()(const Pong&) { o["type"] = "pong"; }
  void operator()(const WorkerRegistered& m) {
    o["type"] = "workerregistered";
    o["worker_id"] = m.worker_id;
  }
};
}  // namespace

std::string encode(const Message& m) {
  Encoder e;
  std::visit(e, m);
  return json::serialize(e.o);
}

}  // namespace iii::protocol
