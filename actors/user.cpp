#include "actors/user.hpp"

#include <chrono>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/failure_window.hpp"
#include "runtime/metrics.hpp"
#include "storage/crypto.hpp"
#include "storage/errc.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::failure_window;
using runtime::passivate_atom;
using runtime::stop_atom;
using runtime::tick_atom;

struct user_state {
  std::string name = "user";
  context_ptr ctx;
  caf::actor region;
  std::string username;
  std::unique_ptr<failure_window> failures;
  std::chrono::steady_clock::time_point last_activity;
  bool passivating = false;
  runtime::counter* throttled = nullptr;
  runtime::counter* failed = nullptr;
};

using user_ptr = user_actor::stateful_pointer<user_state>;

// A fixed argon2id hash to verify against when the user does not exist, so
// both failures take the same time.
const std::string& dummy_hash() {
  static const std::string h = storage::crypto::hash_password("x");
  return h;
}

void schedule_tick(user_ptr self) {
  auto secs = std::max<int64_t>(1, self->state.ctx->actors.passivate_after_s
                                     / 2);
  self->delayed_send(self, std::chrono::seconds(secs), tick_atom::value);
}

/// The wait before the next password check when too many failed lately
/// (counted, logged); zero when one may run now.
auto throttled(user_ptr self, const std::string& req_id, const char* what) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  st.last_activity = now;
  auto wait = st.failures->blocked_for(now);
  if (wait.count() > 0) {
    st.throttled->inc();
    log().warn("user={} req={} {} throttled", st.username, req_id, what);
  }
  return wait;
}

/// Counts a wrong password against the username.
void count_failure(user_ptr self, const std::string& req_id,
                   const char* what) {
  auto& st = self->state;
  st.failures->fail(std::chrono::steady_clock::now());
  st.failed->inc();
  log().info("user={} req={} {} failed: wrong password", st.username, req_id,
             what);
}

} // namespace

user_actor::behavior_type user(user_ptr self, context_ptr ctx, caf::actor region,
                   std::string username) {
  auto& st = self->state;
  st.ctx = ctx;
  st.region = region;
  st.username = username;
  st.name = "user:" + username;
  st.failures = std::make_unique<failure_window>(
    ctx->auth.max_failed_logins,
    std::chrono::seconds(ctx->auth.failed_login_window_s));
  st.last_activity = std::chrono::steady_clock::now();
  auto& reg = runtime::metrics();
  st.throttled = &reg.get_counter("troupe_login_throttled_total",
                                  "Logins refused with 429 (too many "
                                  "failures)",
                                  "kind=\"user\",scope=\"key\"");
  st.failed = &reg.get_counter("troupe_login_failures_total",
                               "Logins refused for wrong credentials",
                               "kind=\"user\"");
  (void) dummy_hash();
  schedule_tick(self);
  return {
    [=](user_login& req) -> caf::result<user_login_reply> {
      auto& st = self->state;
      if (auto wait = throttled(self, req.req_id, "login"); wait.count() > 0)
        return make_throttled_error("too many failed logins for this user; "
                                    "try again later",
                                    runtime::retry_after_s(wait));
      auto rp = self->make_response_promise<user_login_reply>();
      auto key = st.ctx->secret_key;
      db_call<user_login_reply>(
        self, st.ctx->db,
        [req, key](storage::connection& c) -> caf::expected<user_login_reply> {
          auto u = storage::find_user(c, req.username);
          if (!u)
            return u.error();
          auto ok = storage::crypto::verify_password(
            *u ? (*u)->password_hash : dummy_hash(), req.password);
          if (!*u || !ok)
            return make_actor_error(errc::unauthorized,
                                    "invalid username or password");
          auto token = storage::crypto::random_token(32);
          storage::session_row s;
          s.token_hash = storage::crypto::keyed_hash(key, token);
          s.user = **u;
          s.created_ms = s.last_seen_ms = now_ms();
          if (auto err = storage::insert_session(c, s))
            return err;
          return user_login_reply{token, user_info{(*u)->username,
                                                   (*u)->role,
                                                   (*u)->tenant}};
        },
        [=](caf::expected<user_login_reply> r) mutable {
          auto& st = self->state;
          if (r) {
            st.failures->clear();
            log().info("user={} req={} logged in", st.username, req.req_id);
            rp.deliver(std::move(*r));
            return;
          }
          if (r.error() == errc::unauthorized)
            count_failure(self, req.req_id, "login");
          rp.deliver(std::move(r.error()));
        });
      return rp;
    },
    [=](change_password& req) -> caf::result<done> {
      auto& st = self->state;
      if (auto wait = throttled(self, req.req_id, "password change");
          wait.count() > 0)
        return make_throttled_error("too many wrong passwords for this "
                                    "user; try again later",
                                    runtime::retry_after_s(wait));
      auto rp = self->make_response_promise<done>();
      db_call<done>(
        self, st.ctx->db,
        [req, username = st.username](storage::connection& c)
          -> caf::expected<done> {
          auto u = storage::find_user(c, username);
          if (!u)
            return u.error();
          if (!*u)
            return make_actor_error(errc::unauthorized, "no such user");
          if (!storage::crypto::verify_password((*u)->password_hash,
                                                req.current_password))
            return make_actor_error(errc::forbidden,
                                    "the current password is wrong");
          auto set = storage::set_password(
            c, username, storage::crypto::hash_password(req.new_password),
            req.keep_session);
          if (!set)
            return set.error();
          return done{};
        },
        [=](caf::expected<done> r) mutable {
          auto& st = self->state;
          if (!r) {
            if (r.error() == errc::forbidden)
              count_failure(self, req.req_id, "password change");
            rp.deliver(std::move(r.error()));
            return;
          }
          st.failures->clear();
          log().info("user={} req={} changed its password", st.username,
                     req.req_id);
          // Its other sessions ended in the database; their live actors
          // end now, all but the asking session's.
          caf::anon_send(st.ctx->sessions, runtime::broadcast_atom::value,
                         caf::make_message(reset_atom::value, st.username,
                                           req.keep_session));
          rp.deliver(done{});
        });
      return rp;
    },
    [=](tick_atom) {
      auto& st = self->state;
      auto now = std::chrono::steady_clock::now();
      auto idle = now - st.last_activity;
      if (!st.passivating && st.failures->idle(now)
          && idle >= std::chrono::seconds(st.ctx->actors.passivate_after_s)) {
        st.passivating = true;
        caf::anon_send(st.region, passivate_atom::value, st.username,
                       self->address());
        return;
      }
      schedule_tick(self);
    },
    [=](stop_atom) { self->quit(); },
  };
}

user_actor spawn_user(caf::actor_system& sys, const context_ptr& ctx,
                      const caf::actor& region, const std::string& username) {
  return sys.spawn(user, ctx, region, username);
}

} // namespace troupe::actors
