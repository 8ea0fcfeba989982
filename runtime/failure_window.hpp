#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>

namespace troupe::runtime {

/// A sliding window of failures (failed logins of one username, device or
/// client address): at most `max` failures within `window` are allowed;
/// while that many lie in the window every attempt is refused, until the
/// oldest leaves it. So a throttled key is locked out at most one window
/// after its last failure. Owner: whoever keeps the key's state (a device
/// actor, a user actor, the edge per address). Not thread-safe; memory is
/// bounded by `max` timestamps.
class failure_window {
public:
  using clock = std::chrono::steady_clock;

  failure_window(int64_t max, std::chrono::milliseconds window)
    : max_(std::max<int64_t>(1, max)), window_(window) {
  }

  /// How long until an attempt is allowed; zero: allowed now.
  std::chrono::milliseconds blocked_for(clock::time_point now) {
    expire(now);
    if (static_cast<int64_t>(times_.size()) < max_)
      return std::chrono::milliseconds{0};
    auto left = times_.front() + window_ - now;
    return std::max(std::chrono::milliseconds{1},
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                      left));
  }

  /// Records a failure at `now`.
  void fail(clock::time_point now) {
    expire(now);
    times_.push_back(now);
    while (static_cast<int64_t>(times_.size()) > max_)
      times_.pop_front();
  }

  /// Forgets every failure (after a successful login).
  void clear() {
    times_.clear();
  }

  /// True when no failure lies in the window (the state can be dropped).
  bool idle(clock::time_point now) {
    expire(now);
    return times_.empty();
  }

private:
  void expire(clock::time_point now) {
    while (!times_.empty() && now - times_.front() >= window_)
      times_.pop_front();
  }

  int64_t max_;
  std::chrono::milliseconds window_;
  std::deque<clock::time_point> times_;
};

/// Whole seconds for a Retry-After header (rounded up, at least 1).
inline int64_t retry_after_s(std::chrono::milliseconds ms) {
  return std::max<int64_t>(1, (ms.count() + 999) / 1000);
}

} // namespace troupe::runtime
