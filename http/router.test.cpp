#include "http/router.hpp"

#include <catch2/catch.hpp>

using namespace troupe::http;

TEST_CASE("routes match by segments and capture parameters") {
  router r;
  int hit = 0;
  r.add("GET", "/api/v1/devices", [&](const call_ptr&) { hit = 1; });
  r.add("GET", "/api/v1/devices/{id}", [&](const call_ptr&) { hit = 2; });
  r.add("POST", "/api/v1/devices/{id}/commands",
        [&](const call_ptr&) { hit = 3; });
  r.add("GET", "/api/v1/devices/{id}/commands",
        [&](const call_ptr&) { hit = 4; });
  auto m = r.match("GET", "/api/v1/devices/pump-1");
  REQUIRE(m.hit);
  CHECK(m.hit->pattern == "/api/v1/devices/{id}");
  REQUIRE(m.params.size() == 1);
  CHECK(m.params[0] == "pump-1");
  m.hit->fn(nullptr);
  CHECK(hit == 2);
  auto c = r.match("POST", "/api/v1/devices/x/commands");
  REQUIRE(c.hit);
  CHECK(c.params == std::vector<std::string>{"x"});
  // Known path, other method: no hit, the allowed methods.
  auto d = r.match("DELETE", "/api/v1/devices/x/commands");
  CHECK(!d.hit);
  CHECK(d.allowed == std::vector<std::string>{"POST", "GET"});
  // Unknown paths, empty parameters, trailing slashes.
  CHECK(!r.match("GET", "/api/v1/nothing").hit);
  CHECK(r.match("GET", "/api/v1/nothing").allowed.empty());
  CHECK(!r.match("GET", "/api/v1/devices//commands").hit);
  CHECK(!r.match("GET", "/api/v1/devices/").hit);
  CHECK(!r.match("GET", "").hit);
  CHECK(!r.match("GET", "/").hit);
}
