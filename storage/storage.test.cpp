#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "storage/ingest.hpp"
#include "storage/queries.hpp"
#include "storage/spool.hpp"

using namespace troupe::storage;

TEST_CASE("copy binary encoding has header, rows and trailer") {
  std::vector<point_row> rows = {{7, "temp", 946'684'800'000, 1.5}};
  auto out = encode_copy_binary(rows, {3});
  REQUIRE(out.size() == 19 + 2 + 4 * 4 + 8 + 4 + 8 + 8 + 2);
  CHECK(out.substr(0, 11) == std::string("PGCOPY\n\377\r\n\0", 11));
  // field count 4
  CHECK(static_cast<uint8_t>(out[19]) == 0);
  CHECK(static_cast<uint8_t>(out[20]) == 4);
  // ts at the PostgreSQL epoch encodes as zero
  auto ts_off = 19 + 2 + 4 + 8 + 4 + 4 + 4;
  for (int i = 0; i < 8; ++i)
    CHECK(out[ts_off + i] == 0);
  CHECK(static_cast<uint8_t>(out[out.size() - 1]) == 0xFF);
}

TEST_CASE("batches round-trip through their spool encoding") {
  ingest_batch b;
  b.points.push_back({1, "temp", 1000, 21.5});
  b.points.push_back({2, "hum", 2000, -3.25});
  b.marks.push_back({1, 17, 1000});
  ingest_batch back;
  REQUIRE(decode_batch(encode_batch(b), back));
  REQUIRE(back.points.size() == 2);
  CHECK(back.points[1].metric == "hum");
  CHECK(back.points[1].value == -3.25);
  CHECK(back.marks[0].batch_hwm == 17);
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
