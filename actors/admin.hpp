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

struct tenant_info {
  std::string id;
  std::string name;
  int64_t created_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tenant_info& x) {
  return f(caf::meta::type_name("troupe.tenant_info"), x.id, x.name,
           x.created_ms);
}

struct create_tenant {
  caller who;
  tenant_info tenant;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, create_tenant& x) {
  return f(caf::meta::type_name("troupe.create_tenant"), x.who, x.tenant);
}

struct list_tenants {
  caller who;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_tenants& x) {
  return f(caf::meta::type_name("troupe.list_tenants"), x.who);
}

struct tenant_list {
  std::vector<tenant_info> items;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tenant_list& x) {
  return f(caf::meta::type_name("troupe.tenant_list"), x.items);
}

struct user_record {
  std::string username;
  std::string role;
  std::string tenant;
  int64_t created_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_record& x) {
  return f(caf::meta::type_name("troupe.user_record"), x.username, x.role,
           x.tenant, x.created_ms);
}

struct create_user {
  caller who;
  std::string username;
  std::string password;
  std::string role;
  std::string tenant;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, create_user& x) {
  return f(caf::meta::type_name("troupe.create_user"), x.who, x.username,
           x.password, x.role, x.tenant);
}

struct list_users {
  caller who;
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_users& x) {
  return f(caf::meta::type_name("troupe.list_users"), x.who, x.after,
           x.limit);
}

struct user_list {
  std::vector<user_record> items;
  std::string next;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_list& x) {
  return f(caf::meta::type_name("troupe.user_list"), x.items, x.next);
}

struct delete_user {
  caller who;
  std::string username;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, delete_user& x) {
  return f(caf::meta::type_name("troupe.delete_user"), x.who, x.username);
}

struct new_device_spec {
  std::string id;
  std::string name;
  std::string tenant;
  /// Its own silence window, s; 0: the node's analysis.silence_s.
  int64_t silence_s = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, new_device_spec& x) {
  return f(caf::meta::type_name("troupe.new_device_spec"), x.id, x.name,
           x.tenant, x.silence_s);
}

struct register_devices {
  caller who;
  std::vector<new_device_spec> devices;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, register_devices& x) {
  return f(caf::meta::type_name("troupe.register_devices"), x.who, x.devices);
}

struct device_secret {
  std::string id;
  std::string name;
  std::string tenant;
  std::string secret;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_secret& x) {
  return f(caf::meta::type_name("troupe.device_secret"), x.id, x.name,
           x.tenant, x.secret);
}

struct device_secrets {
  std::vector<device_secret> items;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_secrets& x) {
  return f(caf::meta::type_name("troupe.device_secrets"), x.items);
}

struct rotate_secret {
  caller who;
  std::string id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rotate_secret& x) {
  return f(caf::meta::type_name("troupe.rotate_secret"), x.who, x.id);
}

struct delete_device {
  caller who;
  std::string id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, delete_device& x) {
  return f(caf::meta::type_name("troupe.delete_device"), x.who, x.id);
}

struct set_user_password {
  caller who;
  std::string username;
  std::string password;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, set_user_password& x) {
  return f(caf::meta::type_name("troupe.set_user_password"), x.who,
           x.username, x.password);
}

/// Changes a device's name and/or its silence window (an absent field stays
/// as it is; a window of 0 goes back to the node's analysis.silence_s).
struct update_device {
  caller who;
  std::string id;
  caf::optional<std::string> name;
  caf::optional<int64_t> silence_s;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, update_device& x) {
  return f(caf::meta::type_name("troupe.update_device"), x.who, x.id, x.name,
           x.silence_s);
}

// -- interface ------------------------------------------------------------------

/// The admin actor's interface (admin role only).
using admin_actor = caf::typed_actor<
  caf::replies_to<create_tenant>::with<tenant_info>,
  caf::replies_to<list_tenants>::with<tenant_list>,
  caf::replies_to<create_user>::with<user_record>,
  caf::replies_to<list_users>::with<user_list>,
  caf::replies_to<delete_user>::with<done>,
  caf::replies_to<set_user_password>::with<done>,
  caf::replies_to<register_devices>::with<device_secrets>,
  caf::replies_to<rotate_secret>::with<device_secret>,
  caf::replies_to<update_device>::with<done>,
  caf::replies_to<delete_device>::with<done>>;

/// Spawns the admin actor: tenants, users (argon2id hashes; a deleted
/// user's sessions end at once; so do they when an admin sets its password),
/// bulk device registration (secrets shown once), changes of name and
/// silence window, secret rotation
/// and deletion (the live device actor drops its copy before the answer). Admin role only (roles.hpp). Stateless apart
/// from the shared context. Owner: actors::install.
admin_actor spawn_admin(caf::actor_system& sys, const context_ptr& ctx);

/// Creates the first admin: TROUPE_ADMIN_USER/PASSWORD when given (if that
/// user does not exist yet), otherwise, if there is no admin at all, `admin`
/// with a random password that is printed once. Runs at startup, blocking.
[[nodiscard]] caf::error bootstrap_admin(const std::string& database_url,
                                         const std::string& user,
                                         const std::string& password);

} // namespace troupe::actors
