#include <catch2/catch.hpp>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "actors/install.hpp"

using namespace troupe::actors;

namespace {

template <class T>
T round_trip(caf::actor_system& sys, T x) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  REQUIRE(!sink(x));
  T y;
  caf::binary_deserializer source{sys, buf};
  REQUIRE(!source(y));
  return y;
}

} // namespace

TEST_CASE("messages survive serialization (they may cross nodes)") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  telemetry t;
  t.token = "dev.abc";
  t.batch_id = 17;
  t.points = {{"temp", 1000, 21.5}, {"hum", 2000, 40}};
  auto t2 = round_trip(sys, t);
  CHECK(t2.batch_id == 17);
  REQUIRE(t2.points.size() == 2);
  CHECK(t2.points[1].metric == "hum");
  device_view v;
  v.id = "d1";
  v.latest["temp"] = {21.5, 1000};
  v.metrics = {"temp"};
  auto v2 = round_trip(sys, v);
  CHECK(v2.latest.at("temp").value == 21.5);
  history_reply h;
  h.points = {{1, 2.0}};
  h.buckets = {{0, 1, 2, 3, 4}};
  auto h2 = round_trip(sys, h);
  CHECK(h2.points[0].second == 2.0);
  CHECK(h2.buckets[0][4] == 4);
}
