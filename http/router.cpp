#include "http/router.hpp"

#include <algorithm>

namespace troupe::http {

namespace {

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> out;
  size_t pos = 0;
  if (!path.empty() && path[0] == '/')
    pos = 1;
  while (pos <= path.size()) {
    auto end = path.find('/', pos);
    if (end == std::string_view::npos)
      end = path.size();
    out.emplace_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

bool is_param(const std::string& segment) {
  return segment.size() > 2 && segment.front() == '{'
         && segment.back() == '}';
}

} // namespace

void router::add(std::string method, std::string pattern, route_fn fn) {
  auto segments = split(pattern);
  routes_.push_back(
    {std::move(method), std::move(pattern), std::move(segments),
     std::move(fn)});
}

route_match router::match(std::string_view method,
                          std::string_view path) const {
  route_match out;
  auto parts = split(path);
  for (auto& r : routes_) {
    if (r.segments.size() != parts.size())
      continue;
    std::vector<std::string> params;
    bool ok = true;
    for (size_t i = 0; i < parts.size() && ok; ++i) {
      if (is_param(r.segments[i]))
        ok = !parts[i].empty() ? (params.push_back(parts[i]), true) : false;
      else
        ok = r.segments[i] == parts[i];
    }
    if (!ok)
      continue;
    if (r.method == method) {
      out.hit = &r;
      out.params = std::move(params);
      out.allowed.clear();
      return out;
    }
    if (std::find(out.allowed.begin(), out.allowed.end(), r.method)
        == out.allowed.end())
      out.allowed.push_back(r.method);
  }
  return out;
}

} // namespace troupe::http
