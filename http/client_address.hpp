#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/failure_window.hpp"

namespace troupe::http {

/// The client's address: the socket peer, unless the peer is one of the
/// `trusted` proxies (http.trusted_proxies), in which case the rightmost
/// address of X-Forwarded-For that is not itself a trusted proxy (what the
/// load balancer saw). A forged X-Forwarded-For from an untrusted peer is
/// ignored. Pure.
std::string client_address(const std::string& peer,
                           const std::string& forwarded_for,
                           const std::vector<std::string>& trusted);

/// Failed logins per client address on this node (a sliding window each,
/// auth.max_failed_logins_per_address). Thread-safe: the edge's threads
/// share one. Memory is bounded: addresses whose window emptied are
/// dropped, and at most `max_tracked` addresses are kept (beyond that the
/// idle ones go first, then the table starts afresh).
class address_throttle {
public:
  using clock = runtime::failure_window::clock;

  address_throttle(int64_t max_failures, std::chrono::milliseconds window,
                   size_t max_tracked = 100'000);

  /// How long `addr` must wait; zero: it may try now.
  std::chrono::milliseconds blocked_for(const std::string& addr,
                                        clock::time_point now);

  /// Records a failed login from `addr`.
  void fail(const std::string& addr, clock::time_point now);

  size_t tracked() const;

private:
  int64_t max_failures_;
  std::chrono::milliseconds window_;
  size_t max_tracked_;
  mutable std::mutex mtx_;
  std::unordered_map<std::string, runtime::failure_window> by_addr_;
};

} // namespace troupe::http
