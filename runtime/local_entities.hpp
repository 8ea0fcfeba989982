#pragma once

#include <array>
#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>

#include <caf/actor.hpp>

#include "runtime/shard_region.hpp"

namespace troupe::runtime {

/// The entities one shard region serves on this node right now, readable
/// from any thread: the edge sends a request straight to a served entity
/// instead of through its region, one actor hop less per request (the
/// region is one actor that every request of its kind would cross).
///
/// Written only by the region, which publishes an entity after routing its
/// first message to it and withdraws it before it stops it (passivation, a
/// lost shard, a lost lease, a drain). A request that found the handle just
/// before the withdrawal may still reach the entity after its stop: the
/// entity answers `moved` (or CAF bounces it as `request_receiver_down`
/// once it is gone), and the caller asks the region again. Without a valid
/// lease nothing is found, exactly when the region stops serving; nor after
/// a fence until the region has applied it (lease::fences), and requests
/// meanwhile queue behind the fence in the region's mailbox.
///
/// Owner: shared by the region and the edge (shared_ptr). Thread-safe.
class local_entities {
public:
  explicit local_entities(lease_clock lease = nullptr)
    : lease_(std::move(lease)) {
  }

  /// The entity serving `key` here, or an invalid handle.
  caf::actor find(const std::string& key) const;

  void publish(const std::string& key, caf::actor entity);
  void withdraw(const std::string& key);
  void clear();
  /// The region applied a placement sent at lease fence count `n`.
  void applied(uint64_t n) { applied_.store(n, std::memory_order_release); }

private:
  struct stripe {
    mutable std::mutex mtx;
    std::unordered_map<std::string, caf::actor> entities;
  };

  stripe& stripe_of(const std::string& key) const {
    return stripes_[std::hash<std::string>{}(key) % stripes_.size()];
  }

  /// Striped so the edge's threads rarely meet on one lock.
  mutable std::array<stripe, 16> stripes_;
  lease_clock lease_;
  std::atomic<uint64_t> applied_{0};
};

} // namespace troupe::runtime
