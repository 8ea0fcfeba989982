#include "actors/session.hpp"

#include <algorithm>
#include <chrono>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::passivate_atom;
using runtime::stop_atom;
using runtime::tick_atom;

struct session_state {
  std::string name = "session";
  context_ptr ctx;
  caf::actor region;
  std::string key;
  bool known = false;
  bool passivating = false;
  user_info user;
  int64_t last_seen_ms = 0;
  int64_t persisted_ms = 0;
};

using session_ptr = session_actor::stateful_pointer<session_state>;

int64_t idle_ms(session_ptr self) {
  return self->state.ctx->actors.session_idle_s * 1000;
}

void passivate(session_ptr self) {
  auto& st = self->state;
  if (st.passivating)
    return;
  st.passivating = true;
  caf::anon_send(st.region, passivate_atom::value, st.key, self->address());
}

void persist(session_ptr self) {
  auto& st = self->state;
  if (!st.known || st.persisted_ms == st.last_seen_ms)
    return;
  st.persisted_ms = st.last_seen_ms;
  db_call<bool>(
    self, st.ctx->db,
    [key = st.key, t = st.last_seen_ms](storage::connection& c)
      -> caf::expected<bool> {
      if (auto err = storage::touch_session(c, key, t))
        return err;
      return true;
    },
    [](caf::expected<bool>) {});
}

void end_session(session_ptr self) {
  auto& st = self->state;
  st.known = false;
  db_call<bool>(
    self, st.ctx->db,
    [key = st.key](storage::connection& c) -> caf::expected<bool> {
      if (auto err = storage::delete_session(c, key))
        return err;
      return true;
    },
    [](caf::expected<bool>) {});
  passivate(self);
}

void schedule_tick(session_ptr self) {
  auto secs = std::max<int64_t>(
    1, std::min(self->state.ctx->actors.passivate_after_s,
                self->state.ctx->actors.session_idle_s)
         / 2);
  self->delayed_send(self, std::chrono::seconds(secs), tick_atom::value);
}

caf::error unauthorized(const char* why = "invalid or expired session") {
  return make_actor_error(errc::unauthorized, why);
}

} // namespace

session_actor::behavior_type session(session_ptr self, context_ptr ctx, caf::actor region,
                      std::string key) {
  auto& st = self->state;
  st.ctx = ctx;
  st.region = region;
  st.key = key;
  db_call<std::optional<storage::session_row>>(
    self, ctx->db,
    [key](storage::connection& c) { return storage::load_session(c, key); },
    [self](caf::expected<std::optional<storage::session_row>> row) {
      auto& st = self->state;
      if (!row) {
        log().warn("session load failed: {}", config::describe(row.error()));
        self->quit(row.error());
        return;
      }
      if (!*row) {
        passivate(self);
        return;
      }
      auto& r = **row;
      st.known = true;
      st.user = user_info{r.user.username, r.user.role, r.user.tenant};
      st.last_seen_ms = r.last_seen_ms;
      st.persisted_ms = r.last_seen_ms;
      st.name = "session:" + r.user.username;
      schedule_tick(self);
    },
    true);
  return {
    [=](session_auth&) -> caf::result<user_info> {
      auto& st = self->state;
      if (!st.known)
        return unauthorized();
      auto now = now_ms();
      if (now - st.last_seen_ms > idle_ms(self)) {
        log().info("session of user={} ended after idling", st.user.username);
        end_session(self);
        return unauthorized("session expired");
      }
      st.last_seen_ms = now;
      auto every = std::min<int64_t>(60'000, idle_ms(self) / 4);
      if (now - st.persisted_ms >= every)
        persist(self);
      return st.user;
    },
    [=](logout_atom) -> caf::result<done> {
      auto& st = self->state;
      if (!st.known)
        return unauthorized();
      // Answer only once the row is gone, so no reload can revive it.
      auto rp = self->make_response_promise<done>();
      db_call<bool>(
        self, st.ctx->db,
        [key = st.key](storage::connection& c) -> caf::expected<bool> {
          if (auto err = storage::delete_session(c, key))
            return err;
          return true;
        },
        [=](caf::expected<bool> r) mutable {
          auto& st = self->state;
          if (!r) {
            rp.deliver(r.error());
            return;
          }
          log().info("user={} logged out", st.user.username);
          st.known = false;
          passivate(self);
          rp.deliver(done{});
        });
      return rp;
    },
    [=](runtime::tick_atom) {
      auto& st = self->state;
      if (!st.known)
        return;
      auto idle = now_ms() - st.last_seen_ms;
      if (idle > idle_ms(self)) {
        end_session(self);
        return;
      }
      if (idle >= st.ctx->actors.passivate_after_s * 1000) {
        persist(self);
        passivate(self);
        return;
      }
      schedule_tick(self);
    },
    [=](reset_atom, const std::string& username, const std::string& keep) {
      // The user was deleted or its password set: its sessions end at
      // once, but `keep` (the session that changed its own password).
      auto& st = self->state;
      if (st.known && st.user.username == username && st.key != keep) {
        st.known = false;
        passivate(self);
      }
    },
    [=](stop_atom) {
      persist(self);
      self->quit();
    },
  };
}

session_actor spawn_session(caf::actor_system& sys, const context_ptr& ctx,
                         const caf::actor& region,
                         const std::string& token_hash) {
  return sys.spawn(session, ctx, region, token_hash);
}

} // namespace troupe::actors
