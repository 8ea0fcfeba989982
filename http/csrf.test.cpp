#include "http/csrf.hpp"

#include <catch2/catch.hpp>

using namespace troupe::http;

namespace {

request make(std::vector<header_field> headers) {
  request r;
  r.method = "POST";
  r.path = "/api/v1/devices/d1/commands";
  r.headers = std::move(headers);
  return r;
}

} // namespace

TEST_CASE("only state-changing methods are checked") {
  CHECK_FALSE(unsafe_method("GET"));
  CHECK_FALSE(unsafe_method("HEAD"));
  CHECK_FALSE(unsafe_method("OPTIONS"));
  CHECK(unsafe_method("POST"));
  CHECK(unsafe_method("PATCH"));
  CHECK(unsafe_method("DELETE"));
  CHECK(unsafe_method("PUT"));
}

TEST_CASE("a page of the same site passes") {
  CHECK_FALSE(forged_origin(make({{"Host", "fleet.example:8080"},
                                  {"Origin", "http://fleet.example:8080"}})));
  // Scheme differs behind a TLS-terminating proxy; default ports match.
  CHECK_FALSE(forged_origin(make({{"Host", "fleet.example"},
                                  {"Origin", "https://fleet.example:443"}})));
  CHECK_FALSE(forged_origin(make({{"Host", "FLEET.example"},
                                  {"Origin", "https://fleet.EXAMPLE"}})));
  // No Origin: the Referer names the page.
  CHECK_FALSE(forged_origin(
    make({{"Host", "127.0.0.1:9000"},
          {"Referer", "http://127.0.0.1:9000/devices/d1?range=1h"}})));
  CHECK_FALSE(forged_origin(make({{"Host", "a"},
                                  {"Origin", "http://a"},
                                  {"Sec-Fetch-Site", "same-origin"}})));
  // Behind a proxy that rewrites Host, the browser's own word counts.
  CHECK_FALSE(forged_origin(make({{"Host", "backend:8080"},
                                  {"Origin", "https://fleet.example"},
                                  {"Sec-Fetch-Site", "same-origin"}})));
  CHECK(forged_origin(make({{"Host", "backend:8080"},
                            {"Origin", "https://fleet.example"},
                            {"Sec-Fetch-Site", "same-site"}})));
}

TEST_CASE("requests from no browser page pass") {
  CHECK_FALSE(forged_origin(make({{"Host", "fleet.example"}})));
  CHECK_FALSE(forged_origin(make({})));
}

TEST_CASE("another site's page is refused") {
  auto why = forged_origin(make({{"Host", "fleet.example:8080"},
                                 {"Origin", "http://evil.example"}}));
  REQUIRE(why);
  CHECK(why->find("Origin") != std::string::npos);
  // Same host, another port is another origin.
  CHECK(forged_origin(make({{"Host", "fleet.example:8080"},
                            {"Origin", "http://fleet.example:8081"}})));
  CHECK(forged_origin(make({{"Host", "fleet.example"},
                            {"Referer", "https://evil.example/form.html"}})));
  // A sandboxed page or a data: URL sends "null".
  CHECK(forged_origin(make({{"Host", "fleet.example"}, {"Origin", "null"}})));
  // user@host tricks compare the host after '@'.
  CHECK(forged_origin(make({{"Host", "fleet.example"},
                            {"Origin", "http://fleet.example@evil.example"}})));
  CHECK(forged_origin(make({{"Host", "fleet.example"},
                            {"Origin", "http://fleet.example"},
                            {"Sec-Fetch-Site", "cross-site"}})));
  // No Host to compare with: refused, not guessed.
  CHECK(forged_origin(make({{"Origin", "http://fleet.example"}})));
}
