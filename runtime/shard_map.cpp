#include "runtime/shard_map.hpp"

#include <algorithm>
#include <map>

namespace troupe::runtime {

shard_map::shard_map(size_t shards, std::string owner)
  : owners_(shards, std::move(owner)), version_(1) {
}

uint32_t shard_map::shard_of(std::string_view key, size_t shards) {
  uint64_t h = 14695981039346656037ull;
  for (auto c : key) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % shards);
}

size_t shard_map::count_owned(const std::string& node) const {
  return static_cast<size_t>(std::count(owners_.begin(), owners_.end(), node));
}

shard_map shard_map::rebalance(const std::vector<std::string>& nodes) const {
  shard_map next = *this;
  next.version_ = version_ + 1;
  if (nodes.empty() || owners_.empty())
    return next;
  auto sorted = nodes;
  std::sort(sorted.begin(), sorted.end());
  auto n = sorted.size();
  auto base = owners_.size() / n;
  auto extra = owners_.size() % n;
  // Fair share: the first `extra` nodes (in sorted order) take one more.
  std::map<std::string, size_t> quota, have;
  for (size_t i = 0; i < n; ++i)
    quota[sorted[i]] = base + (i < extra ? 1 : 0);
  std::vector<uint32_t> loose;
  for (uint32_t s = 0; s < owners_.size(); ++s) {
    auto& o = next.owners_[s];
    auto q = quota.find(o);
    if (q == quota.end() || have[o] >= q->second)
      loose.push_back(s);
    else
      ++have[o];
  }
  size_t li = 0;
  for (auto& node : sorted)
    while (have[node] < quota[node] && li < loose.size()) {
      next.owners_[loose[li++]] = node;
      ++have[node];
    }
  return next;
}

} // namespace troupe::runtime
