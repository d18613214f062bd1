// iii-http-functions `security` policy: which URLs an HTTP-invoked function may call.
// Checked when the function is registered and again on every call, where every address the
// host resolves to is checked before connecting (so a DNS answer cannot slip a private address
// past the check that ran earlier).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/http_client.h"

namespace iii::workers::http_functions {

struct SecurityPolicy {
  std::vector<std::string> url_allowlist{"*"};  // globs on the host (`*`, `?`), case-insensitive
  bool block_private_ips = true;
  bool require_https = true;
};

// The parts of a URL a call needs.
using Target = net::HttpTarget;

// Parses and checks `url` without DNS. The error is one of the original's messages:
// "Invalid URL", "HTTPS is required", "URL not in allowlist", "Private IP blocked".
struct Checked {
  std::optional<Target> target;
  std::string error;
};
Checked check_url(std::string_view url, const SecurityPolicy& policy);

// Loopback, private, link-local, broadcast, documentation, unspecified (IPv4); loopback,
// unique-local fc00::/7, link-local fe80::/10, unspecified, multicast (IPv6); IPv6 forms that
// embed an IPv4 address (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96) are
// judged by that IPv4 address.
bool is_private_address(const boost::asio::ip::address& a);

// Shell-style glob with `*` and `?`, ASCII case-insensitive.
bool glob_match(std::string_view pattern, std::string_view text);

// The client hooks that enforce `block_private_ips` on every resolved address (and turn a DNS
// failure into url_validation_failed "DNS lookup failed", as the original does); none otherwise.
net::HttpClientHooks client_hooks(const SecurityPolicy& policy);

}  // namespace iii::workers::http_functions
