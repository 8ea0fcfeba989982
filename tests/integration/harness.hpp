#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/types.h>

/// Integration-test harness: a throwaway PostgreSQL database per node, a real
/// `troupe serve` process on a free 127.0.0.1 port, and HTTP helpers that
/// speak API.md.
///
/// Lifecycle: a `node` creates its database (unless given one), starts the
/// process in its constructor and waits until /readyz answers 200 (bounded);
/// its destructor stops the process (SIGTERM, then SIGKILL after 20 s) and
/// drops the database. Every wait is bounded; helpers that must succeed throw
/// `std::runtime_error` with the response and the node's log tail, which
/// Catch2 reports as the test's failure. When a test case fails, a Catch2
/// listener prints the log tail of every live node.
///
/// Concurrency: `node`'s request helpers may be called from several threads
/// (each call uses its own client); start/stop/kill/restart only from the
/// test's main thread. Catch2 assertions only from the main thread.
namespace troupe::test {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// -- environment -------------------------------------------------------------

/// Reads an environment variable; throws naming it when unset or empty.
std::string require_env(const char* name);

/// Milliseconds since the Unix epoch (wall clock).
int64_t now_ms();

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
/// released), for a node's extra listeners (e.g. cluster.listen).
int free_tcp_port();

/// A process-unique id `<prefix>-<n>`, valid per API.md's id syntax.
std::string unique_id(const std::string& prefix);

/// Formats `ms` since the epoch as RFC 3339 (`2026-11-22T10:00:00.123Z`).
std::string rfc3339(int64_t ms);

/// Polls `pred` every `interval` until it returns true or `timeout` passes;
/// returns the last result.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = 50ms);

/// gzip-compresses / -decompresses (zlib, gzip framing). `gunzip` throws on
/// corrupt input.
std::string gzip(const std::string& data);
std::string gunzip(const std::string& data);

// -- PostgreSQL --------------------------------------------------------------

/// Replaces (or adds) the database name of a libpq URL or conninfo string.
std::string with_dbname(const std::string& url, const std::string& dbname);

/// Query result: rows of text cells; a NULL cell is the empty string.
using rows = std::vector<std::vector<std::string>>;

/// Runs one statement on `url` (libpq, connect_timeout 5 s) and returns its
/// rows; throws with libpq's message on failure.
rows pg_query(const std::string& url, const std::string& sql);

/// A fresh database `troupe_it_<pid>_<n>` created on the server named by
/// TROUPE_TEST_DATABASE_URL (a superuser URL); dropped (WITH FORCE) in the
/// destructor. Throws when TROUPE_TEST_DATABASE_URL is unset.
class database {
public:
  database();
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  const std::string& name() const { return name_; }
  /// URL of this database, for TROUPE_DATABASE_URL.
  const std::string& url() const { return url_; }
  rows query(const std::string& sql) const { return pg_query(url_, sql); }

private:
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

/// Controls the throwaway PostgreSQL server started by scripts/pg-temp
/// (TROUPE_TEST_PG_DIR, TROUPE_TEST_PG_BIN), for tests that stop it mid-load.
/// Runs pg_ctl as the postgres user when running as root.
class pg_server {
public:
  pg_server();
  /// Stops the server (`pg_ctl stop -m fast`); throws on failure.
  void stop();
  /// Starts it again on the port it had; throws on failure.
  void start();
  bool running() const { return running_; }
  /// SIGSTOPs the postmaster and every process it started: a server that
  /// hangs without failing (its sockets stay open, nothing answers), as a
  /// stalled disk or a paused VM does. Throws when it cannot.
  void freeze();
  /// SIGCONTs what freeze() stopped (and is harmless when nothing is).
  void thaw();
  bool frozen() const { return !frozen_.empty(); }

private:
  std::string pg_ctl(const std::string& args) const;
  /// Line `n` (from 1) of postmaster.pid, a number (1: the postmaster's
  /// pid, 4: the port); throws when the file or the number is absent.
  std::string pidfile_line(int n) const;
  pid_t postmaster() const;
  std::vector<pid_t> frozen_;
  std::string dir_;
  std::string bin_;
  std::string port_;
  bool running_ = true;
};

// -- HTTP --------------------------------------------------------------------

/// One HTTP exchange. `status` is 0 when no response came back (transport
/// error, described in `transport_error`).
struct response {
  int status = 0;
  std::string raw;
  /// Parsed JSON body; `null` when the body is not JSON.
  json body;
  httplib::Headers headers;
  std::string transport_error;
  double elapsed_s = 0;

