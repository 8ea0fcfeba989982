// Storage against a real PostgreSQL, without a node: the ingest writer (a
// spooled batch replayed after its COMMIT answer was lost, or after an
// earlier replay stopped half-way, stores none of its points twice), the
// connections' TCP settings, and the sweep of a data shard's copies of
// deleted devices; spooled marks replay without moving a device's mark or
// last sighting back; a schema newer than the binary is refused.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include "storage/ingest.hpp"
#include "storage/migrations.hpp"
#include "storage/queries.hpp"
#include "storage/pg.hpp"
#include "storage/spool.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

using namespace troupe::test;
using troupe::storage::ingest_batch;
using troupe::storage::ingest_writer;

namespace {

struct migrated_db {
  database db;
  migrated_db() {
    troupe::storage::connection c{db.url()};
    int version = 0;
    auto err = troupe::storage::migrate(c, version);
    REQUIRE(!err);
    REQUIRE(version > 0);
  }
  int64_t count(const std::string& where = "true") const {
    return std::stoll(
      db.query("SELECT count(*) FROM telemetry WHERE " + where)[0][0]);
  }
};

ingest_batch points(int64_t device_key, int64_t from, int64_t n,
                    int64_t t0) {
  ingest_batch b;
  for (int64_t i = from; i < from + n; ++i)
    b.points.push_back({device_key, i % 2 ? "temp" : "hum", t0 + i,
                        static_cast<double>(i) / 4});
  b.marks.push_back({device_key, -1, t0 + from + n});
  return b;
}

} // namespace

TEST_CASE("a replayed batch stores none of its points twice", "[ingest]") {
  migrated_db m;
  ingest_writer w{m.db.url()};
  // Far enough from an hour's end that a batch's points share one hour.
  auto t0 = (now_ms() / 3'600'000 - 1) * 3'600'000 + 60'000;
  auto b = points(7, 0, 30, t0);
  REQUIRE(!w.write(b));
  CHECK(m.count() == 30);
  // Two chunks: one per metric (same device, same hour).
  CHECK(m.db.query("SELECT count(*) FROM telemetry_chunks")[0][0] == "2");
  // The answer to that COMMIT was lost: the importer spooled it, and the
  // replay finds it stored.
  REQUIRE(!w.write(b, ingest_writer::mode::replay));
  CHECK(m.count() == 30);
  // A spooled batch replays as it was written, so it groups into the same
  // chunks: one holding a stored batch's points and another device's
  // stores the other device's only.
  auto both = points(7, 0, 30, t0);
  auto eight = points(8, 0, 30, t0);
  both.points.insert(both.points.end(), eight.points.begin(),
                     eight.points.end());
  both.marks.push_back(eight.marks[0]);
  REQUIRE(!w.write(both, ingest_writer::mode::replay));
  CHECK(m.count() == 60);
  CHECK(m.count("device_key = 8") == 30);
  CHECK(m.count("device_key = 7 AND value = 29.0 / 4") == 1);
  // Same time, another value: a different chunk, stored.
  auto other = points(7, 0, 1, t0);
  other.points[0].value = 1e9;
  REQUIRE(!w.write(other, ingest_writer::mode::replay));
  CHECK(m.count() == 61);
  // Rollup deltas count each stored point once: 30 + 1 for device 7.
  auto n = m.db.query("SELECT coalesce(sum(n), 0) FROM rollup_deltas"
                      " WHERE device_key = 7");
  CHECK(n[0][0] == "31");
  CHECK(m.db.query("SELECT coalesce(sum(n), 0) FROM rollup_deltas"
                   " WHERE device_key = 8")[0][0]
        == "30");
  // Latest values hold the newest point either way.
  auto latest = m.db.query(
    "SELECT value FROM latest l JOIN metrics x ON x.id = l.metric_id"
    " WHERE device_key = 7 AND x.name = 'temp'");
  REQUIRE(latest.size() == 1);
  CHECK(std::stod(latest[0][0]) == Approx(29.0 / 4));
}

TEST_CASE("a large batch replays without duplicates too",
          "[ingest]") {
  migrated_db m;
  ingest_writer w{m.db.url()};
  auto t0 = now_ms() - 600'000;
  auto big = points(9, 0, 5000, t0);
  REQUIRE(!w.write(big));
  CHECK(m.count() == 5000);
  REQUIRE(!w.write(big, ingest_writer::mode::replay));
  CHECK(m.count() == 5000);
  CHECK(m.db.query("SELECT sum(n) FROM rollup_deltas")[0][0] == "5000");
  // A fresh write does not look (the importer only replays spooled
  // batches this way).
  REQUIRE(!w.write(points(9, 0, 10, t0)));
  CHECK(m.count() == 5010);
}

