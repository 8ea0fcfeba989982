#pragma once

#include <cstdint>
#include <optional>
#include <string>
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

struct new_device {
  std::string id;
  std::string name;
  std::string tenant;
  std::string secret_hash;
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
  std::optional<int64_t> batch_hwm;
  std::optional<int64_t> last_seen_ms;
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

// -- devices --------------------------------------------------------------------------

/// Inserts all devices in one transaction; conflict names the first id that
/// exists.
[[nodiscard]] caf::error insert_devices(connection& c,
                                        const std::vector<new_device>& ds);
/// Loads a device with its latest values, open commands and tokens;
/// nullopt if unknown.
[[nodiscard]] caf::expected<std::optional<device_row>>
load_device(connection& c, const std::string& id, int64_t now_ms);
[[nodiscard]] caf::expected<bool> delete_device(connection& c,
                                                const std::string& id);
/// Sets a new secret hash and revokes the device's tokens.
[[nodiscard]] caf::expected<bool>
update_device_secret(connection& c, const std::string& id,
                     const std::string& secret_hash);

/// One page of device ids, ordered by id, after `after`.
struct device_filter {
  std::string tenant; // empty: all tenants
  std::string q;      // substring of id or name; empty: all
  std::optional<bool> online;
  int64_t online_since_ms = 0; // last_seen >= this is online
  std::string after;
  size_t limit = 100;
};
[[nodiscard]] caf::expected<std::vector<std::string>>
list_device_ids(connection& c, const device_filter& f);

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

} // namespace troupe::storage
