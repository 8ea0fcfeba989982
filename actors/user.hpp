#pragma once

#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/context.hpp"

namespace troupe::actors {

/// Spawns the virtual actor of one username: it logs the user in (argon2id
/// check and a new session row, on a database worker) and throttles failed
/// logins for the username wherever the request lands, since the key's
/// owner is the only one counting (auth.max_failed_logins within
/// auth.failed_login_window_s; beyond it 429 with Retry-After, also for the
/// right password, until the oldest failure leaves the window).
///
/// ```
///   serving --idle, no failure in the window--> (passivated)
/// ```
///
/// State: the failure window only (soft: lost on passivation or handoff,
/// which happens only after it is empty or with the shard). Messages:
/// user_login -> user_login_reply.
caf::actor spawn_user(caf::actor_system& sys, const context_ptr& ctx,
                      const caf::actor& region, const std::string& username);

} // namespace troupe::actors
