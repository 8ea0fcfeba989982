#include "actors/directory.hpp"

#include <cstdio>
#include <memory>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "actors/messages.hpp"
#include "actors/roles.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/shard_map.hpp"
#include "storage/crypto.hpp"
#include "storage/errc.hpp"
#include "storage/queries.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::route_atom;

struct directory_state {
  std::string name = "directory";
  context_ptr ctx;
};

using directory_actor = caf::stateful_actor<directory_state>;

caf::error forbidden(const caller& who, const char* what) {
  return make_actor_error(errc::forbidden, "role " + who.role + " may not "
                                             + what);
}


/// Maps a storage conflict to a 409 with our wording.
caf::error conflict_or(caf::error err, const std::string& what) {
  if (err == storage::errc::conflict)
    return make_actor_error(errc::conflict, what);
  return err;
}

template <class T, class F>
caf::typed_response_promise<T> run_db(directory_actor* self, F fn) {
  auto rp = self->make_response_promise<T>();
  db_call<T>(self, self->state.ctx->db, std::move(fn),
             [rp](caf::expected<T> r) mutable {
               if (r)
                 rp.deliver(std::move(*r));
               else
                 rp.deliver(std::move(r.error()));
             });
  return rp;
}




/// Page positions "<ms>:<id>", opaque to the edge.
std::string position(int64_t ms, const std::string& id) {
  return std::to_string(ms) + ":" + id;
}

bool parse_position(const std::string& pos, int64_t& ms, std::string& id) {
  auto colon = pos.find(':');
  if (colon == std::string::npos || colon == 0)
    return false;
  char* end = nullptr;
  auto text = pos.substr(0, colon);
  ms = std::strtoll(text.c_str(), &end, 10);
  if (!end || *end != '\0')
    return false;
  id = pos.substr(colon + 1);
  return true;
}

rule to_rule(const storage::rule_row& r) {
  return {r.id,    r.tenant,   r.device_id,  r.metric,    r.op,
          r.value, r.for_s,    r.created_ms, r.created_by};
}

alert to_alert(const storage::alert_row& a) {
  alert x;
  x.id = a.id;
  x.tenant = a.tenant;
  x.device_id = a.device_id;
  x.kind = a.kind;
  x.rule_id = a.rule_id;
  x.metric = a.metric;
  x.message = a.message;
  x.state = a.state;
  x.opened_ms = a.opened_ms;
  x.closed_ms = a.closed_ms.value_or(-1);
  x.has_value = a.value.has_value();
  x.value = a.value.value_or(0);
  return x;
}

/// Runs `change(connection&) -> expected<bool>` on the device's row (false:
/// no such device, 404), then resets the live device actor so its next
/// message reloads from PostgreSQL (old secret and tokens, or the deleted
/// device, are gone from memory too), and answers `reply`.
template <class T, class F>
caf::typed_response_promise<T>
change_device(directory_actor* self, const std::string& id, F change, T reply,
              std::string what) {
  auto rp = self->make_response_promise<T>();
  db_call<bool>(self, self->state.ctx->db, std::move(change),
                [=](caf::expected<bool> r) mutable {
                  if (!r) {
                    rp.deliver(r.error());
                    return;
                  }
                  if (!*r) {
                    rp.deliver(make_actor_error(errc::not_found,
                                                "device " + id
                                                  + " not found"));
                    return;
                  }
                  log().info("device={} {}", id, what);
                  // Answer once the live actor dropped its copy, so the old
                  // secret and tokens are refused from then on. Either way
                  // the change is stored: a failed reset only delays it
                  // until the actor passivates.
                  auto done_reset = [=]() mutable {
                    rp.deliver(std::move(reply));
                  };
                  self
                    ->request(self->state.ctx->devices,
                              std::chrono::seconds(10), route_atom::value, id,
                              caf::make_message(reset_atom::value))
                    .then([=](done) mutable { done_reset(); },
                          [=](caf::error& err) mutable {
                            log().warn("device={} reset failed: {}", id,
                                       config::describe(err));
                            done_reset();
                          });
                });
  return rp;
}

} // namespace

