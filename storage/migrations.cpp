#include "storage/migrations.hpp"

#include <chrono>
#include <ctime>

#include "storage/logger.hpp"

namespace troupe::storage {

const std::vector<migration>& migrations() {
  static const std::vector<migration> all = {
    {1, "core schema", R"sql(
CREATE TABLE settings (
  key   text PRIMARY KEY,
  value text NOT NULL
);
-- The keyed hash of device secrets and tokens uses a cluster-wide key.
INSERT INTO settings VALUES ('secret_key', encode(gen_random_bytes(32), 'hex'));

CREATE TABLE tenants (
  id         text PRIMARY KEY,
  name       text NOT NULL,
  created_ms bigint NOT NULL
);

CREATE TABLE users (
  username      text PRIMARY KEY,
  password_hash text NOT NULL,
  role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
  tenant        text REFERENCES tenants(id),
  created_ms    bigint NOT NULL
);

CREATE TABLE devices (
  key          bigserial UNIQUE NOT NULL,
  id           text PRIMARY KEY,
  name         text NOT NULL,
  tenant       text NOT NULL REFERENCES tenants(id),
  secret_hash  text NOT NULL,
  batch_hwm    bigint,
  last_seen_ms bigint,
  created_ms   bigint NOT NULL
);
CREATE INDEX devices_tenant ON devices (tenant, id);

CREATE TABLE device_tokens (
  token_hash text PRIMARY KEY,
  device_id  text NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  expires_ms bigint NOT NULL
);
CREATE INDEX device_tokens_device ON device_tokens (device_id);

CREATE TABLE sessions (
  token_hash   text PRIMARY KEY,
  username     text NOT NULL REFERENCES users(username) ON DELETE CASCADE,
  created_ms   bigint NOT NULL,
  last_seen_ms bigint NOT NULL
);

CREATE TABLE metrics (
  id   serial PRIMARY KEY,
  name text UNIQUE NOT NULL
);

-- Raw points, partitioned by day; device_key is devices.key.
CREATE TABLE telemetry (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  ts         timestamptz NOT NULL,
  value      double precision NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_lookup ON telemetry (device_key, metric_id, ts);
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- The newest point per device and metric, upserted by the importers.
CREATE TABLE latest (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  ts         timestamptz NOT NULL,
  value      double precision NOT NULL,
  PRIMARY KEY (device_key, metric_id)
);

CREATE TABLE commands (
  id           text PRIMARY KEY,
  device_id    text NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  seq          bigserial NOT NULL,
  name         text NOT NULL,
  args         jsonb NOT NULL,
  status       text NOT NULL CHECK (status IN ('pending', 'delivered', 'done',
                                               'failed', 'expired')),
  created_ms   bigint NOT NULL,
  expires_ms   bigint NOT NULL,
  delivered_ms bigint,
  result       jsonb,
  finished_ms  bigint,
  created_by   text
);
CREATE INDEX commands_device ON commands (device_id, seq);
CREATE INDEX commands_open ON commands (device_id) WHERE status IN ('pending', 'delivered');
)sql"},
    {2, "analysis: rollups, rules, alerts", R"sql(
-- Per device, metric and hour: count, min, max, avg of the raw points.
-- anomaly: the hour's avg is an outlier against the previous 24 hours;
-- checked: the anomaly flag is up to date with the row.
CREATE TABLE rollups (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  hour       timestamptz NOT NULL,
  count      bigint NOT NULL,
  min        double precision NOT NULL,
  max        double precision NOT NULL,
  avg        double precision NOT NULL,
  anomaly    boolean NOT NULL DEFAULT false,
  checked    boolean NOT NULL DEFAULT false,
  PRIMARY KEY (device_key, metric_id, hour)
);
CREATE INDEX rollups_unchecked ON rollups (device_key) WHERE NOT checked;

-- Hours that received points since the last rollup pass, written by the
-- importers in the same transaction as the points, so none is missed.
CREATE TABLE rollup_dirty (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  hour       timestamptz NOT NULL,
  PRIMARY KEY (device_key, metric_id, hour)
);
-- Points stored before this migration are rolled up by the first pass.
INSERT INTO rollup_dirty
  SELECT DISTINCT device_key, metric_id, date_trunc('hour', ts) FROM telemetry;

CREATE TABLE rules (
  id         text PRIMARY KEY,
  tenant     text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  device_id  text REFERENCES devices(id) ON DELETE CASCADE, -- null: tenant
  metric     text NOT NULL,
  op         text NOT NULL CHECK (op IN ('>', '>=', '<', '<=', '==', '!=')),
  value      double precision NOT NULL,
  for_s      integer NOT NULL CHECK (for_s BETWEEN 0 AND 86400),
  created_ms bigint NOT NULL,
  created_by text
);
CREATE INDEX rules_tenant ON rules (tenant, created_ms, id);

CREATE TABLE alerts (
  id        text PRIMARY KEY,
  tenant    text NOT NULL,
  device_id text NOT NULL,
  kind      text NOT NULL CHECK (kind IN ('rule', 'anomaly', 'silence')),
  rule_id   text,
  metric    text,
  message   text NOT NULL,
  state     text NOT NULL CHECK (state IN ('open', 'closed')),
  opened_ms bigint NOT NULL,
  closed_ms bigint,
  value     double precision
);
-- At most one open alert per condition: passes insert ON CONFLICT DO
-- NOTHING, so a breach that lasts opens one alert, not one per pass.
CREATE UNIQUE INDEX alerts_one_open ON alerts
  (device_id, kind, coalesce(rule_id, ''), coalesce(metric, ''))
  WHERE state = 'open';
CREATE INDEX alerts_list ON alerts (tenant, opened_ms DESC, id DESC);
CREATE INDEX alerts_recent ON alerts (opened_ms DESC, id DESC);

-- Per-device silence window, s; null: analysis.silence_s.
ALTER TABLE devices ADD COLUMN silence_s integer
  CHECK (silence_s IS NULL OR silence_s > 0);
)sql"},
    {3, "cluster: members and shard maps", R"sql(
-- Membership: each node registers, heartbeats (PostgreSQL's clock) and
-- reports the newest shard-map version it has applied.
CREATE TABLE members (
  id              text PRIMARY KEY,
  http_address    text NOT NULL,
  cluster_address text NOT NULL,
  state           text NOT NULL CHECK (state IN ('alive', 'draining',
                                                 'drained', 'left', 'dead')),
  incarnation     bigint NOT NULL,
  started_ms      bigint NOT NULL,
  heartbeat_ms    bigint NOT NULL,
  applied_version bigint NOT NULL DEFAULT 0,
  actors          bigint NOT NULL DEFAULT 0
);

-- Versioned shard maps, written only by the coordinator; the primary key
-- fences two coordinators writing the same version.
CREATE TABLE shard_maps (
  version    bigint PRIMARY KEY,
  owners     text[] NOT NULL,
  created_ms bigint NOT NULL,
  created_by text NOT NULL
);
)sql"},
    {4, "devices carry their shard (analysis runs where the shard lives)",
     R"sql(
-- shard = the key's shard for the cluster's shard count (settings.shards);
-- set on insert and by each node at start when the count changed.
ALTER TABLE devices ADD COLUMN shard integer;
CREATE INDEX devices_shard ON devices (shard);
)sql"},
    {5, "hour marks without a unique key (importers never wait on analysis)",
     R"sql(
-- With a primary key, an importer's INSERT ... ON CONFLICT DO NOTHING of a
-- mark that the rollup pass had locked for deletion waited for that pass
-- to commit, holding back every upload of the flush (a 250 ms p99 in the
-- fleet benchmark). Marks may now repeat; the pass takes all copies.
ALTER TABLE rollup_dirty DROP CONSTRAINT rollup_dirty_pkey;
CREATE INDEX rollup_dirty_device ON rollup_dirty (device_key);
)sql"},
    {6, "alerts listed per device (the console's device page)",
     R"sql(
CREATE INDEX alerts_device ON alerts (device_id, opened_ms DESC, id DESC);
)sql"},
    {7, "incremental rollups: flushes record what they add to an hour",
     R"sql(
-- Each flush now records, in its own transaction, what it added to each
-- (device, metric, hour): count, mean, min, max (a mean, not a sum, so
-- finite values never overflow it). The rollup pass merges
-- these deltas into rollups without reading raw points again (it used to
-- recompute every marked hour from telemetry on every pass). Hours marked
-- before this migration are rolled up here, from the raw points, once.
-- (The mean as a sum of value / count: avg() sums first and overflows.)
INSERT INTO rollups (device_key, metric_id, hour, count, min, max, avg,
                     anomaly, checked)
  SELECT device_key, metric_id, hour, count(*), min(value), max(value),
         sum(value / cnt), false, false
  FROM (SELECT t.device_key, t.metric_id, h.hour, t.value,
               count(*) OVER (PARTITION BY t.device_key, t.metric_id, h.hour)
                 AS cnt
        FROM (SELECT DISTINCT device_key, metric_id, hour FROM rollup_dirty) h
        JOIN telemetry t ON t.device_key = h.device_key
         AND t.metric_id = h.metric_id AND t.ts >= h.hour
         AND t.ts < h.hour + interval '1 hour') x
  GROUP BY device_key, metric_id, hour
  ON CONFLICT (device_key, metric_id, hour) DO UPDATE SET
    count = excluded.count, min = excluded.min, max = excluded.max,
    avg = excluded.avg, checked = false;
DROP TABLE rollup_dirty;
CREATE TABLE rollup_deltas (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  hour       timestamptz NOT NULL,
  n          bigint NOT NULL,
  mean       double precision NOT NULL,
  mn         double precision NOT NULL,
  mx         double precision NOT NULL
);
CREATE INDEX rollup_deltas_device ON rollup_deltas (device_key);
)sql"},
    {8, "write shards: each device's data lives on one data shard",
     R"sql(
-- Every database of the tier (the catalog and each data shard) has the same
-- schema. In the catalog, data_shard says where a device's telemetry,
-- latest values, commands, rollups and alerts live (0: the catalog itself).
-- A data shard holds a copy of the rows of its own devices (and their
-- tenants), so its joins and foreign keys work as in one database; there
-- batch_hwm and last_seen_ms are the device's own, and in the catalog they
-- stay null for devices placed elsewhere.
ALTER TABLE devices ADD COLUMN data_shard integer NOT NULL DEFAULT 0;
-- Lists page by id in byte order, the order their merge across shards has.
CREATE INDEX devices_data_shard ON devices (data_shard, id COLLATE "C");
-- The catalog's record of the data shards it placed devices on: a node
-- that does not list one of them refuses to start.
CREATE TABLE data_shards (
  id       integer PRIMARY KEY,
  address  text NOT NULL,
  added_ms bigint NOT NULL
);
)sql"},
    {9, "telemetry in chunks: one row per device, metric, hour and flush",
     R"sql(
-- A row per point cost PostgreSQL a heap tuple and an index entry for each
-- (about 8 us a point, most of a flush). A chunk holds the points one
-- group commit brought for one device and metric within one hour (UTC),
-- as two arrays in upload order: ms (epoch milliseconds) and vals. The
-- hour (epoch hours) bounds a chunk, so a range read scans the index from
-- the range's first hour and filters the points; partitions are by day
-- (24 hours each), named telemetry_chunks_YYYYMMDD.
CREATE TABLE telemetry_chunks (
  device_key bigint NOT NULL,
  metric_id  integer NOT NULL,
  hour       bigint NOT NULL,
  ms         bigint[] NOT NULL,
  vals       double precision[] NOT NULL
) PARTITION BY RANGE (hour);
CREATE INDEX telemetry_chunks_lookup
  ON telemetry_chunks (device_key, metric_id, hour);
CREATE TABLE telemetry_chunks_default PARTITION OF telemetry_chunks DEFAULT;
-- Points stored before: a chunk per device, metric and hour, each in the
-- partition of its day (created here, so that the default partition stays
-- empty and later partitions can still be attached).
DO $$
DECLARE d bigint;
BEGIN
  FOR d IN SELECT DISTINCT floor(extract(epoch FROM ts) / 86400)::bigint
           FROM telemetry LOOP
    EXECUTE format('CREATE TABLE telemetry_chunks_%s PARTITION OF'
                   ' telemetry_chunks FOR VALUES FROM (%s) TO (%s)',
                   to_char(to_timestamp(d * 86400) AT TIME ZONE 'UTC',
                           'YYYYMMDD'), d * 24, (d + 1) * 24);
  END LOOP;
END $$;
INSERT INTO telemetry_chunks (device_key, metric_id, hour, ms, vals)
  SELECT device_key, metric_id, floor(ms / 3600000.0)::bigint,
         array_agg(ms ORDER BY ms), array_agg(value ORDER BY ms)
  FROM (SELECT device_key, metric_id, value,
               round(extract(epoch FROM ts) * 1000)::bigint AS ms
        FROM telemetry) p
  GROUP BY device_key, metric_id, floor(ms / 3600000.0)::bigint;
DROP TABLE telemetry;
-- The points one per row, as before, for ad-hoc queries (troupe reads the
-- chunks by their index).
CREATE VIEW telemetry AS
  SELECT c.device_key, c.metric_id, to_timestamp(p.ms / 1000.0) AS ts,
         p.value
  FROM telemetry_chunks c, unnest(c.ms, c.vals) AS p(ms, value);
)sql"},
    {10, "ad-hoc range reads: telemetry_range(device, metric, from, to)",
     R"sql(
-- A filter on the view's ts cannot bound the chunks it unnests (ts is
-- computed per point), so it reads every chunk of the device and metric.
-- This function takes only the chunks of the range's hours, by their index,
-- as troupe's own reads do: one device (its id), one metric (its name),
-- from and to inclusive, oldest first.
CREATE FUNCTION telemetry_range(device text, metric text,
                                from_ts timestamptz, to_ts timestamptz)
  RETURNS TABLE (ts timestamptz, value double precision)
  LANGUAGE sql STABLE AS $fn$
  SELECT to_timestamp(p.ms / 1000.0), p.value
  FROM devices d
  JOIN metrics m ON m.name = telemetry_range.metric
  JOIN telemetry_chunks c ON c.device_key = d.key AND c.metric_id = m.id
  CROSS JOIN LATERAL unnest(c.ms, c.vals) AS p(ms, value)
  WHERE d.id = telemetry_range.device
    AND c.hour >= floor(extract(epoch FROM from_ts) / 3600)::bigint
    AND c.hour <= floor(extract(epoch FROM to_ts) / 3600)::bigint
    AND p.ms >= (extract(epoch FROM from_ts) * 1000)::bigint
    AND p.ms <= (extract(epoch FROM to_ts) * 1000)::bigint
  ORDER BY p.ms
$fn$;
)sql"},
    {11, "batch marks ride on the latest values (one row less per upload)",
     R"sql(
-- A commit upserts a latest value for every (device, metric) it carries, so
-- the device's batch-id high-water mark goes there too: a device's mark is
-- the greatest of devices.batch_hwm (marks written before) and its latest
-- rows' batch_hwm. The devices row is then updated only for last_seen_ms,
-- at most every few seconds per device, instead of at every commit.
ALTER TABLE latest ADD COLUMN batch_hwm bigint;
)sql"},
    {12, "commands can be cancelled while pending", R"sql(
-- An operator cancels a command that no device has received yet: it is
-- never delivered, and keeps who cancelled it in its result.
-- NOT VALID: the rows there already hold one of the old statuses, all of
-- which the new check allows, so they need not be scanned under the lock.
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check CHECK (status IN
  ('pending', 'delivered', 'done', 'failed', 'expired', 'cancelled'))
  NOT VALID;
)sql"},
  };
  return all;
}

caf::error migrate(connection& conn, int& version) {
  version = 0;
  auto step = [&](const std::string& sql) -> caf::error {
    auto res = conn.exec(sql);
    return res ? caf::none : res.error();
  };
  // One node at a time applies migrations (catalog changes race even with
  // IF NOT EXISTS).
  if (auto err = step("SELECT pg_advisory_lock(7201001)"))
    return err;
  auto unlock = [&] { (void) step("SELECT pg_advisory_unlock(7201001)"); };
  if (auto err = step("CREATE EXTENSION IF NOT EXISTS pgcrypto")) {
    unlock();
    return err;
  }
  if (auto err = step("CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version integer PRIMARY KEY, name text NOT NULL,"
                      " applied_ms bigint NOT NULL)")) {
    unlock();
    return err;
  }
  caf::error result;
  auto current = conn.exec("SELECT coalesce(max(version), 0) FROM "
                           "schema_migrations");
  if (!current) {
    result = current.error();
  } else {
    version = static_cast<int>(current->i64(0, 0));
    // A schema newer than this binary means a newer troupe has migrated the
    // database: this one would read and write it as an older layout (batch
    // marks in the wrong place, say), so it refuses to start instead.
    if (auto newest = migrations().back().version; version > newest) {
      unlock();
      return make_storage_error(
        errc::schema_too_new,
        "the database's schema is version " + std::to_string(version)
          + ", newer than this troupe binary knows (version "
          + std::to_string(newest) + "); run a troupe at least as new as the"
          " one that migrated it");
    }
    for (auto& m : migrations()) {
      if (m.version <= version)
        continue;
      log().info("applying migration version={} name=\"{}\"", m.version,
                 m.name);
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
      if ((result = step("BEGIN")))
        break;
      auto record = [&]() -> caf::error {
        auto res = conn.exec("INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                             {std::to_string(m.version), m.name,
                              std::to_string(now)});
        return res ? caf::none : res.error();
      };
      if ((result = step(m.sql)) || (result = record())
          || (result = step("COMMIT"))) {
        (void) step("ROLLBACK");
        break;
      }
      version = m.version;
    }
  }
  unlock();
  return result;
}

namespace {

caf::error maintain_partitions_locked(connection& conn, int64_t days_back,
                                      int64_t days_ahead,
                                      int64_t retention_days);

} // namespace

caf::error maintain_partitions(connection& conn, int64_t days_back,
                               int64_t days_ahead, int64_t retention_days) {
  // Nodes starting together would race on the catalog ("relation already
  // exists" despite IF NOT EXISTS): one at a time.
  if (auto r = conn.exec("SELECT pg_advisory_lock(7201002)"); !r)
    return r.error();
  auto err = maintain_partitions_locked(conn, days_back, days_ahead,
                                        retention_days);
  (void) conn.exec("SELECT pg_advisory_unlock(7201002)");
  return err;
}

namespace {

caf::error maintain_partitions_locked(connection& conn, int64_t days_back,
                                      int64_t days_ahead,
                                      int64_t retention_days) {
  using namespace std::chrono;
  auto today = floor<hours>(system_clock::now()).time_since_epoch().count()
               / 24;
  auto day_name = [](int64_t day) {
    std::time_t t = static_cast<std::time_t>(day * 86400);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%04d%02d%02d", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday);
    return std::string{buf};
  };
  auto existing = conn.exec(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry_chunks'");
  if (!existing)
    return existing.error();
  std::vector<std::string> have;
  for (int i = 0; i < existing->rows(); ++i)
    have.push_back(existing->str(i, 0));
  auto has = [&](const std::string& n) {
    return std::find(have.begin(), have.end(), n) != have.end();
  };
  for (auto d = today - days_back; d <= today + days_ahead; ++d) {
    auto name = "telemetry_chunks_" + day_name(d);
    if (has(name))
      continue;
    // Bounds in epoch hours (the chunks' partition key).
    auto sql = "CREATE TABLE IF NOT EXISTS " + name
               + " PARTITION OF telemetry_chunks FOR VALUES FROM ("
               + std::to_string(d * 24) + ") TO ("
               + std::to_string((d + 1) * 24) + ")";
    if (auto res = conn.exec(sql); !res) {
      log().error("cannot create partition {}: {}", name,
                  res.error().context().match_element<std::string>(0)
                    ? res.error().context().get_as<std::string>(0)
                    : "?");
      return res.error();
    }
  }
  auto cutoff = "telemetry_chunks_" + day_name(today - retention_days);
  for (auto& n : have) {
    if (n == "telemetry_chunks_default" || n >= cutoff)
      continue;
    log().info("dropping expired partition {}", n);
    if (auto res = conn.exec("DROP TABLE IF EXISTS " + n); !res)
      return res.error();
  }
  return caf::none;
}

} // namespace

} // namespace troupe::storage
