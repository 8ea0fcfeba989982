#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

/// The messages the edge sends to troupe's actors and their replies. Each
/// has an `inspect` beside it so it can cross nodes; names are stable
/// ("troupe.x") and registered on every node (type_ids.hpp).
namespace troupe::actors {

// -- atoms ----------------------------------------------------------------------

using reset_atom = caf::atom_constant<caf::atom("reset")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using replay_atom = caf::atom_constant<caf::atom("replay")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using logout_atom = caf::atom_constant<caf::atom("logout")>;
using load_atom = caf::atom_constant<caf::atom("load")>;

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

// -- device side ----------------------------------------------------------------

/// Device login with its secret.
struct device_login {
  std::string secret;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_login& x) {
  return f(caf::meta::type_name("troupe.device_login"), x.secret, x.req_id);
}

struct device_login_reply {
  std::string token;
  int64_t expires_in_s = 0;
  std::vector<command> commands;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_login_reply& x) {
  return f(caf::meta::type_name("troupe.device_login_reply"), x.token,
           x.expires_in_s, x.commands);
}

/// A validated telemetry batch. batch_id < 0: none given.
struct telemetry {
  std::string token;
  int64_t batch_id = -1;
  std::vector<point> points;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, telemetry& x) {
  return f(caf::meta::type_name("troupe.telemetry"), x.token, x.batch_id,
           x.points, x.req_id);
}

struct telemetry_reply {
  int64_t accepted = 0;
  bool duplicate = false;
  std::vector<command> commands;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, telemetry_reply& x) {
  return f(caf::meta::type_name("troupe.telemetry_reply"), x.accepted,
           x.duplicate, x.commands);
}

/// Long-poll for commands, holding up to wait_ms.
struct poll_commands {
  std::string token;
  int64_t wait_ms = 0;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, poll_commands& x) {
  return f(caf::meta::type_name("troupe.poll_commands"), x.token, x.wait_ms,
           x.req_id);
}

/// The client of long-poll `req_id` went away: the device drops that
/// waiter at once instead of holding it until the timeout. No reply.
struct cancel_poll {
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cancel_poll& x) {
  return f(caf::meta::type_name("troupe.cancel_poll"), x.req_id);
}

struct commands_reply {
  std::vector<command> commands;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, commands_reply& x) {
  return f(caf::meta::type_name("troupe.commands_reply"), x.commands);
}

/// A device reports the outcome of a command.
struct command_result {
  std::string token;
  std::string command_id;
  std::string status; // done, failed
  std::string result_json;
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_result& x) {
  return f(caf::meta::type_name("troupe.command_result"), x.token,
           x.command_id, x.status, x.result_json, x.req_id);
}

// -- user side -------------------------------------------------------------------

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
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_view& x) {
  return f(caf::meta::type_name("troupe.device_view"), x.id, x.name, x.tenant,
           x.online, x.last_seen_ms, x.latest, x.pending_commands, x.metrics);
}

struct get_device {
  caller who;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, get_device& x) {
  return f(caf::meta::type_name("troupe.get_device"), x.who);
}

struct post_command {
  caller who;
  std::string name;
  std::string args_json = "{}";
  int64_t ttl_s = 0; // 0: the configured default
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, post_command& x) {
  return f(caf::meta::type_name("troupe.post_command"), x.who, x.name,
           x.args_json, x.ttl_s);
}

struct list_commands {
  caller who;
  std::string status; // empty: all
  int64_t after_seq = 0;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_commands& x) {
  return f(caf::meta::type_name("troupe.list_commands"), x.who, x.status,
           x.after_seq, x.limit);
}

struct command_page {
  std::vector<command> items;
  int64_t next_seq = -1; // -1: no more
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_page& x) {
  return f(caf::meta::type_name("troupe.command_page"), x.items, x.next_seq);
}

struct history {
  caller who;
  std::string metric;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
  int64_t limit = 1000;
  int64_t step_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, history& x) {
  return f(caf::meta::type_name("troupe.history"), x.who, x.metric, x.from_ms,
           x.to_ms, x.limit, x.step_ms);
}

/// Raw points ([ts, value]) or buckets ([start, count, min, max, avg]).
struct history_reply {
  std::string metric;
  std::vector<std::pair<int64_t, double>> points;
  std::vector<std::vector<double>> buckets;
  bool bucketed = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, history_reply& x) {
  return f(caf::meta::type_name("troupe.history_reply"), x.metric, x.points,
           x.buckets, x.bucketed);
}

// -- sessions ---------------------------------------------------------------------

/// Asks the session actor who the token belongs to (and touches it).
struct session_auth {
  std::string req_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_auth& x) {
  return f(caf::meta::type_name("troupe.session_auth"), x.req_id);
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

// -- directory and admin ------------------------------------------------------------

struct list_devices {
  caller who;
  std::string q;
  int8_t online = -1; // -1: any, 0: offline, 1: online
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_devices& x) {
  return f(caf::meta::type_name("troupe.list_devices"), x.who, x.q, x.online,
           x.after, x.limit);
}

struct device_page {
  std::vector<device_view> items;
  std::string next; // empty: no more
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, device_page& x) {
  return f(caf::meta::type_name("troupe.device_page"), x.items, x.next);
}

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
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, new_device_spec& x) {
  return f(caf::meta::type_name("troupe.new_device_spec"), x.id, x.name,
           x.tenant);
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

// -- analysis, rules and alerts ----------------------------------------------------

/// One hourly rollup of a metric.
struct rollup {
  int64_t hour_ms = 0;
  int64_t count = 0;
  double min = 0;
  double max = 0;
  double avg = 0;
  bool anomaly = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rollup& x) {
  return f(caf::meta::type_name("troupe.rollup"), x.hour_ms, x.count, x.min,
           x.max, x.avg, x.anomaly);
}

struct metric_analysis {
  std::string metric;
  std::vector<rollup> rollups;
  int64_t anomalies = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, metric_analysis& x) {
  return f(caf::meta::type_name("troupe.metric_analysis"), x.metric,
           x.rollups, x.anomalies);
}

/// Asks a device actor for its analysis results with hour in [from, to].
struct get_analysis {
  caller who;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, get_analysis& x) {
  return f(caf::meta::type_name("troupe.get_analysis"), x.who, x.from_ms,
           x.to_ms);
}

struct analysis_reply {
  std::string device;
  std::vector<metric_analysis> metrics;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, analysis_reply& x) {
  return f(caf::meta::type_name("troupe.analysis_reply"), x.device,
           x.metrics);
}

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
  std::string after;
  int64_t limit = 100;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_alerts& x) {
  return f(caf::meta::type_name("troupe.list_alerts"), x.who, x.state,
           x.after, x.limit);
}

struct alert_page {
  std::vector<alert> items;
  std::string next; // empty: no more
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, alert_page& x) {
  return f(caf::meta::type_name("troupe.alert_page"), x.items, x.next);
}

struct close_alert {
  caller who;
  std::string id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, close_alert& x) {
  return f(caf::meta::type_name("troupe.close_alert"), x.who, x.id);
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