caf::behavior directory(directory_actor* self, context_ptr ctx) {
  self->state.ctx = ctx;
  return {
    [=](list_devices& req) -> caf::result<device_page> {
      auto& st = self->state;
      storage::device_filter f;
      f.tenant = is_admin(req.who) ? "" : req.who.tenant;
      if (!is_admin(req.who) && f.tenant.empty())
        return device_page{};
      f.q = req.q;
      if (req.online >= 0)
        f.online = req.online == 1;
      f.online_since_ms = now_ms() - st.ctx->actors.online_window_s * 1000;
      f.after = req.after;
      f.limit = static_cast<size_t>(req.limit);
      auto window = st.ctx->actors.online_window_s * 1000;
      auto limit = req.limit;
      // Straight from PostgreSQL (two queries a page): a list wakes no
      // device actor. Telemetry commits, logins and polls keep last_seen.
      return run_db<device_page>(
        self, [f, window, limit](storage::connection& c)
                -> caf::expected<device_page> {
          auto rows = storage::list_device_summaries(c, f);
          if (!rows)
            return rows.error();
          device_page page;
          auto now = now_ms();
          for (auto& d : *rows) {
            device_view v;
            v.id = d.id;
            v.name = d.name;
            v.tenant = d.tenant;
            v.last_seen_ms = d.last_seen_ms.value_or(-1);
            v.online = d.last_seen_ms && *d.last_seen_ms >= now - window;
            for (auto& l : d.latest) {
              v.latest[l.metric] = latest_value{l.value, l.ts_ms};
              v.metrics.push_back(l.metric);
            }
            page.items.push_back(std::move(v));
          }
          if (rows->size() == static_cast<size_t>(limit) && !rows->empty())
            page.next = rows->back().id;
          return page;
        });
    },
    // -- rules and alerts ------------------------------------------------------
    // Any role reads its tenant's rules and alerts (admins: all tenants);
    // operators and admins change them. Another tenant's rule or alert is
    // 404, as its devices are.
    [=](list_rules& req) -> caf::result<rule_page> {
      int64_t after_ms = -1;
      std::string after_id;
      if (!req.after.empty() && !parse_position(req.after, after_ms, after_id))
        return make_actor_error(errc::bad_request, "invalid cursor");
      if (!is_admin(req.who) && req.who.tenant.empty())
        return rule_page{};
      return run_db<rule_page>(
        self, [req, after_ms, after_id](storage::connection& c)
                -> caf::expected<rule_page> {
          auto rows = storage::list_rules(c, tenant_scope(req.who), after_ms,
                                          after_id,
                                          static_cast<size_t>(req.limit));
          if (!rows)
            return rows.error();
          rule_page out;
          for (auto& r : *rows)
            out.items.push_back(to_rule(r));
          if (rows->size() == static_cast<size_t>(req.limit) && !rows->empty())
            out.next = position(rows->back().created_ms, rows->back().id);
          return out;
        });
    },
    [=](create_rule& req) -> caf::result<rule> {
      if (!may_operate(req.who))
        return forbidden(req.who, "manage rules");
      auto spec = req.spec;
      if (!is_admin(req.who)) {
        if (!spec.tenant.empty() && spec.tenant != req.who.tenant)
          return make_actor_error(errc::forbidden,
                                  "only admins may create rules for another "
                                  "tenant");
        spec.tenant = req.who.tenant;
      }
      if (spec.tenant.empty() && spec.device_id.empty())
        return make_actor_error(errc::bad_request,
                                "tenant is required (the caller has none)");
      spec.id = storage::crypto::random_token(16);
      spec.created_ms = now_ms();
      spec.created_by = req.who.username;
      return run_db<rule>(
        self,
        [spec, who = req.who](storage::connection& c) mutable
          -> caf::expected<rule> {
          if (!spec.device_id.empty()) {
            auto t = storage::device_tenant(c, spec.device_id);
            if (!t)
              return t.error();
            // Unknown, or another tenant's: the same answer.
            if (!*t || !sees(who, **t)
                || (!spec.tenant.empty() && spec.tenant != **t))
              return make_actor_error(errc::not_found,
                                      "device " + spec.device_id
                                        + " not found");
            spec.tenant = **t;
          } else if (is_admin(who)) {
            auto exists = storage::tenant_exists(c, spec.tenant);
            if (!exists)
              return exists.error();
            if (!*exists)
              return make_actor_error(errc::bad_request,
                                      "tenant " + spec.tenant
                                        + " does not exist");
          }
          storage::rule_row row{spec.id,     spec.tenant, spec.device_id,
                                spec.metric, spec.op,     spec.value,
                                spec.for_s,  spec.created_ms,
                                spec.created_by};
          if (auto err = storage::insert_rule(c, row))
            return err;
          log().info("rule={} tenant={} device={} {} {} {} for_s={} by={}",
                     row.id, row.tenant, row.device_id, row.metric, row.op,
                     row.value, row.for_s, who.username);
          return spec;
        });
    },
    [=](delete_rule& req) -> caf::result<done> {
      return run_db<done>(
        self, [req](storage::connection& c) -> caf::expected<done> {
          auto r = storage::find_rule(c, req.id);
          if (!r)
            return r.error();
          if (!*r || !sees(req.who, (*r)->tenant))
            return make_actor_error(errc::not_found,
                                    "rule " + req.id + " not found");
          if (!may_operate(req.who))
            return forbidden(req.who, "manage rules");
          auto gone = storage::delete_rule(c, req.id, now_ms());
          if (!gone)
            return gone.error();
          if (!*gone)
            return make_actor_error(errc::not_found,
                                    "rule " + req.id + " not found");
          log().info("rule={} deleted by={}", req.id, req.who.username);
          return done{};
        });
    },
    [=](list_alerts& req) -> caf::result<alert_page> {
      storage::alert_filter f;
      if (!req.after.empty()
          && !parse_position(req.after, f.before_ms, f.before_id))
        return make_actor_error(errc::bad_request, "invalid cursor");
      if (!is_admin(req.who) && req.who.tenant.empty())
        return alert_page{};
      f.tenant = tenant_scope(req.who);
      f.state = req.state;
      f.limit = static_cast<size_t>(req.limit);
      return run_db<alert_page>(
        self, [f, limit = req.limit](storage::connection& c)
                -> caf::expected<alert_page> {
          auto rows = storage::list_alerts(c, f);
          if (!rows)
            return rows.error();
          alert_page out;
          for (auto& a : *rows)
            out.items.push_back(to_alert(a));
          if (rows->size() == static_cast<size_t>(limit) && !rows->empty())
            out.next = position(rows->back().opened_ms, rows->back().id);
          return out;
        });
    },
    [=](close_alert& req) -> caf::result<alert> {
      return run_db<alert>(
        self, [req](storage::connection& c) -> caf::expected<alert> {
          auto a = storage::find_alert(c, req.id);
          if (!a)
            return a.error();
          if (!*a || !sees(req.who, (*a)->tenant))
            return make_actor_error(errc::not_found,
                                    "alert " + req.id + " not found");
          if (!may_operate(req.who))
            return forbidden(req.who, "close alerts");
          auto closed = storage::close_alert(c, req.id, now_ms());
          if (!closed)
            return closed.error();
          // Closed before, or by a pass meanwhile.
          if (!*closed)
            return make_actor_error(errc::conflict,
                                    "alert " + req.id + " is already closed");
          log().info("alert={} closed by={}", req.id, req.who.username);
          return to_alert(**closed);
        });
    },
    // -- admin: tenants -----------------------------------------------------
    [=](create_tenant& req) -> caf::result<tenant_info> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage tenants");
      req.tenant.created_ms = now_ms();
      return run_db<tenant_info>(
        self,
        [t = req.tenant](storage::connection& c) -> caf::expected<tenant_info> {
          if (auto err = storage::insert_tenant(c, {t.id, t.name,
                                                    t.created_ms}))
            return conflict_or(std::move(err),
                               "tenant " + t.id + " already exists");
          return t;
        });
    },
    [=](list_tenants& req) -> caf::result<tenant_list> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage tenants");
      return run_db<tenant_list>(
        self, [](storage::connection& c) -> caf::expected<tenant_list> {
          auto rows = storage::list_tenants(c);
          if (!rows)
            return rows.error();
          tenant_list out;
          for (auto& t : *rows)
            out.items.push_back({t.id, t.name, t.created_ms});
          return out;
        });
    },
    // -- admin: users -------------------------------------------------------
    [=](create_user& req) -> caf::result<user_record> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage users");
      return run_db<user_record>(
        self, [req](storage::connection& c) -> caf::expected<user_record> {
          if (!req.tenant.empty()) {
            auto exists = storage::tenant_exists(c, req.tenant);
            if (!exists)
              return exists.error();
            if (!*exists)
              return make_actor_error(errc::bad_request,
                                      "tenant " + req.tenant
                                        + " does not exist");
          }
          storage::user_row u;
          u.username = req.username;
          u.password_hash = storage::crypto::hash_password(req.password);
          u.role = req.role;
          u.tenant = req.tenant;
          u.created_ms = now_ms();
          if (auto err = storage::insert_user(c, u))
            return conflict_or(std::move(err),
                               "user " + req.username + " already exists");
          log().info("user={} created role={} tenant={} by={}", u.username,
                     u.role, u.tenant, req.who.username);
          return user_record{u.username, u.role, u.tenant, u.created_ms};
        });
    },
    [=](list_users& req) -> caf::result<user_list> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage users");
      return run_db<user_list>(
        self, [req](storage::connection& c) -> caf::expected<user_list> {
          auto rows = storage::list_users(c, req.after,
                                          static_cast<size_t>(req.limit));
          if (!rows)
            return rows.error();
          user_list out;
          for (auto& u : *rows)
            out.items.push_back({u.username, u.role, u.tenant, u.created_ms});
          if (rows->size() == static_cast<size_t>(req.limit) && !rows->empty())
            out.next = rows->back().username;
          return out;
        });
    },
    [=](delete_user& req) -> caf::result<done> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage users");
      if (req.username == req.who.username)
        return make_actor_error(errc::conflict,
                                "an admin cannot delete itself");
      auto rp = self->make_response_promise<done>();
      db_call<bool>(
        self, self->state.ctx->db,
        [req](storage::connection& c) {
          return storage::delete_user(c, req.username);
        },
        [=](caf::expected<bool> r) mutable {
          if (!r) {
            rp.deliver(r.error());
          } else if (!*r) {
            rp.deliver(make_actor_error(errc::not_found,
                                        "user " + req.username
                                          + " not found"));
          } else {
            // Live sessions of the user end now.
            self->send(self->state.ctx->sessions, runtime::broadcast_atom::value,
                       caf::make_message(reset_atom::value, req.username));
            rp.deliver(done{});
          }
        });
      return rp;
    },
    // -- admin: devices -----------------------------------------------------
    [=](register_devices& req) -> caf::result<device_secrets> {
      if (!is_admin(req.who))
        return forbidden(req.who, "register devices");
      auto key = self->state.ctx->secret_key;
      auto shards = self->state.ctx->shards;
      return run_db<device_secrets>(
        self,
        [req, key, shards](storage::connection& c)
          -> caf::expected<device_secrets> {
          std::vector<std::string> tenants;
          for (auto& d : req.devices)
            if (std::find(tenants.begin(), tenants.end(), d.tenant)
                == tenants.end())
              tenants.push_back(d.tenant);
          for (auto& t : tenants) {
            auto exists = storage::tenant_exists(c, t);
            if (!exists)
              return exists.error();
            if (!*exists)
              return make_actor_error(errc::bad_request,
                                      "tenant " + t + " does not exist");
          }
          device_secrets out;
          std::vector<storage::new_device> rows;
          for (auto& d : req.devices) {
            auto secret = storage::crypto::random_token(32);
            rows.push_back({d.id, d.name, d.tenant,
                            storage::crypto::keyed_hash(key, secret),
                            static_cast<int32_t>(
                              runtime::shard_map::shard_of(d.id, shards))});
            out.items.push_back({d.id, d.name, d.tenant, secret});
          }
          if (auto err = storage::insert_devices(c, rows)) {
            auto what = config::describe(err);
            return conflict_or(std::move(err), what);
          }
          log().info("registered {} devices by={}", rows.size(),
                     req.who.username);
          return out;
        });
    },
    [=](rotate_secret& req) -> caf::result<device_secret> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage devices");
      auto secret = storage::crypto::random_token(32);
      auto hash = storage::crypto::keyed_hash(self->state.ctx->secret_key,
                                              secret);
      return change_device(
        self, req.id,
        [id = req.id, hash](storage::connection& c) {
          return storage::update_device_secret(c, id, hash);
        },
        device_secret{req.id, "", "", secret},
        "secret rotated by=" + req.who.username);
    },
    [=](delete_device& req) -> caf::result<done> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage devices");
      return change_device(
        self, req.id,
        [id = req.id](storage::connection& c) {
          return storage::delete_device(c, id);
        },
        done{}, "deleted by=" + req.who.username);
    },
  };
}

