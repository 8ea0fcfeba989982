#pragma once

#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/shard_map.hpp"

namespace troupe::runtime {

/// Spawns the entity for `key`; `region` is the region to send
/// (passivate_atom, key) to when the entity has idled long enough.
using entity_factory = std::function<caf::actor(
  caf::actor_system& sys, const caf::actor& region, const std::string& key)>;

/// The shard region of one kind of virtual actor ("device", "session").
///
/// Messages:
/// - (route_atom, key, message): delivers `message` to the entity of `key`,
///   spawning it on first use; the entity answers the original sender.
/// - (passivate_atom, key), from an idle entity: the region stops routing to
///   it, sends it stop_atom, and buffers messages for the key until the
///   entity is gone; then a fresh entity receives them. So an entity never
///   runs twice at once and nothing routed to it is lost.
/// - (count_atom) -> int64: active entities.
/// - (stop_atom): passivate everything, then quit (drain).
///
/// Owner: runtime::node (one region per kind). Lives until the node stops.
/// Single node today: the shard map has one owner; the cluster adds remote
/// owners and forwarding.
caf::actor spawn_shard_region(caf::actor_system& sys, std::string kind,
                              entity_factory factory, shard_map map);

} // namespace troupe::runtime
