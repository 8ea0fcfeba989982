#include "actors/admin.hpp"

#include <cstdio>
#include <memory>

#include <caf/all.hpp>

#include "actors/errc.hpp"
#include "actors/logger.hpp"
#include "actors/roles.hpp"
#include "actors/shards.hpp"
#include "cluster-config/config.hpp"
#include "runtime/atoms.hpp"
#include "runtime/db_pool.hpp"
#include "storage/crypto.hpp"
#include "storage/errc.hpp"
#include "storage/queries.hpp"
#include "actors/device.hpp"
#include "runtime/shard_map.hpp"

namespace troupe::actors {

namespace {

using runtime::db_call;
using runtime::db_reply;
using runtime::route_atom;

struct admin_state {
  std::string name = "admin";
  context_ptr ctx;
};

using admin_ptr = admin_actor::stateful_pointer<admin_state>;

/// Maps a storage conflict to a 409 with our wording.
caf::error conflict_or(caf::error err, const std::string& what) {
  if (err == storage::errc::conflict)
    return make_actor_error(errc::conflict, what);
  return err;
}

/// Runs `change(connection&) -> expected<bool>` on the device's row (false:
/// no such device, 404), then resets the live device actor so its next
/// message reloads from PostgreSQL (old secret and tokens, or the deleted
/// device, are gone from memory too), and answers `reply`. With `copy_too`,
/// the change runs first on the copy of a device placed on another data
/// shard (a rename or delete that lists must show).
template <class T, class F>
caf::typed_response_promise<T>
change_device(admin_ptr self, const std::string& id, F change, T reply,
              std::string what, bool copy_too = false) {
  auto rp = self->make_response_promise<T>();
  auto in_catalog = [=]() mutable {
    db_call<bool>(self, self->state.ctx->db, change,
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
                    // Answer once the live actor dropped its copy, so the
                    // old secret and tokens are refused from then on.
                    // Either way the change is stored: a failed reset only
                    // delays it until the actor passivates.
                    auto done_reset = [=]() mutable {
                      rp.deliver(std::move(reply));
                    };
                    self
                      ->request(self->state.ctx->devices,
                                std::chrono::seconds(10), route_atom::value,
                                id, caf::make_message(reset_atom::value))
                      .then([=](done) mutable { done_reset(); },
                            [=](caf::error& err) mutable {
                              log().warn("device={} reset failed: {}", id,
                                         config::describe(err));
                              done_reset();
                            });
                  });
  };
  if (!copy_too || self->state.ctx->data.size() < 2) {
    in_catalog();
    return rp;
  }
  db_call<std::optional<int32_t>>(
    self, self->state.ctx->db,
    [id](storage::connection& c) { return storage::device_data_shard(c, id); },
    [=](caf::expected<std::optional<int32_t>> shard) mutable {
      if (!shard) {
        rp.deliver(shard.error());
        return;
      }
      auto s = static_cast<size_t>(shard->value_or(0));
      if (s == 0 || s >= self->state.ctx->data.size()) {
        in_catalog();
        return;
      }
      db_call<bool>(self, self->state.ctx->data[s].db, change,
                    [=](caf::expected<bool> r) mutable {
                      if (!r)
                        rp.deliver(r.error());
                      else
                        in_catalog();
                    });
    });
  return rp;
}

/// Devices to register, placed and keyed (step 1 of a registration).
struct registration {
  std::vector<storage::new_device> rows;
  device_secrets secrets;
};

/// The devices of `rows` placed on data shard `s`.
std::vector<storage::new_device>
placed_on(const std::vector<storage::new_device>& rows, size_t s) {
  std::vector<storage::new_device> out;
  for (auto& r : rows)
    if (static_cast<size_t>(r.data_shard) == s)
      out.push_back(r);
  return out;
}

/// Steps 2 and 3 of a registration: each data shard (other than the
/// catalog) gets its copies of its new devices, then the catalog gets the
/// devices. A failure undoes the copies already made (best effort; a copy
/// left behind is replaced when the id is registered again), so a device is
/// either registered with its shard ready or not at all.
void register_placed(admin_ptr self, std::shared_ptr<registration> reg,
                     std::string by,
                     caf::typed_response_promise<device_secrets> rp) {
  auto& ctx = *self->state.ctx;
  auto undo = [self, reg] {
    on_every_shard<bool>(
      self, *self->state.ctx, shard_pool::db,
      [reg](size_t s, storage::connection& c) -> caf::expected<bool> {
        for (auto& d : placed_on(reg->rows, s))
          if (s != 0)
            if (auto err = storage::delete_device_copy(c, d.id, d.key))
              return err;
        return true;
      },
      [](std::vector<caf::expected<bool>> rs) {
        if (auto err = first_failure(rs))
          log().warn("registration undo left device copies: {}",
                     config::describe(*err));
      });
  };
  on_every_shard<bool>(
    self, ctx, shard_pool::db,
    [reg](size_t s, storage::connection& c) -> caf::expected<bool> {
      if (s == 0)
        return true;
      if (auto err = storage::mirror_devices(c, placed_on(reg->rows, s)))
        return err;
      return true;
    },
    [=](std::vector<caf::expected<bool>> copied) mutable {
      if (auto err = first_failure(copied)) {
        undo();
        rp.deliver(std::move(*err));
        return;
      }
      db_call<bool>(
        self, self->state.ctx->db,
        [reg](storage::connection& c) -> caf::expected<bool> {
          if (auto err = storage::insert_devices(c, reg->rows)) {
            auto what = config::describe(err);
            return conflict_or(std::move(err), what);
          }
          return true;
        },
        [=](caf::expected<bool> r) mutable {
          if (!r) {
            // A timed-out insert may still commit: then the copies stay.
            if (r.error() != caf::sec::request_timeout)
              undo();
            rp.deliver(std::move(r.error()));
            return;
          }
          log().info("registered {} devices by={}", reg->rows.size(), by);
          rp.deliver(std::move(reg->secrets));
        });
    });
}

} // namespace

