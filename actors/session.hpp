#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/typed_actor.hpp>

#include "actors/context.hpp"
#include "actors/types.hpp"
#include "runtime/atoms.hpp"

namespace troupe::actors {

// -- messages -------------------------------------------------------------------

/// Asks the session actor who the token belongs to (and touches it).
struct session_auth {
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_auth& x) {
  return f(caf::meta::type_name("troupe.session_auth"), x.req_id);
}

// -- interface ------------------------------------------------------------------

/// The session actor's interface.
using session_actor = caf::typed_actor<
  caf::replies_to<session_auth>::with<user_info>,
  caf::replies_to<logout_atom>::with<done>,
  caf::reacts_to<reset_atom, std::string, std::string>, caf::reacts_to<runtime::tick_atom>,
  caf::reacts_to<runtime::stop_atom>>;

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
session_actor spawn_session(caf::actor_system& sys, const context_ptr& ctx,
                            const caf::actor& region,
                            const std::string& token_hash);

} // namespace troupe::actors
