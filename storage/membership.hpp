#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "storage/pg.hpp"

/// Cluster membership and the shard map, kept in PostgreSQL (as Orleans
/// keeps its membership table in a database). Times are PostgreSQL's clock
/// (ms since the epoch), so nodes never compare their own clocks.
namespace troupe::storage {

struct member_row {
  std::string id;
  std::string http_address;
  std::string cluster_address;
  /// alive, draining, drained, left, dead
  std::string state;
  int64_t incarnation = 0;
  int64_t started_ms = 0;
  int64_t heartbeat_ms = 0;
  /// Newest shard-map version this member has applied (released what it
  /// lost in it).
  int64_t applied_version = 0;
  /// Active virtual actors, as last reported.
  int64_t actors = 0;
};

struct map_row {
  int64_t version = 0;
  std::vector<std::string> owners; // index: shard
  int64_t created_ms = 0;
  std::string created_by;
};

/// PostgreSQL's clock, ms since the epoch.
[[nodiscard]] caf::expected<int64_t> db_now_ms(connection& c);

/// Registers (or re-registers) this node as alive with a new incarnation;
/// returns the row.
[[nodiscard]] caf::expected<member_row>
register_member(connection& c, const std::string& id,
                const std::string& http_address,
                const std::string& cluster_address);

/// Renews the lease of (id, incarnation). Returns the member's state, or
/// nullopt when the row no longer belongs to this incarnation or was marked
/// dead (the node must stop serving and register again).
[[nodiscard]] caf::expected<std::optional<std::string>>
heartbeat_member(connection& c, const std::string& id, int64_t incarnation,
                 int64_t actors);

[[nodiscard]] caf::expected<std::vector<member_row>>
list_members(connection& c);

/// Marks alive/draining members whose lease expired as dead; returns them.
[[nodiscard]] caf::expected<std::vector<std::string>>
expire_members(connection& c, int64_t lease_ms);

/// Marks member `id` dead if its last heartbeat is older than `stale_ms`
/// by PostgreSQL's clock (a suspect whose connection dropped and who can
/// no longer be serving: its own lease ran out earlier); true if it did.
[[nodiscard]] caf::expected<bool> declare_dead(connection& c,
                                               const std::string& id,
                                               int64_t stale_ms);

/// Sets a member's state; false if no such member.
[[nodiscard]] caf::expected<bool> set_member_state(connection& c,
                                                   const std::string& id,
                                                   const std::string& state);

[[nodiscard]] caf::error set_applied_version(connection& c,
                                             const std::string& id,
                                             int64_t incarnation,
                                             int64_t version);

/// The newest shard map, if any.
[[nodiscard]] caf::expected<std::optional<map_row>> latest_map(connection& c);

/// Publishes a map version; conflict when that version exists (another
/// coordinator won).
[[nodiscard]] caf::error insert_map(connection& c, const map_row& m);

} // namespace troupe::storage
