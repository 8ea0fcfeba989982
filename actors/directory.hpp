#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/context.hpp"

namespace troupe::actors {

/// Spawns the directory: the node's one actor for what is not a single
/// device, session or user. It lists devices (a page of ids from
/// PostgreSQL, then each device actor's own view), and serves the admin
/// API: tenants, users, bulk device registration, secret rotation, device
/// deletion; and the threshold rules and alerts (list, create, delete,
/// close) of the caller's tenant. It checks roles and tenants; the edge
/// only authenticates.
///
/// Owner: actors::install. Stateless apart from the shared context, so any
/// node's directory can serve any request.
caf::actor spawn_directory(caf::actor_system& sys, const context_ptr& ctx);

/// Creates the first admin: TROUPE_ADMIN_USER/PASSWORD when given (if that
/// user does not exist yet), otherwise, if there is no admin at all, `admin`
/// with a random password that is printed once. Runs at startup, blocking.
[[nodiscard]] caf::error bootstrap_admin(const std::string& database_url,
                                         const std::string& user,
                                         const std::string& password);

} // namespace troupe::actors
