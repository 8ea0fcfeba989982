#include "http/pages.hpp"

#include "http/call.hpp"
#include "http/parse.hpp"

namespace troupe::http {

bool page_params(call& c, char tag, int64_t& limit, std::string& after) {
  auto lim = parse_limit(c.query("limit").value_or(""), 100, 1000);
  if (auto e = std::get_if<api_error>(&lim)) {
    c.fail(*e);
    return false;
  }
  limit = std::get<int64_t>(lim);
  if (auto cur = c.query("cursor"); cur && !cur->empty()) {
    auto pos = decode_cursor(*cur);
    if (!pos || (*pos)[0] != tag) {
      c.fail(api_error{400, "invalid_cursor", "invalid cursor"});
      return false;
    }
    after = pos->substr(2);
  }
  return true;
}

nlohmann::json page_body(nlohmann::json items, const std::string& next,
                         char tag) {
  return {{"items", std::move(items)},
          {"next_cursor",
           next.empty() ? nlohmann::json(nullptr)
                        : nlohmann::json(
                          encode_cursor(std::string{tag, ':'} + next))}};
}

std::optional<int64_t> time_param(call& c, const char* name, int64_t def) {
  auto v = c.query(name);
  if (!v)
    return def;
  if (auto n = parse_int64(*v))
    return n;
  if (auto t = parse_rfc3339(*v))
    return t;
  c.fail(api_error{400, "invalid_request",
                   std::string{name}
                     + " must be a ms timestamp or RFC 3339"});
  return std::nullopt;
}

} // namespace troupe::http
