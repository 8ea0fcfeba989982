#include "http/csrf.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>

namespace troupe::http {

namespace {

std::string lower(std::string_view s) {
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char ch) {
    return static_cast<char>(std::tolower(ch));
  });
  return out;
}

/// The host[:port] of an absolute URL ("https://a.example:8443/x" ->
/// "a.example:8443"), lowercase; empty when it has none ("null").
std::string authority_of(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos)
    return {};
  auto rest = url.substr(scheme + 3);
  auto end = rest.find_first_of("/?#");
  auto auth = rest.substr(0, end);
  if (auto at = auth.rfind('@'); at != std::string_view::npos)
    auth = auth.substr(at + 1);
  return lower(auth);
}

/// Host without a default port, so "a.example:80" and "a.example" match.
std::string without_default_port(std::string s) {
  for (auto* p : {":80", ":443"})
    if (s.size() > 4 && s.compare(s.size() - std::string_view{p}.size(),
                                  std::string::npos, p)
                          == 0)
      return s.substr(0, s.size() - std::string_view{p}.size());
  return s;
}

} // namespace

bool unsafe_method(const std::string& method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

std::optional<std::string> forged_origin(const request& r) {
  // Browsers set Sec-Fetch-Site themselves (no page can), so same-origin
  // settles it, also behind a proxy that rewrites Host.
  auto site = lower(r.header("Sec-Fetch-Site"));
  if (site == "same-origin")
    return std::nullopt;
  if (site == "cross-site")
    return "cross-site request refused (Sec-Fetch-Site: cross-site)";
  auto source = r.header("Origin");
  const char* what = "Origin";
  if (source.empty()) {
    source = r.header("Referer");
    what = "Referer";
  }
  if (source.empty())
    return std::nullopt;
  auto from = without_default_port(authority_of(source));
  auto to = without_default_port(lower(r.header("Host")));
  if (!from.empty() && from == to)
    return std::nullopt;
  return std::string{"cross-site request refused: "} + what
         + " is not this site";
}

} // namespace troupe::http
