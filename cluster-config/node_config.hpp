#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cluster-config/defaults.hpp"

/// The whole configuration of one troupe node: one struct per section, each
/// field with its meaning, unit and default. A module takes only its own
/// section by const reference.
namespace troupe::config {

/// [http]: the HTTP edge (an event-driven server: a connection costs
/// memory, not a thread).
struct http_config {
  /// Address the edge listens on, HOST:PORT. Default 127.0.0.1:8080.
  std::string listen = defaults::http::listen;
  /// I/O threads serving every connection; 0: one per core. Default 0.
  size_t io_threads = defaults::http::io_threads;
  /// listen(2) backlog. Default 4096.
  int64_t backlog = defaults::http::backlog;
  /// Open connections per node; beyond it new ones get 503. Default 16384.
  size_t max_connections = defaults::http::max_connections;
  /// Request line and headers, bytes; beyond it 431. Default 16384.
  size_t max_header_bytes = defaults::http::max_header_bytes;
  /// Largest accepted request body in bytes (after gzip). Default 1 MiB.
  size_t max_body_bytes = defaults::http::max_body_bytes;
  /// Deadline to read a request's header block, ms. Default 10000.
  int64_t header_timeout_ms = defaults::http::header_timeout_ms;
  /// Deadline to read a request's body, ms. Default 30000.
  int64_t body_timeout_ms = defaults::http::body_timeout_ms;
  /// Idle keep-alive connections are closed after this, s. Default 120.
  int64_t keep_alive_s = defaults::http::keep_alive_s;
  /// Requests read ahead on one connection (pipelining). Default 16.
  size_t max_pipelined = defaults::http::max_pipelined;
  /// Long-polls held at once by this node; beyond it 429. Default 20000.
  size_t max_long_polls = defaults::http::max_long_polls;
  /// Deadline for an actor to answer a request, ms. Default 10000.
  int64_t request_timeout_ms = defaults::http::request_timeout_ms;
  /// Responses at least this large are gzipped on request. Default 1024.
  size_t gzip_min_bytes = defaults::http::gzip_min_bytes;
  /// Nesting allowed in a JSON body below a top-level member (a command's
  /// args, a result), and in a telemetry document. Deeper: 400. Default 32.
  size_t max_json_depth = defaults::http::max_json_depth;
  /// Peers (IP addresses) whose X-Forwarded-For names the client, e.g. the
  /// load balancer in front of the nodes. Default: none.
  std::vector<std::string> trusted_proxies;
  /// PEM certificate chain and private key: with both set the edge speaks
  /// HTTPS only, and reloads them on SIGHUP without dropping connections.
  std::string tls_cert;
  std::string tls_key;
};

/// [auth]: login throttling. Failed logins are counted in a sliding
/// window per username or device id (cluster-wide: by the key's owner) and
/// per client address (per node); beyond a limit every login for that key
/// or address answers 429 with Retry-After until old failures leave the
/// window, so the right credentials are locked out at most one window.
struct auth_config {
  /// The sliding window, s. Default 300.
  int64_t failed_login_window_s = defaults::auth::failed_login_window_s;
  /// Failed logins per username or device id within the window. Default 10.
  int64_t max_failed_logins = defaults::auth::max_failed_logins;
  /// Failed logins per client address within the window. Default 100.
  int64_t max_failed_logins_per_address
    = defaults::auth::max_failed_logins_per_address;
};

/// [storage]: PostgreSQL and the local spool.
struct storage_config {
  /// libpq URL; empty means the embedded default (a local PostgreSQL
  /// managed under data_dir). Env TROUPE_DATABASE_URL.
  std::string database_url;
  /// Directory for the embedded PostgreSQL, the spool and node files.
  std::string data_dir = defaults::storage::data_dir;
  /// libpq connect timeout, s. Default 5.
  int64_t connect_timeout_s = defaults::storage::connect_timeout_s;
  /// Largest spool size in bytes before ingest answers 503. Default 1 GiB.
  size_t spool_max_bytes = defaults::storage::spool_max_bytes;
  /// Daily telemetry partitions created ahead of today. Default 3.
  int64_t partition_days_ahead = defaults::storage::partition_days_ahead;
  /// Telemetry partitions older than this many days are dropped. Default 90.
  int64_t retention_days = defaults::storage::retention_days;
  /// What a 202 for telemetry needs besides the primary's commit, for a
  /// primary with a synchronous standby (pg_auto_failover). Such a primary
  /// runs alone for a while after every failover (wait_primary), and a
  /// commit then lives on one machine only:
  ///   "none": nothing more (one PostgreSQL, no standby). Default.
  ///   "spool": a standby has the commit, or the batch also goes to this
  ///     node's fsynced spool, replayed (deduplicated) once a standby is
  ///     back in sync; the data is readable at once either way.
  ///   "warn": accepted all the same, with a warning and a metric.
  std::string standby_policy = defaults::storage::standby_policy;
  /// Streaming replicas of the primary (libpq URLs). Reads that may be a
  /// little stale (history, buckets, rollups, the fleet list, alerts) go to
  /// one whose measured lag is at most max_replica_lag_ms; others, and all
  /// while none qualifies, to the primary. Empty: no replicas.
  std::vector<std::string> replicas;
  /// The most lag a replica may have and still serve reads, ms. Default 1000.
  int64_t max_replica_lag_ms = defaults::storage::max_replica_lag_ms;
  /// Write shards: more data databases (libpq URLs, each may be a
  /// multi-host URL with its own standby) beside database_url, which is the
  /// catalog (users, tenants, devices, membership) and data shard 0. Each
  /// new device is placed on shard hash(id) % (1 + shards.size()), recorded
  /// in the catalog; its telemetry, latest values, commands, rollups and
  /// alerts live there. The list only grows: shard i is shards[i - 1] for
  /// ever (a node refuses to start when one the catalog knows is missing).
  std::vector<std::string> shards;
};

/// [ingest]: validation limits and the importers' group commit.
struct ingest_config {
  /// Importer actors, each with its own connection. Default 1.
  size_t importers = defaults::ingest::importers;
  /// Points per COPY before an early flush. Default 10000.
  size_t max_batch_points = defaults::ingest::max_batch_points;
  /// Extra wait before a partial batch is flushed, ms. Default 0: flush as
  /// soon as the queued requests are collected (natural group commit).
  int64_t flush_interval_ms = defaults::ingest::flush_interval_ms;
  /// Points accepted in one request. Default 10000.
  size_t max_points_per_request = defaults::ingest::max_points_per_request;
  /// Points queued for import on this node before 429. Default 500000.
  size_t max_queued_points = defaults::ingest::max_queued_points;
  /// Oldest accepted point, days before now. Default 30.
  int64_t max_age_days = defaults::ingest::max_age_days;
  /// Newest accepted point, s after now. Default 300.
  int64_t max_future_s = defaults::ingest::max_future_s;
  /// Fault injection for tests only: each importer throws before every
  /// N-th group commit (its requests answer 503, it is restarted). 0: off.
  int64_t crash_every_flushes = 0;
};

/// [actors]: device and session actors.
struct actors_config {
  /// An actor idle this long is passivated, s. Default 600.
  int64_t passivate_after_s = defaults::actors::passivate_after_s;
  /// A user session idle this long ends, s. Default 1800.
  int64_t session_idle_s = defaults::actors::session_idle_s;
  /// Lifetime of a device token, s. Default 86400.
  int64_t device_token_ttl_s = defaults::actors::device_token_ttl_s;
  /// Default time to live of a command, s. Default 86400.
  int64_t command_ttl_s = defaults::actors::command_ttl_s;
  /// A device seen within this window is online, s. Default 300.
  int64_t online_window_s = defaults::actors::online_window_s;
  /// Detached workers running database queries. Default 4.
  size_t db_workers = defaults::actors::db_workers;
  /// CAF scheduler: "stealing" (work stealing), "sharing" (one shared
  /// queue, no idle spinning) or "auto": sharing on a cluster node (3x less
  /// CPU per forwarded request, bench/RESULTS.md) and on machines of up to 4
  /// cores, stealing on a larger single node. Default auto.
  std::string scheduler_policy = defaults::actors::scheduler_policy;
  /// CAF scheduler threads; 0: one per two cores when sharing (the edge's
  /// I/O threads take the others' share of a request), max(4, cores) when
  /// stealing. Default 0.
  size_t scheduler_threads = defaults::actors::scheduler_threads;
};

/// [cluster]: membership and placement.
struct cluster_config {
  /// This node's id; empty means derived from host and HTTP port.
  std::string node_id;
  /// Fixed number of shards keys hash into. Default 1024.
  size_t shards = defaults::cluster::shards;
  /// CAF endpoint HOST:PORT for other nodes; empty for a single node.
  std::string listen;
  /// Seed nodes HOST:PORT to join.
  std::vector<std::string> join;
  /// Heartbeat period, ms. Default 1000.
  int64_t heartbeat_ms = defaults::cluster::heartbeat_ms;
  /// A member silent this long is dead, ms. Default 5000.
  int64_t lease_ms = defaults::cluster::lease_ms;
  /// A node serves only while its last heartbeat is at most this old; a
  /// member whose connection dropped is declared dead once its heartbeat is
  /// older than this plus half a heartbeat (so its shards move in about a
  /// second, not a lease), ms. 0: twice heartbeat_ms. Default 0.
  int64_t fence_ms = 0;
};

/// [log]: logging.
struct log_config {
  /// trace, debug, info, warn, error. Default info.
  std::string level = defaults::log::level;
};

/// [analysis]: the per-node background analysis (rollups, threshold rules,
/// anomalies, silence) and its supervisor.
struct analysis_config {
  /// Period of the analysis passes, ms. Default 30000.
  int64_t interval_ms = defaults::analysis::interval_ms;
  /// A device not seen for this long is silent, unless the device sets its
  /// own window (devices.silence_s), s. Default 900.
  int64_t silence_s = defaults::analysis::silence_s;
  /// An hourly average this many standard deviations (in tenths) from the
  /// trailing mean of the previous 24 hours is an anomaly. Default 30 (3.0).
  int64_t anomaly_z_tenths = defaults::analysis::anomaly_z_tenths;
  /// Worker restarts allowed within restart_window_s before the supervisor
  /// stops restarting that worker for a whole window. Default 5.
  int64_t max_restarts = defaults::analysis::max_restarts;
  /// The restart-intensity window, s. Default 60.
  int64_t restart_window_s = defaults::analysis::restart_window_s;
  /// First restart delay, doubled per restart within the window, ms.
  /// Default 500.
  int64_t restart_backoff_ms = defaults::analysis::restart_backoff_ms;
  /// Passes an input (a device, a rule) may fail before it is quarantined
  /// (skipped until the node restarts). Default 3.
  int64_t max_unit_failures = defaults::analysis::max_unit_failures;
};

/// The first admin, from TROUPE_ADMIN_USER / TROUPE_ADMIN_PASSWORD.
struct bootstrap_config {
  std::string admin_user;
  std::string admin_password;
};

struct node_config {
  http_config http;
  storage_config storage;
  ingest_config ingest;
  actors_config actors;
  cluster_config cluster;
  log_config log;
  analysis_config analysis;
  auth_config auth;
  bootstrap_config bootstrap;
};

} // namespace troupe::config
