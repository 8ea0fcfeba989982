#pragma once

#include <cstdint>
#include <map>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "storage/pg.hpp"

/// The queries troupe runs, one function each, all on a caller-owned
/// connection (callers are detached actors). Rows come back as plain structs.
namespace troupe::storage {

// -- rows -----------------------------------------------------------------------

struct tenant_row {
  std::string id;
  std::string name;
  int64_t created_ms = 0;
};

struct user_row {
  std::string username;
  std::string password_hash;
  std::string role;
  std::string tenant; // empty for a tenant-less admin
  int64_t created_ms = 0;
};

/// The data shard of a new device among `data_shards`: a stable hash of
/// its id (FNV-1a over "data/" + id, then mixed), independent of the
/// cluster's actor shards. Recorded at registration, so a later count
/// places only new devices.
[[nodiscard]] int32_t place_device(std::string_view id, size_t data_shards);

struct new_device {
  std::string id;
  std::string name;
  std::string tenant;
  std::string secret_hash;
  /// The key's shard (runtime::shard_map::shard_of).
  int32_t shard = 0;
  /// The data shard holding its telemetry, commands, rollups and alerts.
  int32_t data_shard = 0;
  /// devices.key, from reserve_device_keys (the catalog's sequence), so the
  /// catalog and the data shard's copy agree.
  int64_t key = 0;
  /// Its own silence window, s (null: analysis.silence_s).
  std::optional<int64_t> silence_s;
};

struct latest_row {
  std::string metric;
  int64_t ts_ms = 0;
  double value = 0;
};

struct command_row {
  std::string id;
  std::string device_id;
  std::string name;
  std::string args_json = "{}";
  std::string status;
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  std::optional<int64_t> delivered_ms;
  std::optional<std::string> result_json;
  std::optional<int64_t> finished_ms;
  int64_t seq = 0;
};

struct device_row {
  int64_t key = 0;
  std::string id;
  std::string name;
  std::string tenant;
  std::string secret_hash;
  /// Placement: the actor shard (cluster) and the data shard (storage).
  std::optional<int32_t> shard;
  int32_t data_shard = 0;
  std::optional<int64_t> batch_hwm;
  std::optional<int64_t> last_seen_ms;
  /// Its own silence window, s (null: analysis.silence_s).
  std::optional<int64_t> silence_s;
  int64_t created_ms = 0;
  std::vector<latest_row> latest;
  std::vector<std::string> metrics;
  /// Commands still pending or delivered (not expired), oldest first.
  std::vector<command_row> open_commands;
  /// Hashes of unexpired device tokens.
  std::vector<std::pair<std::string, int64_t>> tokens;
};

struct session_row {
  std::string token_hash;
  user_row user;
  int64_t created_ms = 0;
  int64_t last_seen_ms = 0;
};

// -- settings ---------------------------------------------------------------------

/// The cluster-wide key for keyed hashes (created by the first migration).
[[nodiscard]] caf::expected<std::string> secret_key(connection& c);

/// Makes every device's `shard` column agree with `shards` (the cluster's
/// shard count) using `shard_of(id)`: fills missing values, and recomputes
/// all of them when settings.shards records another count. Returns the
/// number of devices updated. Runs at node start.
[[nodiscard]] caf::expected<int64_t>
sync_device_shards(connection& c, size_t shards,
                   const std::function<int32_t(const std::string&)>& shard_of);

/// A set of shards an analysis pass is limited to; nullopt: all of them.
using shard_filter = std::optional<std::vector<int32_t>>;

// -- tenants and users --------------------------------------------------------------

[[nodiscard]] caf::error insert_tenant(connection& c, const tenant_row& t);
[[nodiscard]] caf::expected<std::vector<tenant_row>> list_tenants(connection& c);
[[nodiscard]] caf::expected<bool> tenant_exists(connection& c,
                                                const std::string& id);

[[nodiscard]] caf::error insert_user(connection& c, const user_row& u);
[[nodiscard]] caf::expected<std::optional<user_row>>
find_user(connection& c, const std::string& username);
[[nodiscard]] caf::expected<std::vector<user_row>>
list_users(connection& c, const std::string& after, size_t limit);
/// Returns false if no such user.
[[nodiscard]] caf::expected<bool> delete_user(connection& c,
                                              const std::string& username);
[[nodiscard]] caf::expected<int64_t> count_admins(connection& c);
/// Sets a user's password hash and, in the same statement, ends its
/// sessions except the one whose token hash is `keep_session` (empty: all).
/// Returns false if no such user.
[[nodiscard]] caf::expected<bool>
set_password(connection& c, const std::string& username,
             const std::string& password_hash,
             const std::string& keep_session);

// -- devices --------------------------------------------------------------------------

/// Takes `n` keys from the catalog's device key sequence.
[[nodiscard]] caf::expected<std::vector<int64_t>>
reserve_device_keys(connection& c, size_t n);
/// The first of `ids` that exists in the catalog, if any.
[[nodiscard]] caf::expected<std::optional<std::string>>
first_existing_device(connection& c, const std::vector<std::string>& ids);
/// Inserts all devices (keys reserved) in one transaction; conflict names
/// the first id that exists.
[[nodiscard]] caf::error insert_devices(connection& c,
                                        const std::vector<new_device>& ds);
/// Makes a data shard's copies of `ds` (and of their tenants) agree with
/// the catalog: inserts missing ones, updates changed ones. A copy whose
/// key changed (a device deleted and registered again) starts with no
/// batch mark and no last_seen. Idempotent; one statement per table.
[[nodiscard]] caf::error mirror_devices(connection& c,
                                        const std::vector<new_device>& ds);
/// Deletes a data shard's copy of device `id` only if it has `key` (undoing
/// a registration never removes the copy of another one of the same id).
[[nodiscard]] caf::error delete_device_copy(connection& c,
                                            const std::string& id,
                                            int64_t key);
/// Deletes the copies on a data shard (`shard`) of devices that `catalog`
/// no longer has under the same key (deleted, or deleted and registered
/// again), made before `made_before_ms` (a registration makes its copies
/// just before its catalog rows, so a young copy may be on its way in).
/// Such copies are left by a failed registration's undo or a load that
/// raced a delete; they would show in the device list. Works through the
/// shard's devices a thousand at a time; returns how many went.
[[nodiscard]] caf::expected<int64_t>
sweep_device_copies(connection& shard, connection& catalog,
                    int64_t made_before_ms);
/// The data shard of a device; nullopt if unknown.
[[nodiscard]] caf::expected<std::optional<int32_t>>
device_data_shard(connection& c, const std::string& id);
/// Fills what a data shard holds of `rows` (all placed on it): batch mark,
/// last_seen, latest values, open commands, after making sure its copies
/// exist (mirror_devices). Three queries and one upsert for the batch.
[[nodiscard]] caf::error load_device_data(connection& c,
                                          std::vector<device_row*>& rows);
[[nodiscard]] caf::expected<bool> delete_device(connection& c,
                                                const std::string& id);
/// What an admin changes of a device; an unset field stays as it is.
struct device_change {
  std::optional<std::string> name;
  /// Its own silence window, s; 0: back to analysis.silence_s.
  std::optional<int64_t> silence_s;
};

/// Applies `change` to a device's row; false if no such device.
[[nodiscard]] caf::expected<bool> update_device(connection& c,
                                                const std::string& id,
                                                const device_change& change);
/// Sets a new secret hash and revokes the device's tokens.
[[nodiscard]] caf::expected<bool>
update_device_secret(connection& c, const std::string& id,
                     const std::string& secret_hash);

/// Which devices a list shows: one page ordered by id, after `after`.
struct device_filter {
  std::string tenant; // empty: all tenants
  std::string q;      // substring of id or name; empty: all
  std::optional<bool> online;
  int64_t online_since_ms = 0; // last_seen >= this is online
  std::string after;
  size_t limit = 100;
};

/// A device as a list shows it, straight from PostgreSQL.
struct device_summary {
  int64_t key = 0;
  std::string id;
  std::string name;
  std::string tenant;
  std::optional<int64_t> last_seen_ms;
  std::optional<int64_t> silence_s;
  std::vector<latest_row> latest;
};

/// A page of the devices placed on `data_shard` with their latest values,
/// in two queries whatever the page size (no device actor is woken for a
/// list). Run on that shard (the catalog is shard 0).
[[nodiscard]] caf::expected<std::vector<device_summary>>
list_device_summaries(connection& c, const device_filter& f,
                      int32_t data_shard = 0);

/// Loads the devices of `ids` from the catalog (missing ones are absent
/// from the result) with their unexpired tokens and, for those on data
/// shard 0, their latest values and open commands: four queries for the
/// whole batch, so actors coming back after a restart or a failover load at
/// thousands per second. Devices on other shards need load_device_data.
[[nodiscard]] caf::expected<std::map<std::string, device_row>>
load_devices(connection& c, const std::vector<std::string>& ids,
             int64_t now_ms);

/// Records that the device was seen (a login or a poll: telemetry commits
/// record it with the points).
[[nodiscard]] caf::error touch_device(connection& c, const std::string& id,
                                      int64_t last_seen_ms);

[[nodiscard]] caf::error insert_device_token(connection& c,
                                             const std::string& token_hash,
                                             const std::string& device_id,
                                             int64_t expires_ms);

// -- sessions ------------------------------------------------------------------------

[[nodiscard]] caf::error insert_session(connection& c, const session_row& s);
[[nodiscard]] caf::expected<std::optional<session_row>>
load_session(connection& c, const std::string& token_hash);
[[nodiscard]] caf::error touch_session(connection& c,
                                       const std::string& token_hash,
                                       int64_t last_seen_ms);
[[nodiscard]] caf::error delete_session(connection& c,
                                        const std::string& token_hash);

// -- commands -------------------------------------------------------------------------

[[nodiscard]] caf::expected<command_row> insert_command(connection& c,
                                                        command_row cmd);
[[nodiscard]] caf::error mark_delivered(connection& c,
                                        const std::vector<std::string>& ids,
                                        int64_t now_ms);
/// Sets done/failed on a delivered or pending command; false if the command
/// is unknown for this device or already finished.
[[nodiscard]] caf::expected<bool>
finish_command(connection& c, const std::string& device_id,
               const std::string& id, const std::string& status,
               const std::string& result_json, int64_t now_ms);
[[nodiscard]] caf::error expire_commands(connection& c,
                                         const std::vector<std::string>& ids);
/// What cancel_command found.
struct cancel_outcome {
  /// False: no such command for this device.
  bool found = false;
  /// This call cancelled it (else it was past pending).
  bool cancelled = false;
  /// The command after the call.
  command_row row;
};
/// Cancels a pending command of `device_id`: status cancelled, finished
/// now, result `{"cancelled_by": by}`.
[[nodiscard]] caf::expected<cancel_outcome>
cancel_command(connection& c, const std::string& device_id,
               const std::string& id, const std::string& by, int64_t now_ms);
[[nodiscard]] caf::expected<std::vector<command_row>>
list_commands(connection& c, const std::string& device_id,
              const std::string& status, int64_t after_seq, size_t limit);

// -- telemetry ------------------------------------------------------------------------

struct history_query {
  int64_t device_key = 0;
  std::string metric;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
  size_t limit = 1000;
  int64_t step_ms = 0; // 0: raw points
};

struct history_point {
  int64_t ts_ms = 0;
  double value = 0;
};

struct history_bucket {
  int64_t start_ms = 0;
  int64_t count = 0;
  double min = 0, max = 0, avg = 0;
};

/// Raw points in [from, to], the newest `limit`, returned oldest first.
[[nodiscard]] caf::expected<std::vector<history_point>>
raw_history(connection& c, const history_query& q);
/// Buckets of `step_ms` in [from, to], oldest first, at most `limit`.
[[nodiscard]] caf::expected<std::vector<history_bucket>>
bucket_history(connection& c, const history_query& q);

// -- analysis -------------------------------------------------------------------------
//
// The background analysis (actors/analysis) runs these on its workers' own
// connections; the API reads rollups, rules and alerts. Device filters are
// device keys, so a node can later analyse only the shards it owns.

/// Outcome of one rollup chunk: dirty hours taken, rollup rows written.
struct rollup_chunk {
  int64_t taken = 0;
  int64_t written = 0;
};

/// Takes up to `limit` rollup deltas the importers recorded (what each
/// flush added to an hour: count, sum, min, max; skipping `skip_keys`; only
/// `only_key` when given), merges them into their hours' rollups and
/// deletes them, in one statement, without reading raw points. `taken`
/// counts deltas, `written` the rollups changed.
[[nodiscard]] caf::expected<rollup_chunk>
merge_rollup_deltas(connection& c, const std::vector<int64_t>& skip_keys,
              std::optional<int64_t> only_key, size_t limit,
              const shard_filter& shards = std::nullopt);
/// Device keys with rollup deltas waiting (for the per-device fallback).
[[nodiscard]] caf::expected<std::vector<int64_t>>
delta_device_keys(connection& c, const std::vector<int64_t>& skip_keys,
                  const shard_filter& shards = std::nullopt);

/// A rollup whose anomaly flag is stale, with the statistics of the
/// previous (at most 24) hourly averages of its device and metric.
struct anomaly_candidate {
  int64_t device_key = 0;
  int64_t metric_id = 0;
  int64_t hour_ms = 0;
  int64_t count = 0;
  double avg = 0;
  int64_t prior_n = 0;
  double prior_mean = 0;
  double prior_sd = 0;
};
/// Up to `limit` unchecked rollups (skipping `skip_keys`; only `only_key`
/// when given), oldest hour first per device and metric.
[[nodiscard]] caf::expected<std::vector<anomaly_candidate>>
unchecked_rollups(connection& c, const std::vector<int64_t>& skip_keys,
                  std::optional<int64_t> only_key, size_t limit,
                  const shard_filter& shards = std::nullopt);
/// Device keys with unchecked rollups (for the per-device fallback).
[[nodiscard]] caf::expected<std::vector<int64_t>>
unchecked_device_keys(connection& c, const std::vector<int64_t>& skip_keys,
                      const shard_filter& shards = std::nullopt);
/// Stores the flags (flags[i] for cs[i]) and marks the rows checked, unless
/// a rollup pass changed the row meanwhile.
[[nodiscard]] caf::error
set_anomaly_flags(connection& c, const std::vector<anomaly_candidate>& cs,
                  const std::vector<bool>& flags);
/// Opens an anomaly alert per device and metric of `device_keys` whose
/// newest hour is anomalous, closes those whose newest hour is not.
/// Returns the number opened.
[[nodiscard]] caf::expected<int64_t>
sync_anomaly_alerts(connection& c, const std::vector<int64_t>& device_keys,
                    int64_t now_ms);

struct rule_row {
  std::string id;
  std::string tenant;
  std::string device_id; // empty: every device of the tenant
  std::string metric;
  std::string op;
  double value = 0;
  int64_t for_s = 0;
  int64_t created_ms = 0;
  std::string created_by;
};

/// One (rule, device) pair to evaluate: the device's latest value of the
/// rule's metric and, when for_s > 0, the points of the last for_s seconds.
struct rule_candidate {
  rule_row rule;
  std::string device_id;
  std::string device_tenant;
  double latest = 0;
  int64_t latest_ms = 0;
  int64_t window_count = 0;
  double window_min = 0;
  double window_max = 0;
  /// Points in the window equal to the rule's value.
  int64_t window_equal = 0;
};
/// The (rule, device) pairs of all rules but `skip_rules` (only
/// `only_rule` when given) whose device has a latest value of the metric.
[[nodiscard]] caf::expected<std::vector<rule_candidate>>
rule_candidates(connection& c, const std::vector<std::string>& skip_rules,
                const std::optional<std::string>& only_rule, int64_t now_ms,
                const shard_filter& shards = std::nullopt);
/// Ids of all rules but `skip_rules` (for the per-rule fallback).
[[nodiscard]] caf::expected<std::vector<std::string>>
rule_ids(connection& c, const std::vector<std::string>& skip_rules);

/// An alert to open (the id and opened_ms are assigned on insert).
struct new_alert {
  std::string tenant;
  std::string device_id;
  std::string kind;
  std::string rule_id; // empty: null
  std::string metric;  // empty: null
  std::string message;
  std::optional<double> value;
};
/// Opens the alerts whose condition has none open yet (the partial unique
/// index); returns how many were opened.
[[nodiscard]] caf::expected<int64_t>
open_alerts(connection& c, const std::vector<new_alert>& as, int64_t now_ms);
/// Closes the open alerts of `rule_ids` (of devices in `shards`) except
/// the (rule id, device id) pairs in `breaching`; returns how many were
/// closed.
[[nodiscard]] caf::expected<int64_t>
close_rule_alerts(connection& c, const std::vector<std::string>& rule_ids,
                  const std::vector<std::pair<std::string, std::string>>&
                    breaching,
                  int64_t now_ms, const shard_filter& shards = std::nullopt);
/// Opens a silence alert for each device seen before but not within its
/// window (devices.silence_s, else `default_silence_s`) and closes those of
/// devices seen again. Returns (opened, closed).
[[nodiscard]] caf::expected<std::pair<int64_t, int64_t>>
sync_silence_alerts(connection& c, int64_t default_silence_s, int64_t now_ms,
                    const shard_filter& shards = std::nullopt);

struct rollup_row {
  std::string metric;
  int64_t hour_ms = 0;
  int64_t count = 0;
  double min = 0, max = 0, avg = 0;
  bool anomaly = false;
};
/// A device's rollups of the hours overlapping [from, to], by metric, then
/// hour.
[[nodiscard]] caf::expected<std::vector<rollup_row>>
device_rollups(connection& c, int64_t device_key, int64_t from_ms,
               int64_t to_ms);

/// The tenant of a device; nullopt if unknown.
[[nodiscard]] caf::expected<std::optional<std::string>>
device_tenant(connection& c, const std::string& id);

/// Stores a new rule (id and created_ms set by the caller).
[[nodiscard]] caf::error insert_rule(connection& c, const rule_row& r);
/// A rule by id; nullopt if unknown.
[[nodiscard]] caf::expected<std::optional<rule_row>>
find_rule(connection& c, const std::string& id);
/// Rules of `tenant` (empty: all), ordered by (created_ms, id), after the
/// position (after_ms, after_id).
[[nodiscard]] caf::expected<std::vector<rule_row>>
list_rules(connection& c, const std::string& tenant, int64_t after_ms,
           const std::string& after_id, size_t limit);
/// Deletes a rule and closes its open alerts; false if unknown.
[[nodiscard]] caf::expected<bool> delete_rule(connection& c,
                                              const std::string& id,
                                              int64_t now_ms);

/// Every rule (a data shard's analysis copies them from the catalog).
[[nodiscard]] caf::expected<std::vector<rule_row>> all_rules(connection& c);
/// Makes a data shard's rules those of `rules` (the catalog's): deletes
/// the others, closing their open alerts, and adds the missing ones (a
/// device's rule only where the device lives). Returns the number added.
[[nodiscard]] caf::expected<int64_t>
sync_rules(connection& c, const std::vector<rule_row>& rules, int64_t now_ms);

struct alert_row {
  std::string id;
  std::string tenant;
  std::string device_id;
  std::string kind;
  std::string rule_id; // empty: null
  std::string metric;  // empty: null
  std::string message;
  std::string state;
  int64_t opened_ms = 0;
  std::optional<int64_t> closed_ms;
  std::optional<double> value;
};

/// Newest first: ordered by (opened_ms, id) descending, before the position
/// (before_ms, before_id) when before_ms >= 0.
struct alert_filter {
  std::string tenant; // empty: all tenants
  std::string state;  // empty: any
  std::string device_id; // empty: every device
  int64_t before_ms = -1;
  std::string before_id;
  size_t limit = 100;
};
/// One page of alerts matching `f`.
[[nodiscard]] caf::expected<std::vector<alert_row>>
list_alerts(connection& c, const alert_filter& f);
/// An alert by id; nullopt if unknown.
[[nodiscard]] caf::expected<std::optional<alert_row>>
find_alert(connection& c, const std::string& id);
/// Closes an open alert; nullopt if it is not open (unknown or closed).
[[nodiscard]] caf::expected<std::optional<alert_row>>
close_alert(connection& c, const std::string& id, int64_t now_ms);

} // namespace troupe::storage
