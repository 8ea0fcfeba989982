#pragma once

#include <string>

#include "actors/errc.hpp"
#include "actors/types.hpp"

/// Who may do what, in one place (API.md, Roles and tenants): admin does
/// everything in every tenant; operator reads and sends commands (and
/// manages rules) within its tenant; viewer reads within its tenant. A
/// resource of another tenant is invisible (404), not forbidden.
namespace troupe::actors {

inline bool is_admin(const caller& who) {
  return who.role == "admin";
}

/// Sends commands, manages rules and closes alerts.
inline bool may_operate(const caller& who) {
  return who.role == "admin" || who.role == "operator";
}

/// Sees resources of `tenant`.
inline bool sees(const caller& who, const std::string& tenant) {
  return is_admin(who) || (!who.tenant.empty() && who.tenant == tenant);
}

/// The 403 for a role that may not do `what`.
inline caf::error forbidden(const caller& who, const char* what) {
  return make_actor_error(errc::forbidden,
                          "role " + who.role + " may not " + what);
}

/// The tenant filter of a listing: empty (all) for admins.
inline std::string tenant_scope(const caller& who) {
  return is_admin(who) ? std::string{} : who.tenant;
}

} // namespace troupe::actors
