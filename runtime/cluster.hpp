#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>

namespace troupe::runtime {

class node;

/// One member as GET /api/v1/cluster shows it.
struct member_view {
  std::string id;
  std::string http_address;
  std::string cluster_address;
  std::string state;
  int64_t shards = 0;
  int64_t actors = 0;
  int64_t since_ms = 0;
  int64_t heartbeat_ms = 0;
  int64_t applied_version = 0;
};

/// The cluster as this node last saw it.
struct cluster_view {
  std::vector<member_view> members;
  int64_t map_version = 0;
  /// Shards whose new owner does not serve them yet (handoff in progress).
  int64_t shards_in_motion = 0;
  std::string coordinator;
  bool fenced = false;
  /// True once this node holds a lease and has applied a shard map.
  bool joined = false;
};

/// Adds the cluster service (after the actors service, before http): it
/// publishes this node's CAF endpoint on cfg.cluster.listen and runs the
/// membership actor, a detached actor with its own PostgreSQL connection:
///
/// - every heartbeat_ms it renews this node's lease in the `members` table
///   (PostgreSQL's clock); if it cannot for lease_ms/2 the node fences
///   itself (serves no shard) until it can; if it was declared dead it
///   registers again;
/// - the oldest live member is the coordinator: it marks members whose lease
///   expired dead and publishes a new shard-map version whenever the set of
///   live, non-draining members differs from the owners of the newest map
///   (shard_map::rebalance moves as few shards as possible; the version's
///   primary key fences concurrent coordinators);
/// - it connects to every live peer's endpoint (CAF remote_actor, heartbeats
///   on), learns their regions, and hands each local region the newest map
///   and the peers (placement); once the regions acknowledge (entities of
///   lost shards stopped), it records the applied version; the smallest
///   applied version among live members is the barrier up to which newly
///   gained shards may be served;
/// - drain: (drain_atom, id) marks a member draining; a draining node that
///   owns no shard in the newest map and applied it becomes `drained`. On
///   stop the node drains itself first, then leaves.
///
/// Only when cfg.cluster.listen is set; a single node needs none of this.
/// `regions` returns the node's shard regions to place (called when the
/// service starts, after the actors); every node must list them in the
/// same order.
void install_cluster(node& n,
                     std::function<std::vector<caf::actor>()> regions);

} // namespace troupe::runtime
