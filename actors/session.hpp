#pragma once

#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/context.hpp"

namespace troupe::actors {

/// Spawns the virtual actor of one user session, keyed by the keyed hash of
/// its token (tokens themselves are never keys, logs or rows).
///
/// ```
///   loading --found--> active --idle past deadline / logout--> ended
///      \--unknown--> unknown (answers 401, passivates at once)
/// ```
///
/// State: the user (name, role, tenant) and the idle deadline. It answers
/// session_auth with user_info and moves the deadline; it persists
/// last_seen at most every min(60 s, idle/4), so a session reloaded on any
/// node keeps its deadline within that slack.
caf::actor spawn_session(caf::actor_system& sys, const context_ptr& ctx,
                         const caf::actor& region,
                         const std::string& token_hash);

} // namespace troupe::actors
