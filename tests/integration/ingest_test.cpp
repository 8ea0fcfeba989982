// Storage against a real PostgreSQL, without a node: the ingest writer (a
// spooled batch replayed after its COMMIT answer was lost, or after an
// earlier replay stopped half-way, stores none of its points twice), the
// connections' TCP settings, and the sweep of a data shard's copies of
// deleted devices.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include "storage/ingest.hpp"
#include "storage/migrations.hpp"
#include "storage/queries.hpp"
#include "storage/pg.hpp"

#include <libpq-fe.h>

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
  auto t0 = now_ms() - 60'000;
  auto b = points(7, 0, 30, t0);
  REQUIRE(!w.write(b));
  CHECK(m.count() == 30);
  // The answer to that COMMIT was lost: the importer spooled it, and the
  // replay finds it stored.
  REQUIRE(!w.write(b, ingest_writer::mode::replay));
  CHECK(m.count() == 30);
  // A spooled batch overlapping stored points adds only the new ones.
  REQUIRE(!w.write(points(7, 20, 30, t0), ingest_writer::mode::replay));
  CHECK(m.count() == 50);
  CHECK(m.count("device_key = 7 AND value = 49.0 / 4") == 1);
  // Same time, another value, or another device: a different point.
  auto other = points(7, 0, 1, t0);
  other.points[0].value = 1e9;
  REQUIRE(!w.write(other, ingest_writer::mode::replay));
  REQUIRE(!w.write(points(8, 0, 30, t0), ingest_writer::mode::replay));
  CHECK(m.count() == 81);
  // Rollup deltas count each stored point once: 50 + 1 for device 7.
  auto n = m.db.query("SELECT coalesce(sum(n), 0) FROM rollup_deltas"
                      " WHERE device_key = 7");
  CHECK(n[0][0] == "51");
  // Latest values hold the newest point either way.
  auto latest = m.db.query(
    "SELECT value FROM latest l JOIN metrics x ON x.id = l.metric_id"
    " WHERE device_key = 7 AND x.name = 'temp'");
  REQUIRE(latest.size() == 1);
  CHECK(std::stod(latest[0][0]) == Approx(49.0 / 4));
}

TEST_CASE("a large batch (binary COPY) replays without duplicates too",
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
