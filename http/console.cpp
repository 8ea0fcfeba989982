#include "http/console.hpp"

#include "http/call.hpp"
#include "http/console_files.hpp"
#include "http/errc.hpp"

namespace troupe::http {

namespace {

/// What the console's pages may load: only this origin's scripts and
/// styles (uPlot and Preact set inline style properties), no framing.
constexpr const char* content_security_policy
  = "default-src 'self'; img-src 'self' data:; style-src 'self' "
    "'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'";

bool etag_matches(const std::string& if_none_match, std::string_view etag) {
  if (if_none_match.empty())
    return false;
  if (if_none_match == "*")
    return true;
  // A list of entity tags, weak ones (W/"...") compared weakly.
  size_t pos = 0;
  while (pos < if_none_match.size()) {
    auto end = if_none_match.find(',', pos);
    if (end == std::string::npos)
      end = if_none_match.size();
    auto tag = std::string_view{if_none_match}.substr(pos, end - pos);
    while (!tag.empty() && tag.front() == ' ')
      tag.remove_prefix(1);
    while (!tag.empty() && tag.back() == ' ')
      tag.remove_suffix(1);
    if (tag.substr(0, 2) == "W/")
      tag.remove_prefix(2);
    if (tag == etag)
      return true;
    pos = end + 1;
  }
  return false;
}

} // namespace

bool console_request(const request& r) {
  return (r.method == "GET" || r.method == "HEAD")
         && r.path.rfind("/api/", 0) != 0 && r.path != "/api";
}

void serve_console(const call_ptr& c) {
  auto& path = c->req().path;
  auto* a = find_console_file(path);
  if (!a && path.rfind("/assets/", 0) == 0)
    return c->fail(api_error{404, "not_found", "no such console file"});
  if (!a || path == "/")
    a = find_console_file("/index.html");
  if (!a)
    return c->fail(api_error{404, "not_found", "no console in this build"});
  // The gzip copy is another representation: its own entity tag.
  bool gz = !a->gzip.empty() && c->req().accepts_gzip();
  auto etag = std::string{a->etag};
  if (gz)
    etag.insert(etag.size() - 1, "-gz");
  c->add_header("ETag", etag);
  if (!a->gzip.empty())
    c->add_header("Vary", "Accept-Encoding");
  c->add_header("X-Content-Type-Options", "nosniff");
  c->add_header("Cache-Control", a->immutable
                                   ? "public, max-age=31536000, immutable"
                                   : "no-cache");
  if (a->content_type.rfind("text/html", 0) == 0) {
    c->add_header("Content-Security-Policy", content_security_policy);
    c->add_header("X-Frame-Options", "DENY");
    c->add_header("Referrer-Policy", "same-origin");
  }
  if (etag_matches(c->req().header("If-None-Match"), etag))
    return c->reply_text(304, "", "");
  if (gz) {
    c->add_header("Content-Encoding", "gzip");
    return c->reply_text(200, std::string{a->content_type},
                         std::string{a->gzip});
  }
  c->reply_text(200, std::string{a->content_type}, std::string{a->body});
}

} // namespace troupe::http
