#pragma once

#include <optional>
#include <string>

#include "http/server.hpp"

namespace troupe::http {

/// Whether `method` changes state (anything but GET, HEAD, OPTIONS).
bool unsafe_method(const std::string& method);

/// Why a request authenticated by the session cookie must be refused as a
/// cross-site request forgery, or nullopt when it may pass: a browser names
/// the page that sent it in Origin (or, lacking that, Referer), and that
/// page's host:port must be the one the request was sent to (Host), or
/// Sec-Fetch-Site must not say cross-site. A request with none of these
/// headers comes from no browser page (curl, a device, a script) and
/// passes; bearer-token requests are not checked (a browser never adds a
/// bearer token by itself). The scheme is not compared, so a node behind a
/// TLS-terminating proxy works.
std::optional<std::string> forged_origin(const request& r);

} // namespace troupe::http
