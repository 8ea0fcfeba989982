#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "storage/ingest.hpp"
#include "storage/queries.hpp"
#include "storage/spool.hpp"

using namespace troupe::storage;

TEST_CASE("a batch's points group into chunks per device, metric and hour") {
  ingest_batch b;
  // Device 2 first, then device 1 across an hour boundary, then 2 again.
  b.points.push_back({2, "temp", 7'200'500, 1.0});
  b.points.push_back({1, "temp", 3'599'999, 2.0});
  b.points.push_back({1, "temp", 3'600'000, 3.0});
  b.points.push_back({2, "temp", 7'200'100, 4.0});
  b.points.push_back({1, "hum", -1, 5.0});
  auto c = chunk_points(b, {10, 10, 10, 10, 11});
  // Key order: (1, 10, 0), (1, 10, 1), (1, 11, -1), (2, 10, 2).
  REQUIRE(c.keys == std::vector<int64_t>{1, 1, 1, 2});
  CHECK(c.metrics == std::vector<int64_t>{10, 10, 11, 10});
  CHECK(c.hours == std::vector<int64_t>{0, 1, -1, 2});
  CHECK(c.offsets == std::vector<int64_t>{1, 2, 3, 4});
  CHECK(c.counts == std::vector<int64_t>{1, 1, 1, 2});
  // Within a chunk, upload order (not time order).
  CHECK(c.ms == std::vector<int64_t>{3'599'999, 3'600'000, -1, 7'200'500,
                                     7'200'100});
  CHECK(c.values == std::vector<double>{2.0, 3.0, 5.0, 1.0, 4.0});
  CHECK(hour_of(-3'600'000) == -1);
  CHECK(hour_of(-3'600'001) == -2);
}

TEST_CASE("batches round-trip through their spool encoding") {
  ingest_batch b;
  b.points.push_back({1, "temp", 1000, 21.5});
  b.points.push_back({2, "hum", 2000, -3.25});
  b.marks.push_back({1, 17, 1000});
  // No batch id, and last_seen recent enough: both -1 must survive.
  b.marks.push_back({2, -1, -1});
  ingest_batch back;
  REQUIRE(decode_batch(encode_batch(b), back));
  REQUIRE(back.points.size() == 2);
  CHECK(back.points[1].metric == "hum");
  CHECK(back.points[1].value == -3.25);
  REQUIRE(back.marks.size() == 2);
  CHECK(back.marks[0].batch_hwm == 17);
  CHECK(back.marks[0].last_seen_ms == 1000);
  CHECK(back.marks[1].device_key == 2);
  CHECK(back.marks[1].batch_hwm == -1);
  CHECK(back.marks[1].last_seen_ms == -1);
  auto bytes = encode_batch(b);
  CHECK(!decode_batch(bytes.substr(0, bytes.size() - 1), back));
}

TEST_CASE("spool appends, replays in order, survives a torn tail") {
  auto dir = std::filesystem::temp_directory_path()
             / ("troupe-spool-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  auto path = (dir / "s.spool").string();
  {
    spool s{path, 1 << 20};
    REQUIRE(!s.append("one"));
    REQUIRE(!s.append("two"));
    CHECK(s.size_bytes() == 8 + 3 + 8 + 3);
  }
  // Simulate a crash in the middle of a third append.
  {
    std::ofstream out{path, std::ios::app | std::ios::binary};
    out.write("\0\0\0\x10garb", 8);
  }
  spool s{path, 1 << 20};
  std::vector<std::string> seen;
  REQUIRE(!s.replay([&](const std::string& r) -> caf::error {
    seen.push_back(r);
    return caf::none;
  }));
  CHECK(seen == std::vector<std::string>{"one", "two"});
  REQUIRE(!s.clear());
  CHECK(s.empty());
  spool small{(dir / "small.spool").string(), 20};
  REQUIRE(!small.append("0123456789"));
  auto err = small.append("0123456789");
  REQUIRE(err);
  CHECK(err == errc::spool_full);
  std::filesystem::remove_all(dir);
}

TEST_CASE("connection strings are checked and shown without secrets") {
  using troupe::storage::check_url;
  using troupe::storage::url_address;
  CHECK(!check_url("postgresql://u:pw@db1:5433/troupe"));
  CHECK(!check_url("host=db1 port=5433 dbname=troupe"));
  CHECK(check_url("postgresql://db1:notaport:/x?bogus_option=1"));
  CHECK(check_url("host=db1 nonsense"));
  CHECK(check_url("postgresql://db1:notaport/x"));
  CHECK(check_url("host=a,b port=5432,99999"));
  CHECK(!check_url("host=a,b port=5432,5433"));
  CHECK(!check_url("postgresql://h1,h2:5433/db"));
  CHECK(!check_url("postgresql:///troupe?host=/var/run/postgresql"));
  CHECK(url_address("postgresql://u:pw@db1:5433/troupe") == "db1:5433");
  CHECK(url_address("postgresql://a:1,b:2/troupe?target_session_attrs="
                    "read-write")
        == "a:1,b:2");
  CHECK(url_address("host=db1 dbname=x") == "db1:5432");
  CHECK(url_address("host=h1,h2 port=7") == "h1:7,h2:7");
  CHECK(url_address("host=db1 nonsense") == "?");
}

TEST_CASE("place_device: stable, spread, and independent of the count's "
          "history", "[storage][shards]") {
  using troupe::storage::place_device;
  CHECK(place_device("any", 1) == 0);
  CHECK(place_device("any", 0) == 0);
  // Stable: the same id lands on the same shard every time.
  CHECK(place_device("pump-17", 3) == place_device("pump-17", 3));
  std::vector<int> per(3, 0);
  for (int i = 0; i < 30000; ++i) {
    auto s = place_device("dev-" + std::to_string(i), 3);
    REQUIRE(s >= 0);
    REQUIRE(s < 3);
    ++per[static_cast<size_t>(s)];
  }
  for (auto n : per) {
    CHECK(n > 9500);
    CHECK(n < 10500);
  }
}
