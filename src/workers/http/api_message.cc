#include "workers/http/api_message.h"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <chrono>
#include <cstdio>

#include "protocol/json_writer.h"

namespace iii::workers::http {

namespace json = boost::json;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;  // continuation bytes
    if (c < 0x80)
      n = 0;
    else if ((c & 0xe0) == 0xc0)
      n = 1;
    else if ((c & 0xf0) == 0xe0)
      n = 2;
    else if ((c & 0xf8) == 0xf0)
      n = 3;
    else
      return false;
    if (n > s.size() - i - 1) return false;
    for (size_t k = 1; k <= n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += n + 1;
  }
  return true;
}

std::string header_value_of(const HeaderList& headers, std::string_view name) {
  std::string out;
  for (const auto& [k, v] : headers)
    if (lower(k) == name) out = v;
  return out;
}

}  // namespace

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool token = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!token) return false;
  }
  return true;
}

bool valid_header_value(std::string_view value) {
  for (char c : value)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

json::object query_params(std::string_view target) {
  json::object out;
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return out;
  const std::string form = "/?" + std::string(target.substr(q + 1));  // the view refers to it
  auto parsed = boost::urls::parse_origin_form(form);
  if (!parsed) return out;
  boost::urls::encoding_opts opts;
  opts.space_as_plus = true;
  for (const auto& p : parsed->params(opts)) {
    if (p.key.empty() && !p.has_value) continue;
    out[p.key] = p.has_value ? json::string(p.value) : json::string();
  }
  return out;
}

json::object make_api_request(std::string_view method, std::string_view target,
                              const HeaderList& headers, std::string_view api_path,
                              const HeaderList& path_params, json::value body) {
  json::object req;
  req["query_params"] = query_params(target);
  json::object params;
  for (const auto& [k, v] : path_params) params[k] = v;
  req["path_params"] = std::move(params);
  json::object hs;
  for (const auto& [k, v] : headers) hs[lower(k)] = valid_utf8(v) ? v : std::string();
  req["headers"] = std::move(hs);
  req["path"] = api_path;
  req["method"] = method;
  req["body"] = std::move(body);
  req["trigger"] = json::object{{"type", "http"}, {"path", api_path}, {"method", method}};
  return req;
}

EncodedResponse encode_api_response(const json::value& result) {
  EncodedResponse r;
  const json::object* o = result.if_object();
  static const json::object kEmpty;
  if (!o) o = &kEmpty;
  if (const auto* sc = o->if_contains("status_code")) {
    int64_t code = 0;
    if (sc->is_int64())
      code = sc->get_int64();
    else if (sc->is_uint64())
      code = static_cast<int64_t>(std::min<uint64_t>(sc->get_uint64(), 1000));
    else if (sc->is_double() &&
             sc->get_double() == static_cast<double>(static_cast<int64_t>(sc->get_double())))
      code = static_cast<int64_t>(sc->get_double());
    if (code >= 100 && code <= 599) r.status = static_cast<unsigned>(code);
  }
  if (const auto* h = o->if_contains("headers")) {
    auto add = [&](std::string_view name, std::string_view value) {
      if (valid_header_name(name) && valid_header_value(value))
        r.headers.emplace_back(std::string(name), std::string(value));
    };
    if (const auto* arr = h->if_array()) {
      for (const auto& item : *arr) {
        if (!item.is_string()) continue;
        std::string_view line = item.get_string();
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view name = line.substr(0, colon), value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
          value.remove_prefix(1);
        while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
        add(name, value);
      }
    } else if (const auto* obj = h->if_object()) {
      for (const auto& kv : *obj)
        if (kv.value().is_string()) add(kv.key(), kv.value().get_string());
    }
  }
  const json::value* body = o->if_contains("body");
  static const json::value kDefaultBody = json::object();
  if (!body) body = &kDefaultBody;
  const std::string content_type = header_value_of(r.headers, "content-type");
  if (body->is_null()) {
    r.body.clear();
  } else if (!content_type.empty() && body->is_string()) {
    r.body = std::string(body->get_string());
  } else {
    // The engine's JSON writer: the same bytes as json::serialize, ~10x faster on big strings.
    protocol::append_json(r.body, *body);
    if (content_type.empty()) r.headers.emplace_back("content-type", "application/json");
  }
  return r;
}

EncodedResponse error_response(unsigned status, std::string_view message, json::object extra) {
  EncodedResponse r;
  r.status = status;
  // "error" first, as a person reads it.
  json::object ordered;
  ordered["error"] = message;
  for (auto& kv : extra)
    if (kv.key() != "error") ordered[kv.key()] = kv.value();
  protocol::append_json(r.body, json::value(std::move(ordered)));
  r.headers.emplace_back("content-type", "application/json");
  return r;
}

std::string make_error_id() {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  char buf[20];
  std::snprintf(buf, sizeof buf, "%llx",
                static_cast<unsigned long long>(static_cast<uint64_t>(ns) & 0xffffffffffffULL));
  return buf;
}

}  // namespace iii::workers::http
