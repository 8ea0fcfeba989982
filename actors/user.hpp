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

struct user_login {
  std::string username;
  std::string password;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_login& x) {
  return f(caf::meta::type_name("troupe.user_login"), x.username, x.password,
           x.req_id);
}

struct user_login_reply {
  std::string token;
  user_info user;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_login_reply& x) {
  return f(caf::meta::type_name("troupe.user_login_reply"), x.token, x.user);
}

/// A logged-in user changes its own password. `keep_session` is the keyed
/// hash of the asking session's token: that session stays, the user's
/// other sessions end.
struct change_password {
  std::string current_password;
  std::string new_password;
  std::string keep_session;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, change_password& x) {
  return f(caf::meta::type_name("troupe.change_password"), x.current_password,
           x.new_password, x.keep_session, x.req_id);
}

// -- interface ------------------------------------------------------------------

/// The user actor's interface.
using user_actor = caf::typed_actor<
  caf::replies_to<user_login>::with<user_login_reply>,
  caf::replies_to<change_password>::with<done>,
  caf::reacts_to<runtime::tick_atom>, caf::reacts_to<runtime::stop_atom>>;

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
user_actor spawn_user(caf::actor_system& sys, const context_ptr& ctx,
                      const caf::actor& region, const std::string& username);

} // namespace troupe::actors