TEST_CASE("without a standby, a write that needs one commits and says so",
          "[ingest][standby]") {
  migrated_db m;
  // The test's PostgreSQL has no standby: every commit is the primary's
  // alone. Both write paths (one statement; a COPY transaction) commit the
  // points, then answer unreplicated, and name the primary's timeline.
  ingest_writer w{m.db.url(), 5, true};
  auto t0 = now_ms() - 60'000;
  auto err = w.write(points(9, 0, 30, t0));
  CHECK(err == troupe::storage::errc::unreplicated);
  CHECK(m.count("device_key = 9") == 30);
  // The primary's timeline, address and start time.
  REQUIRE(w.epoch().size() > 9);
  CHECK(w.epoch().find_first_not_of("0123456789ABCDEF") == 8);
  ingest_batch big;
  for (int64_t i = 0; i < 3000; ++i)
    big.points.push_back({10, "temp", t0 + i, static_cast<double>(i)});
  err = w.write(big);
  CHECK(err == troupe::storage::errc::unreplicated);
  CHECK(m.count("device_key = 10") == 3000);
  auto has = w.standby_has();
  REQUIRE(has);
  CHECK(!*has);
  // Without the need, the same commit is simply done.
  ingest_writer plain{m.db.url()};
  CHECK(!plain.write(points(11, 0, 5, t0)));
  CHECK(m.count("device_key = 11") == 5);
}

TEST_CASE("connections keep TCP keepalives unless the URL says otherwise",
          "[ingest]") {
  database db;
  auto option = [](troupe::storage::connection& c, const std::string& key) {
    std::string out;
    auto* opts = PQconninfo(c.native());
    for (auto* o = opts; o && o->keyword; ++o)
      if (key == o->keyword && o->val)
        out = o->val;
    PQconninfoFree(opts);
    return out;
  };
  troupe::storage::connection c{db.url()};
  REQUIRE(!c.ensure());
  CHECK(option(c, "keepalives") == "1");
  CHECK(option(c, "keepalives_idle") == "10");
  CHECK(option(c, "tcp_user_timeout") == "30000");
  auto url = db.url();
  url += url.find('?') == std::string::npos ? "?" : "&";
  troupe::storage::connection own{url + "keepalives_idle=42"};
  REQUIRE(!own.ensure());
  CHECK(option(own, "keepalives_idle") == "42");
  CHECK(option(own, "keepalives_count") == "3");
}

