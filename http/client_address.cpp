#include "http/client_address.hpp"

#include <algorithm>

namespace troupe::http {

namespace {

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos)
    return {};
  auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

bool listed(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

} // namespace

std::string client_address(const std::string& peer,
                           const std::string& forwarded_for,
                           const std::vector<std::string>& trusted) {
  if (forwarded_for.empty() || !listed(trusted, peer))
    return peer;
  // Right to left: each hop appended the address it saw.
  auto end = forwarded_for.size();
  while (end > 0) {
    auto comma = forwarded_for.rfind(',', end - 1);
    auto start = comma == std::string::npos ? 0 : comma + 1;
    auto hop = trim(forwarded_for.substr(start, end - start));
    if (!hop.empty() && hop.size() <= 64 && !listed(trusted, hop))
      return hop;
    if (comma == std::string::npos)
      break;
    end = comma;
  }
  return peer;
}

address_throttle::address_throttle(int64_t max_failures,
                                   std::chrono::milliseconds window,
                                   size_t max_tracked)
  : max_failures_(max_failures), window_(window), max_tracked_(max_tracked) {
}

std::chrono::milliseconds
address_throttle::blocked_for(const std::string& addr, clock::time_point now) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = by_addr_.find(addr);
  if (it == by_addr_.end())
    return std::chrono::milliseconds{0};
  return it->second.blocked_for(now);
}

void address_throttle::fail(const std::string& addr, clock::time_point now) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (by_addr_.size() >= max_tracked_ && !by_addr_.count(addr)) {
    for (auto it = by_addr_.begin(); it != by_addr_.end();)
      it = it->second.idle(now) ? by_addr_.erase(it) : std::next(it);
    // Still full of live windows (a spray of addresses): start afresh
    // rather than grow without bound.
    if (by_addr_.size() >= max_tracked_)
      by_addr_.clear();
  }
  by_addr_.try_emplace(addr, max_failures_, window_)
    .first->second.fail(now);
}

size_t address_throttle::tracked() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return by_addr_.size();
}

} // namespace troupe::http
