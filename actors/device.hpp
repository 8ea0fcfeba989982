#pragma once

#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/context.hpp"

namespace troupe::actors {

/// Spawns the virtual actor of device `id` (called by the devices shard
/// region on the first message for the id).
///
/// ```
///   loading --found--> serving --idle/stop/reset--> (passivated)
///      \--unknown--> unknown (answers 401/404, passivates at once)
/// ```
///
/// State: identity and tenant, secret hash and token hashes, batch-id
/// high-water mark, latest value per metric, last seen, open commands and
/// waiting long-polls. All of it is recoverable from PostgreSQL, which it
/// loads before serving anything (an awaited query). Messages: see
/// messages.hpp (device side and user side). Telemetry is handled one batch
/// at a time (the importer's answer is awaited), so batch ids are checked
/// against a mark that only moves after a commit.
caf::actor spawn_device(caf::actor_system& sys, const context_ptr& ctx,
                        const caf::actor& region, const std::string& id);

} // namespace troupe::actors
