#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include "runtime/shard_map.hpp"

namespace troupe::runtime {

class local_entities;

/// A shard region's handle tagged with the typed interface of its entities
/// (e.g. actors::device_actor), so a caller's message and expected reply
/// are checked against that interface at compile time
/// (runtime::reply_of); the region itself takes (route_atom, key, message).
template <class Entity>
struct region_of {
  caf::actor handle;
  /// The entities it serves here now (for sends past the region).
  std::shared_ptr<local_entities> local;
  explicit operator bool() const { return static_cast<bool>(handle); }
};

/// Spawns the entity for `key`; `region` is the region to send
/// (passivate_atom, key) to when the entity has idled long enough.
using entity_factory = std::function<caf::actor(
  caf::actor_system& sys, const caf::actor& region, const std::string& key)>;

/// Until when this node may serve: the membership lease, renewed by the
/// membership actor after each heartbeat it wrote (valid for cluster.fence_ms
/// from the moment it sent it), read by the regions on every request. A node
/// that cannot renew stops serving exactly then, however busy its membership
/// actor is; the coordinator declares a member dead only later. Lock-free.
class lease {
public:
  using clock = std::chrono::steady_clock;

  bool valid() const {
    return clock::now().time_since_epoch().count()
           < until_.load(std::memory_order_acquire);
  }
  void renew_until(clock::time_point t) {
    until_.store(t.time_since_epoch().count(), std::memory_order_release);
  }
  void revoke() {
    until_.store(0, std::memory_order_release);
  }

  /// Counts the fences: membership bumps it, synchronously, before it tells
  /// the regions to serve nothing. A region notes the count of each
  /// placement it applies; senders past the region (local_entities) trust
  /// an entity only while the two agree, so a lease renewed right after a
  /// fence (a node declared dead registers again) serves nothing directly
  /// until the regions have stopped what they served before it.
  void fence() { fences_.fetch_add(1, std::memory_order_acq_rel); }
  uint64_t fences() const { return fences_.load(std::memory_order_acquire); }

private:
  std::atomic<clock::rep> until_{0};
  std::atomic<uint64_t> fences_{0};
};

using lease_clock = std::shared_ptr<lease>;

/// Where shards live, as the membership service tells a region. Local only.
struct placement {
  /// The current shard map.
  shard_map map;
  /// This region's regions on the other nodes, by node id.
  std::map<std::string, caf::actor> peers;
  /// While true (the node lost its lease) the region serves no shard.
  bool fenced = false;
  /// lease::fences() when membership sent it.
  uint64_t fences = 0;
};

} // namespace troupe::runtime

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::placement)

namespace troupe::runtime {

/// The shard region of one kind of virtual actor ("device", "session") on
/// one node: keys hash to shards, shards belong to nodes (shard_map).
///
/// Messages:
/// - (route_atom, key, message): from the local edge. If this node serves
///   the key's shard, `message` goes to the key's entity (spawned on first
///   use), which answers the original sender. If another node owns it, the
///   message is forwarded there as (forward_atom, key, message); the answer
///   still goes straight back to the sender. Otherwise the answer is
///   errc::moved, and the sender retries once placement settles.
/// - (forward_atom, key, message): from another node's region; served here
///   or answered errc::moved (never forwarded twice).
/// - (passivate_atom, key, entity address), from an idle entity: the region stops routing to
///   it, sends it stop_atom, and buffers messages for the key until the
///   entity is gone; then they are routed again. So an entity never runs
///   twice at once and nothing routed to it is lost.
/// - (placement_atom, placement) -> int64 version: a new map. Entities of
///   shards this node lost are stopped (in-flight work finishes first); the
///   answer comes once all of them are gone: the handoff acknowledgement.
/// - (barrier_atom, int64 v): every live member applied map v, so shards
///   gained in versions <= v may be served (no two nodes serve a shard).
/// - (count_atom) -> int64: active entities.
/// - (stop_atom): passivate everything, then quit (drain).
///
/// Owner: runtime::node (one region per kind). A single node uses a static
/// map (everything local, served at once); a cluster node starts owning
/// nothing until membership delivers a placement.
///
/// A request forwarded to a node that goes away (CAF reports the peer
/// region down) answers `owner_lost` (503) at once instead of waiting for
/// its deadline, and later requests wait (`moved`) for the new owner; with `lease` (a cluster
/// node), nothing is served once the lease is no longer valid.
///
/// `local`, when given, mirrors the entities served here for callers that
/// send to them directly (local_entities.hpp).
caf::actor spawn_shard_region(caf::actor_system& sys, std::string kind,
                              entity_factory factory, shard_map map,
                              std::string self, bool clustered,
                              lease_clock lease = nullptr,
                              std::shared_ptr<local_entities> local
                              = nullptr);

} // namespace troupe::runtime
