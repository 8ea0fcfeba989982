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

/// A threshold rule. device_id empty: every device of the tenant.
struct rule {
  std::string id;
  std::string tenant;
  std::string device_id;
  std::string metric;
  std::string op;
  double value = 0;
  int64_t for_s = 0;
  int64_t created_ms = 0;
  std::string created_by;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rule& x) {
  return f(caf::meta::type_name("troupe.rule"), x.id, x.tenant, x.device_id,
           x.metric, x.op, x.value, x.for_s, x.created_ms, x.created_by);
}

/// Creates `spec` (id and created_ms are assigned; tenant empty: the
/// caller's).
struct create_rule {
  caller who;
  rule spec;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, create_rule& x) {
  return f(caf::meta::type_name("troupe.create_rule"), x.who, x.spec);
}

/// A page of rules after the opaque position `after` (empty: first page).
struct list_rules {
  caller who;
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_rules& x) {
  return f(caf::meta::type_name("troupe.list_rules"), x.who, x.after,
           x.limit);
}

struct rule_page {
  std::vector<rule> items;
  std::string next; // empty: no more
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rule_page& x) {
  return f(caf::meta::type_name("troupe.rule_page"), x.items, x.next);
}

struct delete_rule {
  caller who;
  std::string id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, delete_rule& x) {
  return f(caf::meta::type_name("troupe.delete_rule"), x.who, x.id);
}

/// An alert raised by the background analysis. Empty strings and -1 stand
/// for null.
struct alert {
  std::string id;
  std::string tenant;
  std::string device_id;
  std::string kind; // rule, anomaly, silence
  std::string rule_id;
  std::string metric;
  std::string message;
  std::string state; // open, closed
  int64_t opened_ms = 0;
  int64_t closed_ms = -1;
  bool has_value = false;
  double value = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, alert& x) {
  return f(caf::meta::type_name("troupe.alert"), x.id, x.tenant, x.device_id,
           x.kind, x.rule_id, x.metric, x.message, x.state, x.opened_ms,
           x.closed_ms, x.has_value, x.value);
}

/// A page of alerts, newest first. state empty: any.
struct list_alerts {
  caller who;
  std::string state;
  /// Only this device's alerts; empty: every device the caller sees.
  std::string device_id;
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_alerts& x) {
  return f(caf::meta::type_name("troupe.list_alerts"), x.who, x.state,
           x.device_id, x.after, x.limit);
}

struct alert_page {
  std::vector<alert> items;
  std::string next; // empty: no more
  /// Some data shard did not answer: its devices' alerts are missing.
  bool partial = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, alert_page& x) {
  return f(caf::meta::type_name("troupe.alert_page"), x.items, x.next,
           x.partial);
}

struct close_alert {
  caller who;
  std::string id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, close_alert& x) {
  return f(caf::meta::type_name("troupe.close_alert"), x.who, x.id);
}

// -- interface ------------------------------------------------------------------

/// The alerts actor's interface.
using alerts_actor = caf::typed_actor<
  caf::replies_to<list_rules>::with<rule_page>,
  caf::replies_to<create_rule>::with<rule>,
  caf::replies_to<delete_rule>::with<done>,
  caf::replies_to<list_alerts>::with<alert_page>,
  caf::replies_to<close_alert>::with<alert>>;

/// Spawns the alerts actor: threshold rules (list, create, delete) and
/// the alerts the background analysis opens (list, close) of the caller's
/// tenant; any role reads, operators and admins change (roles.hpp); another
/// tenant's rule or alert is 404. Stateless. Owner: actors::install.
alerts_actor spawn_alerts(caf::actor_system& sys, const context_ptr& ctx);

} // namespace troupe::actors
