#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

/// What the messages of several actors share: who asks, commands, points,
/// a device's view, a user, "done". Each has an `inspect` beside it so it
/// can cross nodes; names are stable ("troupe.x") and registered on every
/// node (type_ids.hpp). Each actor's own messages and its typed interface
/// are in its header (device.hpp, session.hpp, ...).
namespace troupe::actors {

// -- atoms ----------------------------------------------------------------------

using reset_atom = caf::atom_constant<caf::atom("reset")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using replay_atom = caf::atom_constant<caf::atom("replay")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using logout_atom = caf::atom_constant<caf::atom("logout")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;

// -- shared pieces --------------------------------------------------------------

/// Who asks, as the session actor vouched for it.
struct caller {
  std::string username;
  std::string role;   // admin, operator, viewer
  std::string tenant; // empty for a tenant-less admin
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, caller& x) {
  return f(caf::meta::type_name("troupe.caller"), x.username, x.role,
           x.tenant, x.req_id);
}

/// A command as devices and users see it.
struct command {
  std::string id;
  std::string name;
  std::string args_json = "{}";
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  std::string status;
  int64_t delivered_ms = -1; // -1: not yet
  std::string result_json;   // empty: none
  int64_t finished_ms = -1;  // -1: not yet
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command& x) {
  return f(caf::meta::type_name("troupe.command"), x.id, x.name, x.args_json,
           x.created_ms, x.expires_ms, x.status, x.delivered_ms,
           x.result_json, x.finished_ms);
}

struct point {
  std::string metric;
  int64_t ts_ms = 0;
  double value = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, point& x) {
  return f(caf::meta::type_name("troupe.point"), x.metric, x.ts_ms, x.value);
}

struct latest_value {
  double value = 0;
  int64_t ts_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, latest_value& x) {
  return f(caf::meta::type_name("troupe.latest_value"), x.value, x.ts_ms);
}

/// A device as users see it (list and detail).
struct device_view {
  std::string id;
  std::string name;
  std::string tenant;
  bool online = false;
  int64_t last_seen_ms = -1; // -1: never
  std::map<std::string, latest_value> latest;
  int64_t pending_commands = 0;
  std::vector<std::string> metrics;
  /// In a list, a device whose data shard did not answer: its id, name
  /// and tenant come from the catalog; its last_seen is null or old there
  /// and its latest values are missing.
  bool data_unavailable = false;
  /// Its own silence window, s; 0: the node's analysis.silence_s.
  int64_t silence_s = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_view& x) {
  return f(caf::meta::type_name("troupe.device_view"), x.id, x.name, x.tenant,
           x.online, x.last_seen_ms, x.latest, x.pending_commands, x.metrics,
           x.data_unavailable, x.silence_s);
}

struct user_info {
  std::string username;
  std::string role;
  std::string tenant;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_info& x) {
  return f(caf::meta::type_name("troupe.user_info"), x.username, x.role,
           x.tenant);
}

/// Generic success for requests with nothing to return.
struct done {
  bool ok = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, done& x) {
  return f(caf::meta::type_name("troupe.done"), x.ok);
}

} // namespace troupe::actors