admin_actor::behavior_type admin(admin_ptr self, context_ptr ctx) {
  self->state.ctx = ctx;
  return {
    // -- admin: tenants -----------------------------------------------------
    [=](create_tenant& req) -> caf::result<tenant_info> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage tenants");
      req.tenant.created_ms = now_ms();
      return db_reply<tenant_info>(self, self->state.ctx->db,
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
      return db_reply<tenant_list>(self, self->state.ctx->db, [](storage::connection& c) -> caf::expected<tenant_list> {
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
      return db_reply<user_record>(self, self->state.ctx->db, [req](storage::connection& c) -> caf::expected<user_record> {
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
      return db_reply<user_list>(self, self->state.ctx->db, [req](storage::connection& c) -> caf::expected<user_list> {
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
            caf::anon_send(self->state.ctx->sessions,
                           runtime::broadcast_atom::value,
                           caf::make_message(reset_atom::value,
                                             req.username, std::string{}));
            rp.deliver(done{});
          }
        });
      return rp;
    },
    [=](set_user_password& req) -> caf::result<done> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage users");
      auto rp = self->make_response_promise<done>();
      db_call<bool>(
        self, self->state.ctx->db,
        [req](storage::connection& c) {
          return storage::set_password(
            c, req.username, storage::crypto::hash_password(req.password), "");
        },
        [=](caf::expected<bool> r) mutable {
          if (!r) {
            rp.deliver(r.error());
            return;
          }
          if (!*r) {
            rp.deliver(make_actor_error(errc::not_found,
                                        "user " + req.username
                                          + " not found"));
            return;
          }
          log().info("user={} password set by={}", req.username,
                     req.who.username);
          // Its sessions ended in the database; live ones end now.
          caf::anon_send(self->state.ctx->sessions,
                         runtime::broadcast_atom::value,
                         caf::make_message(reset_atom::value, req.username,
                                           std::string{}));
          rp.deliver(done{});
        });
      return rp;
    },
    // -- admin: devices -----------------------------------------------------
    [=](register_devices& req) -> caf::result<device_secrets> {
      if (!is_admin(req.who))
        return forbidden(req.who, "register devices");
      auto key = self->state.ctx->secret_key;
      auto shards = self->state.ctx->shards;
      auto data_shards = self->state.ctx->data.size();
      auto rp = self->make_response_promise<device_secrets>();
      // 1. In the catalog: tenants exist, ids are free, keys reserved.
      db_call<registration>(
        self, self->state.ctx->db,
        [req, key, shards, data_shards](storage::connection& c)
          -> caf::expected<registration> {
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
          std::vector<std::string> ids;
          for (auto& d : req.devices)
            ids.push_back(d.id);
          auto dup = storage::first_existing_device(c, ids);
          if (!dup)
            return dup.error();
          if (*dup)
            return make_actor_error(errc::conflict,
                                    "device " + **dup + " already exists");
          auto keys = storage::reserve_device_keys(c, ids.size());
          if (!keys)
            return keys.error();
          registration out;
          for (size_t i = 0; i < req.devices.size(); ++i) {
            auto& d = req.devices[i];
            auto secret = storage::crypto::random_token(32);
            out.rows.push_back(
              {d.id, d.name, d.tenant,
               storage::crypto::keyed_hash(key, secret),
               static_cast<int32_t>(runtime::shard_map::shard_of(d.id, shards)),
               storage::place_device(d.id, data_shards), (*keys)[i],
               d.silence_s > 0 ? std::optional<int64_t>{d.silence_s}
                               : std::nullopt});
            out.secrets.items.push_back({d.id, d.name, d.tenant, secret});
          }
          return out;
        },
        [=](caf::expected<registration> reg) mutable {
          if (!reg) {
            rp.deliver(std::move(reg.error()));
            return;
          }
          register_placed(self, std::make_shared<registration>(
                                  std::move(*reg)),
                          req.who.username, rp);
        });
      return rp;
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
    [=](update_device& req) -> caf::result<done> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage devices");
      storage::device_change change;
      std::string what;
      if (req.name) {
        change.name = *req.name;
        what = "renamed";
      }
      if (req.silence_s) {
        change.silence_s = *req.silence_s;
        what += (what.empty() ? "" : ", ") + std::string{"silence window "}
                + (*req.silence_s > 0 ? std::to_string(*req.silence_s) + " s"
                                      : "the default");
      }
      return change_device(
        self, req.id,
        [id = req.id, change](storage::connection& c) {
          return storage::update_device(c, id, change);
        },
        done{}, what + " by=" + req.who.username, true);
    },
    [=](delete_device& req) -> caf::result<done> {
      if (!is_admin(req.who))
        return forbidden(req.who, "manage devices");
      return change_device(
        self, req.id,
        [id = req.id](storage::connection& c) {
          return storage::delete_device(c, id);
        },
        done{}, "deleted by=" + req.who.username, true);
    },
  };
}

admin_actor spawn_admin(caf::actor_system& sys, const context_ptr& ctx) {
  return sys.spawn(admin, ctx);
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
