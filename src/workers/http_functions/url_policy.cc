#include "workers/http_functions/url_policy.h"

#include <arpa/inet.h>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>

namespace iii::workers::http_functions {

namespace {

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool private_v4(const boost::asio::ip::address_v4& a) {
  const uint32_t v = a.to_uint();
  auto in = [v](uint32_t net, int bits) {
    const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    return (v & mask) == net;
  };
  return in(0x00000000, 8)      // "this network", 0.0.0.0 included
         || in(0x7F000000, 8)   // loopback
         || in(0x0A000000, 8)   // RFC 1918
         || in(0xAC100000, 12)  // RFC 1918
         || in(0xC0A80000, 16)  // RFC 1918
         || in(0xA9FE0000, 16)  // link-local (cloud metadata services live here)
         || in(0xC0000200, 24)  // documentation TEST-NET-1
         || in(0xC6336400, 24)  // TEST-NET-2
         || in(0xCB007100, 24)  // TEST-NET-3
         || v == 0xFFFFFFFF;    // broadcast
}

bool private_v6(const boost::asio::ip::address_v6& a) {
  const auto b = a.to_bytes();
  if (a.is_v4_mapped())
    return private_v4(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a));
  bool first12_zero = true;
  for (int i = 0; i < 12; ++i) first12_zero = first12_zero && b[i] == 0;
  if (first12_zero) {  // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
    if (a.is_unspecified() || a.is_loopback()) return true;
    return private_v4(boost::asio::ip::address_v4({b[12], b[13], b[14], b[15]}));
  }
  // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
  static constexpr unsigned char kNat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  bool nat64 = true;
  for (int i = 0; i < 12; ++i) nat64 = nat64 && b[i] == kNat64[i];
  if (nat64) return private_v4(boost::asio::ip::address_v4({b[12], b[13], b[14], b[15]}));
  return (b[0] & 0xFE) == 0xFC                       // unique local fc00::/7
         || (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)  // link-local fe80::/10
         || b[0] == 0xFF;                            // multicast
}

}  // namespace

bool is_private_address(const boost::asio::ip::address& a) {
  return a.is_v4() ? private_v4(a.to_v4()) : private_v6(a.to_v6());
}

bool glob_match(std::string_view p, std::string_view t) {
  // Iterative matcher with one backtrack point for the last `*`.
  size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && (p[pi] == '?' || lower(p[pi]) == lower(t[ti]))) {
      ++pi;
      ++ti;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

Checked check_url(std::string_view url, const SecurityPolicy& policy) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return {std::nullopt, "Invalid URL"};
  const boost::urls::url_view u = *parsed;
  const auto scheme = u.scheme_id();
  if (scheme != boost::urls::scheme::http && scheme != boost::urls::scheme::https)
    return {std::nullopt, "Invalid URL"};
  if (!u.has_authority() || u.has_userinfo()) return {std::nullopt, "Invalid URL"};
  Target t;
  t.https = scheme == boost::urls::scheme::https;
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      t.literal = boost::asio::ip::address(
          boost::asio::ip::make_address_v4(u.host_ipv4_address().to_uint()));
      t.host = t.literal->to_string();
      break;
    case boost::urls::host_type::ipv6: {
      boost::asio::ip::address_v6::bytes_type bytes;
      const auto src = u.host_ipv6_address().to_bytes();
      std::copy(src.begin(), src.end(), bytes.begin());
      t.literal = boost::asio::ip::address(boost::asio::ip::address_v6(bytes));
      t.host = t.literal->to_string();
      break;
    }
    case boost::urls::host_type::name: {
      const auto h = u.encoded_host();
      const std::string_view hv(h.data(), h.size());
      if (hv.empty() || hv.find('%') != std::string_view::npos)
        return {std::nullopt, "Invalid URL"};
      t.host = lowercase(hv);
      // Numeric forms the resolver reads as IPv4 (127.1, 2130706433, 0x7f.1) are addresses.
      in_addr a4{};
      if (inet_aton(t.host.c_str(), &a4) == 1)
        t.literal = boost::asio::ip::address(boost::asio::ip::address_v4(ntohl(a4.s_addr)));
      break;
    }
    default:
      return {std::nullopt, "Invalid URL"};
  }
  if (policy.require_https && !t.https) return {std::nullopt, "HTTPS is required"};

  const std::string bracketed = t.literal && t.literal->is_v6() ? "[" + t.host + "]" : t.host;
  bool allowed = false;
  for (const auto& pattern : policy.url_allowlist)
    if (glob_match(pattern, t.host) || glob_match(pattern, bracketed)) {
      allowed = true;
      break;
    }
  if (!allowed) return {std::nullopt, "URL not in allowlist"};

  if (policy.block_private_ips) {
    const bool local_name =
        t.host == "localhost" || (t.host.size() > 10 && t.host.ends_with(".localhost"));
    if (local_name || (t.literal && is_private_address(*t.literal)))
      return {std::nullopt, "Private IP blocked"};
  }
  t.port = u.has_port() ? std::string(u.port()) : (t.https ? "443" : "80");
  if (t.port.empty() || t.port.size() > 5 ||
      t.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(t.port) == 0 ||
      std::stoul(t.port) > 65535)
    return {std::nullopt, "Invalid URL"};
  const auto target = u.encoded_target();
  t.target = target.empty() ? "/" : std::string(target.data(), target.size());
  if (t.target.front() != '/') t.target = "/" + t.target;
  t.host_header = bracketed;
  if (u.has_port()) t.host_header += ":" + t.port;
  return {std::move(t), {}};
}

net::HttpClientHooks client_hooks(const SecurityPolicy& policy) {
  net::HttpClientHooks hooks;
  if (!policy.block_private_ips) return hooks;
  hooks.check_address =
      [](const boost::asio::ip::address& a) -> std::optional<net::OutboundFailure> {
    if (is_private_address(a))
      return net::OutboundFailure{"url_validation_failed", "Private IP blocked"};
    return std::nullopt;
  };
  hooks.dns_failure = [](const std::string&, const std::string&) {
    return net::OutboundFailure{"url_validation_failed", "DNS lookup failed"};
  };
  return hooks;
}

}  // namespace iii::workers::http_functions
