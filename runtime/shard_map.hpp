#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime {

/// Maps keys to shards (a stable hash, the same on every node and build) and
/// shards to owner nodes. Versioned: a newer map replaces an older one whole.
/// A value type; the shard region owns the current one.
class shard_map {
public:
  shard_map() = default;
  /// A map of `shards` shards all owned by `owner`, at version 1.
  shard_map(size_t shards, std::string owner);
  /// A map with the given owners (index: shard) at `version`.
  shard_map(std::vector<std::string> owners, int64_t version)
    : owners_(std::move(owners)), version_(version) {}

  /// FNV-1a 64 of the key, modulo the shard count.
  static uint32_t shard_of(std::string_view key, size_t shards);
  uint32_t shard_of(std::string_view key) const {
    return shard_of(key, owners_.size());
  }

  const std::string& owner(uint32_t shard) const { return owners_[shard]; }
  size_t shards() const { return owners_.size(); }
  const std::vector<std::string>& owners() const { return owners_; }
  int64_t version() const { return version_; }

  /// Shards owned by `node`.
  size_t count_owned(const std::string& node) const;

  /// A new version where `nodes` own the shards, moving as few as possible:
  /// shards of nodes not in `nodes` and the surplus of nodes above their fair
  /// share go to the nodes below it.
  shard_map rebalance(const std::vector<std::string>& nodes) const;

private:
  std::vector<std::string> owners_;
  int64_t version_ = 0;
};

} // namespace troupe::runtime