  bool has_header(const std::string& name) const;
  std::string header(const std::string& name) const;
  /// "status 400, body {...}" (body truncated), for messages.
  std::string describe() const;
};

/// Returns "" when `r` carries API.md's error body
/// `{"error": {"code": "<snake_case>", "message": "<non-empty>"}}`, or what is
/// wrong with it.
std::string error_body_problem(const response& r);

/// The items of a list response `{"items": [...], "next_cursor": ...}`;
/// throws when `r` is not one.
json list_items(const response& r);

/// Extra request headers.
using headers = httplib::Headers;

/// Checks status and API.md's error body; reports the response on failure.
#define TROUPE_CHECK_ERROR(resp, expected_status)                              \
  do {                                                                         \
    const auto& troupe_r_ = (resp);                                            \
    INFO("response: " << troupe_r_.describe());                                \
    CHECK(troupe_r_.status == (expected_status));                              \
    CHECK(::troupe::test::error_body_problem(troupe_r_) == "");                \
  } while (false)

/// Checks the status, reporting the response on failure.
#define TROUPE_CHECK_STATUS(resp, expected_status)                             \
  do {                                                                         \
    const auto& troupe_r_ = (resp);                                            \
    INFO("response: " << troupe_r_.describe());                                \
    CHECK(troupe_r_.status == (expected_status));                              \
  } while (false)

#define TROUPE_REQUIRE_STATUS(resp, expected_status)                           \
  do {                                                                         \
    const auto& troupe_r_ = (resp);                                            \
    INFO("response: " << troupe_r_.describe());                                \
    REQUIRE(troupe_r_.status == (expected_status));                            \
  } while (false)

// -- node --------------------------------------------------------------------

struct node_options {
  /// `--set key=value` overrides.
  std::vector<std::pair<std::string, std::string>> settings;
  std::string admin_user = "admin";
  std::string admin_password = "admin-Pw-0123456789";
  /// Bound on the wait for /readyz.
  std::chrono::seconds ready_timeout = 60s;
  /// HTTP port to listen on; 0 picks a free one. (Lets a test know the port
  /// before the node is ready, e.g. to watch it while it joins a cluster.)
  int http_port = 0;
  /// Speak HTTPS to the node (its settings name a certificate).
  bool tls = false;
};

/// A device as registered by the admin.
struct device_credentials {
  std::string id;
  std::string secret;
};

/// A running `troupe serve` process (see the namespace comment).
class node {
public:
  /// Creates a fresh database and starts the node.
  explicit node(node_options opts = {});
  /// Starts a node on an existing database (shared, e.g. for restarts).
  node(std::shared_ptr<database> db, node_options opts);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // -- process control ------------------------------------------------------

  /// Starts the process (same port and data dir as before, if any) and waits
  /// until /readyz answers 200. Throws with the log tail on failure.
  void start();
  /// SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status
  /// (128+signal when killed by a signal, -1 when not running).
  int stop(std::chrono::seconds timeout = 20s);
  /// SIGKILL and reap.
  void kill();
  /// stop() then start().
  void restart();
  bool running();
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::shared_ptr<database>& db() const { return db_; }
  const std::string& log_path() const { return log_path_; }
  /// The last `lines` lines of the node's log.
  std::string log_tail(size_t lines = 60) const;

  // -- HTTP -----------------------------------------------------------------

  /// A client for this node (tcp_nodelay, 5 s connect, 30 s read timeout).
  httplib::Client http() const;

  /// Sends one request. `body` is sent verbatim with `content_type` when the
  /// method takes a body; `token` (if any) as `Authorization: Bearer`.
  response request(const std::string& method, const std::string& path,
                   const std::string& body = "",
                   const std::string& content_type = "application/json",
                   const headers& extra = {}, const std::string& token = "",
                   std::chrono::seconds read_timeout = 30s) const;
  response get(const std::string& path, const std::string& token = "",
               const headers& extra = {},
               std::chrono::seconds read_timeout = 30s) const;
  response post(const std::string& path, const json& body,
                const std::string& token = "", const headers& extra = {}) const;
  response patch(const std::string& path, const json& body,
                 const std::string& token = "") const;
  response del(const std::string& path, const std::string& token = "") const;

