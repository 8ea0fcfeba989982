#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/context.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/metrics.hpp"
#include "storage/pg.hpp"

namespace troupe::actors {

/// Which pool of each data shard a fan-out uses.
enum class shard_pool { db, reads };

/// Runs `fn(size_t shard, storage::connection&) -> caf::expected<T>` on
/// every data shard at once and calls `k(std::vector<caf::expected<T>>)`,
/// indexed by shard, in `self`'s context once all have answered. Lists
/// that span the fleet (devices, alerts) merge the pages of all shards;
/// the caller decides what a failed shard means.
template <class T, class Self, class F, class K>
void on_every_shard(Self* self, const context& ctx, shard_pool which, F fn,
                    K k) {
  struct gather {
    std::vector<caf::expected<T>> out;
    size_t left = 0;
    K k;
  };
  auto n = ctx.data.size();
  auto g = std::make_shared<gather>(gather{{}, n, std::move(k)});
  for (size_t s = 0; s < n; ++s)
    g->out.emplace_back(caf::error{});
  for (size_t s = 0; s < n; ++s) {
    auto& pool = which == shard_pool::reads ? ctx.data[s].reads
                                            : ctx.data[s].db;
    runtime::db_call<T>(
      self, pool, [fn, s](storage::connection& c) { return fn(s, c); },
      [g, s](caf::expected<T> r) {
        g->out[s] = std::move(r);
        if (--g->left == 0)
          g->k(std::move(g->out));
      });
  }
}

/// troupe_partial_lists_total{list}: lists answered without some data
/// shard (its rows marked or missing).
inline runtime::counter& partial_lists(const std::string& list) {
  return runtime::metrics().get_counter(
    "troupe_partial_lists_total",
    "Lists answered without some data shard (its rows marked or missing)",
    "list=\"" + list + "\"");
}

/// The first failure among `rs`, if any.
template <class T>
std::optional<caf::error> first_failure(std::vector<caf::expected<T>>& rs) {
  for (auto& r : rs)
    if (!r)
      return std::move(r.error());
  return std::nullopt;
}

} // namespace troupe::actors
