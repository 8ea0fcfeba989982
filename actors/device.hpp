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

/// Cancels a command no device has received yet (operator, admin): it is
/// never delivered. Answers the command; 409 when it is past pending.
struct cancel_command {
  caller who;
  std::string command_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cancel_command& x) {
  return f(caf::meta::type_name("troupe.cancel_command"), x.who,
           x.command_id);
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

// -- interface ------------------------------------------------------------------

/// The device actor's interface: the device side (login, telemetry,
/// long-poll, results), the user side (view, commands, history, analysis)
/// and its lifecycle (from its region and itself).
using device_actor = caf::typed_actor<
  caf::replies_to<device_login>::with<device_login_reply>,
  caf::replies_to<telemetry>::with<telemetry_reply>,
  caf::replies_to<poll_commands>::with<commands_reply>,
  caf::reacts_to<cancel_poll>,
  caf::replies_to<command_result>::with<done>,
  caf::replies_to<get_device>::with<device_view>,
  caf::replies_to<post_command>::with<command>,
  caf::replies_to<cancel_command>::with<command>,
  caf::replies_to<list_commands>::with<command_page>,
  caf::replies_to<history>::with<history_reply>,
  caf::replies_to<get_analysis>::with<analysis_reply>,
  caf::replies_to<reset_atom>::with<done>,
  caf::reacts_to<timeout_atom, uint64_t>, caf::reacts_to<retry_atom>,
  caf::reacts_to<runtime::tick_atom>,
  caf::reacts_to<runtime::drain_atom>, caf::reacts_to<runtime::stop_atom>>;

/// Spawns the virtual actor of device `id` (called by the devices shard
/// region on the first message for the id).
///
/// ```
///   loading --found--> serving --idle/stop/reset--> (passivated)
///      \--unknown--> unknown (answers 401/404, passivates at once)
/// ```
///
/// State: identity and tenant, secret hash and token hashes, batch-id
/// high-water mark, latest value per metric, last seen, open commands and
/// waiting long-polls. All of it is recoverable from PostgreSQL, which it
/// loads before serving anything (an awaited query). Messages: see
/// messages.hpp (device side and user side). Telemetry is handled one batch
/// at a time (the importer's answer is awaited), so batch ids are checked
/// against a mark that only moves after a commit.
device_actor spawn_device(caf::actor_system& sys, const context_ptr& ctx,
                          const caf::actor& region, const std::string& id);

} // namespace troupe::actors
