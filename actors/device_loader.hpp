#pragma once

#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include "actors/context.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

/// A device's stored state, or nothing for an unknown id. Local only.
struct loaded_device {
  std::optional<storage::device_row> row;
};

} // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::loaded_device)

namespace troupe::actors {

/// Spawns the node's device loader: device actors ask it for their state
/// ((load_atom, id) -> loaded_device) when they start, and it answers in
/// batches: every request that arrived while the previous batch was being
/// read goes into the next one (natural batching, at most `max_batch`),
/// each batch four queries on the database pool (storage::load_devices).
/// So a fleet reconnecting after a restart or a failover comes back into
/// memory at thousands of devices per second instead of one query round
/// trip each.
///
/// Owner: actors::install; stops with the node.
caf::actor spawn_device_loader(caf::actor_system& sys, const context_ptr& ctx,
                               size_t max_batch = 1000);

} // namespace troupe::actors
