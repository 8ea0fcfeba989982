#include "http/client_address.hpp"

#include <catch2/catch.hpp>

using namespace troupe::http;
using namespace std::chrono;

TEST_CASE("X-Forwarded-For counts only behind a trusted proxy") {
  std::vector<std::string> lb{"10.0.0.2"};
  CHECK(client_address("1.2.3.4", "", lb) == "1.2.3.4");
  // Forged by a client talking to us directly: ignored.
  CHECK(client_address("1.2.3.4", "9.9.9.9", lb) == "1.2.3.4");
  CHECK(client_address("10.0.0.2", "9.9.9.9", lb) == "9.9.9.9");
  // The rightmost address not of a trusted proxy: what the proxy saw.
  CHECK(client_address("10.0.0.2", "6.6.6.6, 9.9.9.9", lb) == "9.9.9.9");
  CHECK(client_address("10.0.0.2", "9.9.9.9, 10.0.0.2", lb) == "9.9.9.9");
  CHECK(client_address("10.0.0.2", " , ", lb) == "10.0.0.2");
}

TEST_CASE("failed logins are throttled per address, memory bounded") {
  address_throttle t{2, seconds(10), 4};
  auto now = address_throttle::clock::now();
  t.fail("a", now);
  CHECK(t.blocked_for("a", now).count() == 0);
  t.fail("a", now);
  CHECK(t.blocked_for("a", now + seconds(1)) == seconds(9));
  CHECK(t.blocked_for("b", now).count() == 0);
  CHECK(t.blocked_for("a", now + seconds(10)).count() == 0);
  for (int i = 0; i < 100; ++i)
    t.fail("x" + std::to_string(i), now);
  CHECK(t.tracked() <= 4);
}