  // -- API helpers (throw unless the call succeeds) -------------------------

  /// Logs in as the admin created at first start; returns the token.
  std::string login_admin() const;
  /// A cached admin token (logged in once per process start).
  const std::string& admin_token();
  /// Logs in a user; returns the token.
  std::string login(const std::string& username,
                    const std::string& password) const;
  void create_tenant(const std::string& admin_token, const std::string& id,
                     const std::string& name = "") const;
  void create_user(const std::string& admin_token, const std::string& username,
                   const std::string& password, const std::string& role,
                   const std::string& tenant) const;
  /// Registers one device; returns its secret.
  std::string register_device(const std::string& admin_token,
                              const std::string& id, const std::string& tenant,
                              const std::string& name = "") const;
  /// Registers devices in bulk; returns id and secret of each.
  std::vector<device_credentials>
  register_devices(const std::string& admin_token,
                   const std::vector<std::string>& ids,
                   const std::string& tenant) const;
  /// Device login; returns the token.
  std::string device_login(const std::string& id,
                           const std::string& secret) const;

  /// Throws `std::runtime_error(what + response + log tail)`.
  [[noreturn]] void fail(const std::string& what, const response& r) const;

private:
  void init_dir();
  void spawn();

  node_options opts_;
  std::shared_ptr<database> db_;
  std::string dir_;
  std::string data_dir_;
  std::string log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string admin_token_;
};

/// One node per test executable, started at first use and stopped at exit.
/// If starting it failed once, later calls fail at once with the same reason
/// (instead of waiting again).
node& shared_node();

/// Creates a fresh tenant on `n` and returns its id.
std::string make_tenant(node& n);

/// A user with a role in a tenant, logged in.
struct user_login {
  std::string username;
  std::string password;
  std::string token;
};
user_login make_user(node& n, const std::string& role,
                     const std::string& tenant);

/// A registered, logged-in device.
struct device_login_info {
  std::string id;
  std::string secret;
  std::string token;
};
device_login_info make_device(node& n, const std::string& tenant);

/// POSTs telemetry `body` with the device token.
response post_telemetry(const node& n, const std::string& device_token,
                        const json& body);

/// Raw history `[[ts, value], ...]` of `metric` for `device` (user token).
json history(const node& n, const std::string& token,
             const std::string& device, const std::string& metric,
             const std::string& extra_query = "");

/// Polls the raw history until it holds at least `min_points` (bounded by
/// `timeout`); returns the last answer.
json wait_history(const node& n, const std::string& token,
                  const std::string& device, const std::string& metric,
                  size_t min_points, const std::string& extra_query = "",
                  std::chrono::milliseconds timeout = 15s);

/// Whether `points` (`[[ts, value], ...]`) holds (ts, value); `ts` < 0
/// matches any timestamp.
bool has_point(const json& points, int64_t ts, double value);

/// The "id" of each object in `items`.
std::vector<std::string> ids_of(const json& items);

/// URL-encodes a query-parameter value.
std::string url_encode(const std::string& s);

// -- /metrics ------------------------------------------------------------------

/// The value of one series in Prometheus text: `series` is a bare name
/// (`troupe_shard_map_version`) or a name with its whole label set
/// (`troupe_shards_served{kind="device"}`); nullopt when absent.
std::optional<double> metric_value(const std::string& text,
                                   const std::string& series);

/// GET /metrics on `n` and reads `series`; nullopt when the node does not
/// answer 200 or lacks the series.
std::optional<double> metric(const node& n, const std::string& series);

/// The sum of every sample in Prometheus text whose series starts with
/// `prefix`: a bare name sums all of its labelled series
/// (`troupe_spool_bytes`, not `troupe_spool_bytes_total`), a name with a
/// partial label set narrows that (`troupe_spool_records_total{importer="s1-`).
/// 0 when none matches.
double metric_sum(const std::string& text, const std::string& prefix);

/// GET /metrics on `n` and sums `prefix` (see above); -1 when the node does
/// not answer 200.
double metric_sum(const node& n, const std::string& prefix);

} // namespace troupe::test