caf::actor spawn_directory(caf::actor_system& sys, const context_ptr& ctx) {
  return sys.spawn(directory, ctx);
}

caf::error bootstrap_admin(const std::string& database_url,
                           const std::string& user,
                           const std::string& password) {
  storage::connection c{database_url};
  if (!user.empty()) {
    auto existing = storage::find_user(c, user);
    if (!existing)
      return existing.error();
    if (*existing)
      return caf::none;
    storage::user_row u{user, storage::crypto::hash_password(password),
                        "admin", "", now_ms()};
    if (auto err = storage::insert_user(c, u);
        err && err != storage::errc::conflict)
      return err;
    log().info("created admin user={} from TROUPE_ADMIN_USER", user);
    return caf::none;
  }
  auto admins = storage::count_admins(c);
  if (!admins)
    return admins.error();
  if (*admins > 0)
    return caf::none;
  auto pw = storage::crypto::random_token(18);
  storage::user_row u{"admin", storage::crypto::hash_password(pw), "admin", "",
                      now_ms()};
  if (auto err = storage::insert_user(c, u))
    return err == storage::errc::conflict ? caf::none : err;
  // Printed once, to stdout, never logged.
  std::printf("\n  troupe: created the first admin.\n"
              "    username: admin\n    password: %s\n"
              "  (shown only now; set TROUPE_ADMIN_USER/TROUPE_ADMIN_PASSWORD "
              "to choose your own)\n\n",
              pw.c_str());
  std::fflush(stdout);
  return caf::none;
}

} // namespace troupe::actors