TEST_CASE("a data shard's copies of devices the catalog no longer has are "
          "swept, young ones and current ones kept",
          "[ingest]") {
  migrated_db catalog_db;
  migrated_db shard_db;
  troupe::storage::connection catalog{catalog_db.db.url()};
  troupe::storage::connection shard{shard_db.db.url()};
  catalog_db.db.query(
    "INSERT INTO tenants (id, name, created_ms) VALUES ('t', 't', 0)");
  auto dev = [](const char* id, int64_t key) {
    troupe::storage::new_device d;
    d.id = id;
    d.name = id;
    d.tenant = "t";
    d.secret_hash = "x";
    d.data_shard = 1;
    d.key = key;
    return d;
  };
  // The catalog has a (1), b (2) and d registered again as key 6; the
  // shard has copies of a, b, c (3, never registered: an undone
  // registration) and d's old incarnation (5).
  REQUIRE(!troupe::storage::insert_devices(
    catalog, {dev("a", 1), dev("b", 2), dev("d", 6)}));
  REQUIRE(!troupe::storage::mirror_devices(
    shard, {dev("a", 1), dev("b", 2), dev("c", 3), dev("d", 5)}));
  auto copies = [&] {
    std::vector<std::string> ids;
    for (auto& r : shard_db.db.query("SELECT id FROM devices ORDER BY id"))
      ids.push_back(r[0]);
    return ids;
  };
  auto now = troupe::test::now_ms();
  auto swept = troupe::storage::sweep_device_copies(shard, catalog,
                                                    now - 600'000);
  REQUIRE(swept);
  CHECK(*swept == 0);
  CHECK(copies() == std::vector<std::string>{"a", "b", "c", "d"});
  swept = troupe::storage::sweep_device_copies(shard, catalog, now + 1000);
  REQUIRE(swept);
  CHECK(*swept == 2);
  CHECK(copies() == std::vector<std::string>{"a", "b"});
  // Nothing left to sweep.
  swept = troupe::storage::sweep_device_copies(shard, catalog, now + 1000);
  REQUIRE(swept);
  CHECK(*swept == 0);
}

TEST_CASE("points stored one per row move into chunks, readable as before",
          "[ingest]") {
  database db;
  troupe::storage::connection c{db.url()};
  // The schema as it was before migration 9, with points in a day's
  // partition and in the default one.
  REQUIRE(c.exec("CREATE EXTENSION IF NOT EXISTS pgcrypto"));
  REQUIRE(c.exec("CREATE TABLE schema_migrations (version integer PRIMARY"
                 " KEY, name text NOT NULL, applied_ms bigint NOT NULL)"));
  for (auto& mig : troupe::storage::migrations()) {
    if (mig.version >= 9)
      break;
    REQUIRE(c.exec(mig.sql));
    REQUIRE(c.exec("INSERT INTO schema_migrations VALUES ("
                   + std::to_string(mig.version) + ", 'x', 0)"));
  }
  REQUIRE(c.exec("CREATE TABLE telemetry_20261201 PARTITION OF telemetry FOR"
                 " VALUES FROM ('2026-12-01 00:00:00+00')"
                 " TO ('2026-12-02 00:00:00+00')"));
  REQUIRE(c.exec("INSERT INTO metrics (name) VALUES ('temp'), ('hum')"));
  // 2026-12-01 10:00 UTC is 1,764,583,200,000 ms; one point in 1999.
  REQUIRE(c.exec(
    "INSERT INTO telemetry SELECT d, m, to_timestamp((1764583200000 + i"
    " * 60000) / 1000.0), i FROM generate_series(1, 2) d,"
    " generate_series(1, 2) m, generate_series(0, 89) i"
    " UNION ALL SELECT 1, 1, to_timestamp(915148800.5), 42"));
  int version = 0;
  REQUIRE(!troupe::storage::migrate(c, version));
  CHECK(version >= 9);
  // Per device and metric: 60 points in hour 10, 30 in hour 11 (2 chunks);
  // the 1999 point has a chunk (and a partition) of its own.
  CHECK(db.query("SELECT count(*) FROM telemetry_chunks")[0][0] == "9");
  CHECK(db.query("SELECT count(*) FROM telemetry_chunks_default")[0][0]
        == "0");
  CHECK(db.query("SELECT count(*) FROM telemetry_chunks_19990101")[0][0]
        == "1");
  CHECK(db.query("SELECT count(*), sum(value) FROM telemetry")[0]
        == std::vector<std::string>{"361", "16062"});
  CHECK(db.query("SELECT (extract(epoch FROM ts) * 1000)::bigint FROM"
                 " telemetry WHERE value = 42")[0][0]
        == "915148800500");
  // The storage's history read finds them by their index.
  troupe::storage::history_query q;
  q.device_key = 2;
  q.metric = "hum";
  q.from_ms = 1764583200000 + 50 * 60000;
  q.to_ms = 1764583200000 + 70 * 60000;
  q.limit = 100;
  auto h = troupe::storage::raw_history(c, q);
  REQUIRE(h);
  REQUIRE(h->size() == 21);
  CHECK(h->front().ts_ms == q.from_ms);
  CHECK(h->back().value == 70);
  // The newest `limit` of a range, oldest first.
  q.limit = 5;
  h = troupe::storage::raw_history(c, q);
  REQUIRE(h);
  REQUIRE(h->size() == 5);
  CHECK(h->front().value == 66);
  CHECK(h->back().value == 70);
  // Ad-hoc SQL reads a range by device id and metric name, through the
  // chunks of the range's hours only (telemetry_range, migration 10).
  REQUIRE(c.exec("INSERT INTO tenants (id, name, created_ms) VALUES"
                 " ('t', 't', 0)"));
  REQUIRE(c.exec("INSERT INTO devices (key, id, name, tenant, secret_hash,"
                 " created_ms) VALUES (2, 'dev-2', 'dev-2', 't', 'x', 0)"));
  auto range = [&](const char* device, int64_t from, int64_t to) {
    return db.query(
      "SELECT count(*), min(value), max(value), (array_agg(value))[1]"
      " FROM telemetry_range('" + std::string{device} + "', 'hum',"
      " to_timestamp(" + std::to_string(from) + " / 1000.0),"
      " to_timestamp(" + std::to_string(to) + " / 1000.0))")[0];
  };
  CHECK(range("dev-2", q.from_ms, q.to_ms)
        == std::vector<std::string>{"21", "50", "70", "50"});
  // Across the hour: points 59 and 60 lie in two chunks.
  CHECK(range("dev-2", 1764583200000 + 59 * 60000,
              1764583200000 + 60 * 60000)
        == std::vector<std::string>{"2", "59", "60", "59"});
  CHECK(range("no-such-device", q.from_ms, q.to_ms)[0] == "0");
}

TEST_CASE("a database migrated by a newer troupe is refused, not reused",
          "[ingest]") {
  migrated_db m;
  troupe::storage::connection c{m.db.url()};
  auto newest = troupe::storage::migrations().back().version;
  REQUIRE(c.exec("INSERT INTO schema_migrations VALUES ("
                 + std::to_string(newest + 1) + ", 'from the future', 0)"));
  int version = 0;
  auto err = troupe::storage::migrate(c, version);
  REQUIRE(err == troupe::storage::errc::schema_too_new);
  CHECK(version == newest + 1);
  // The advisory lock was released: another connection migrates (and is
  // refused) without waiting for this one to close.
  troupe::storage::connection other{m.db.url()};
  int seen = 0;
  CHECK(troupe::storage::migrate(other, seen)
        == troupe::storage::errc::schema_too_new);
  // Once the newer row is gone, the same database migrates as before.
  REQUIRE(c.exec("DELETE FROM schema_migrations WHERE version > "
                 + std::to_string(newest)));
  REQUIRE(!troupe::storage::migrate(other, seen));
  CHECK(seen == newest);
}

TEST_CASE("spooled marks replay without moving a device's mark or last "
          "sighting back",
          "[ingest]") {
  migrated_db m;
  troupe::storage::connection c{m.db.url()};
  REQUIRE(!troupe::storage::insert_tenant(c, {"t1", "T", 0}));
  auto keys = troupe::storage::reserve_device_keys(c, 1);
  REQUIRE(keys);
  auto key = keys->at(0);
  REQUIRE(!troupe::storage::insert_devices(c, {{"d1", "D", "t1", "h", 0, 0,
                                                key, {}}}));
  ingest_writer w{m.db.url()};
  auto t0 = (now_ms() / 3'600'000 - 1) * 3'600'000 + 60'000;
  auto stored = [&] {
    auto d = troupe::storage::load_devices(c, {"d1"}, now_ms());
    REQUIRE(d);
    REQUIRE(d->count("d1") == 1);
    return d->at("d1");
  };
  // Batch 20 refreshes last_seen; batch 21's mark says it is recent enough
  // (-1) and rides on the latest rows alone.
  auto b20 = points(key, 10, 4, t0);
  b20.marks = {{key, 20, t0 + 1000}};
  auto b21 = points(key, 14, 2, t0);
  b21.marks = {{key, 21, -1}};
  // Batch 5, older in every way, was spooled long ago and replays last.
  auto b5 = points(key, 0, 4, t0);
  b5.marks = {{key, 5, t0 + 500}};
  REQUIRE(!w.write(b20));
  // b21 and b5 go through the spool file, as an importer replays them.
  char path[] = "/tmp/troupe-spool-test.XXXXXX";
  auto fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    troupe::storage::spool s{path, 1 << 20};
    REQUIRE(!s.append(troupe::storage::encode_batch(b21)));
    REQUIRE(!s.append(troupe::storage::encode_batch(b5)));
    std::vector<ingest_batch> back;
    REQUIRE(!s.replay([&](const std::string& rec) -> caf::error {
      ingest_batch b;
      REQUIRE(troupe::storage::decode_batch(rec, b));
      back.push_back(b);
      return w.write(b, ingest_writer::mode::replay);
    }));
    REQUIRE(back.size() == 2);
    CHECK(back[0].marks.at(0).last_seen_ms == -1);
    CHECK(back[0].marks.at(0).batch_hwm == 21);
  }
  std::remove(path);
  auto d = stored();
  CHECK(d.batch_hwm == 21);
  CHECK(d.last_seen_ms == t0 + 1000);
  // The older points were stored, but the latest values are batch 21's.
  CHECK(m.count() == 10);
  REQUIRE(d.latest.size() == 2);
  for (auto& l : d.latest)
    CHECK(l.ts_ms == (l.metric == "temp" ? t0 + 15 : t0 + 14));
  // Replaying batch 20 again changes nothing either.
  REQUIRE(!w.write(b20, ingest_writer::mode::replay));
  CHECK(m.count() == 10);
  CHECK(stored().batch_hwm == 21);
}
