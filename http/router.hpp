#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::http {

class call;
using call_ptr = std::shared_ptr<call>;

/// A route's handler: authenticate, parse, one typed request, render. Runs
/// on an I/O thread; it answers through the call, now or later.
using route_fn = std::function<void(const call_ptr&)>;

/// One route: a method and a path pattern whose `{name}` segments capture
/// one path segment each ("/api/v1/devices/{id}/commands"); `name` is the
/// pattern itself, the label of its metrics.
struct route {
  std::string method;
  std::string pattern;
  std::vector<std::string> segments;
  route_fn fn;
};

/// What a path matched: the route (null when none) with its captured
/// segments in order; when the path exists with other methods only, those
/// methods (for 405 and Allow).
struct route_match {
  const route* hit = nullptr;
  std::vector<std::string> params;
  std::vector<std::string> allowed;
};

/// The route table of the edge. Built once at start by the route files
/// (device_routes.cpp, ...), then only read, from every I/O thread.
/// Matching splits the path at '/', so it costs a few string compares per
/// route, no regular expressions.
class router {
public:
  void add(std::string method, std::string pattern, route_fn fn);

  route_match match(std::string_view method, std::string_view path) const;

  const std::vector<route>& routes() const { return routes_; }

private:
  std::vector<route> routes_;
};

} // namespace troupe::http
