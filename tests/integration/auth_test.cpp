// Failed logins are throttled: per username and per device id (by the key's
// owner, so across a cluster too) and per client address (X-Forwarded-For
// only from a trusted proxy). Beyond the limit: 429 with Retry-After, also
// for the right credentials, until the window has passed.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace troupe::test;

namespace {

// Long enough that per_address failed logins (each a slow salted hash)
// fit in it on a loaded 2-core machine.
constexpr int window_s = 15;
constexpr int per_key = 4;
constexpr int per_address = 8;

node& throttled_node() {
  static node n{node_options{
    {{"auth.failed_login_window_s", std::to_string(window_s)},
     {"auth.max_failed_logins", std::to_string(per_key)},
     {"auth.max_failed_logins_per_address", std::to_string(per_address)},
     {"http.trusted_proxies", "127.0.0.1"}}}};
  return n;
}

/// Each caller its own client address, as the trusted proxy reports it.
headers from(const std::string& addr) {
  return {{"X-Forwarded-For", addr}};
}

response login_as(node& n, const std::string& user, const std::string& pw,
                    const std::string& addr) {
  return n.request("POST", "/api/v1/login",
                   json{{"username", user}, {"password", pw}}.dump(),
                   "application/json", from(addr));
}

response device_login_from(node& n, const std::string& id,
                      const std::string& secret, const std::string& addr) {
  return n.request("POST", "/api/v1/device/login",
                   json{{"device_id", id}, {"secret", secret}}.dump(),
                   "application/json", from(addr));
}

void check_retry_after(const response& r) {
  INFO(r.describe());
  REQUIRE(r.has_header("Retry-After"));
  auto s = std::stoi(r.header("Retry-After"));
  CHECK(s >= 1);
  CHECK(s <= window_s);
}

} // namespace

TEST_CASE("failed user logins are throttled per username for one window",
          "[auth]") {
  auto& n = throttled_node();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "viewer", tenant);
  // Each attempt from a different address: only the username's limit
  // applies.
  for (int i = 0; i < per_key; ++i)
    TROUPE_CHECK_ERROR(login_as(n, u.username, "wrong-password",
                                  "10.1.0." + std::to_string(i)),
                       401);
  auto throttled = login_as(n, u.username, "wrong-password", "10.1.1.1");
  TROUPE_CHECK_ERROR(throttled, 429);
  check_retry_after(throttled);
  // The right password too, while the window lasts...
  TROUPE_CHECK_ERROR(login_as(n, u.username, u.password, "10.1.1.2"), 429);
  // ...another user is not affected...
  auto other = make_user(n, "viewer", tenant);
  TROUPE_CHECK_STATUS(login_as(n, other.username, other.password,
                                 "10.1.1.3"),
                      200);
  // ...and after the window the right password works again.
  CHECK(eventually(
    [&] {
      return login_as(n, u.username, u.password, "10.1.1.4").status == 200;
    },
    std::chrono::seconds(window_s + 3), 250ms));
  CHECK(metric(n, "troupe_login_throttled_total{kind=\"user\",scope=\"key\"}")
          .value_or(0)
        >= 2);
}

TEST_CASE("failed device logins are throttled per device id", "[auth]") {
  auto& n = throttled_node();
  auto tenant = make_tenant(n);
  auto id = unique_id("thr");
  auto secret = n.register_device(n.admin_token(), id, tenant);
  for (int i = 0; i < per_key; ++i)
    TROUPE_CHECK_ERROR(device_login_from(n, id, "not-the-secret",
                                    "10.2.0." + std::to_string(i)),
                       401);
  auto throttled = device_login_from(n, id, secret, "10.2.1.1");
  TROUPE_CHECK_ERROR(throttled, 429);
  check_retry_after(throttled);
  CHECK(eventually(
    [&] { return device_login_from(n, id, secret, "10.2.1.2").status == 200; },
    std::chrono::seconds(window_s + 3), 250ms));
  CHECK(metric(n, "troupe_login_throttled_total{kind=\"device\",scope=\"key\"}")
          .value_or(0)
        >= 1);
}

TEST_CASE("failed logins are throttled per client address", "[auth]") {
  auto& n = throttled_node();
  auto tenant = make_tenant(n);
  auto u = make_user(n, "viewer", tenant);
  // Many usernames (each under its own limit) from one address.
  for (int i = 0; i < per_address; ++i)
    TROUPE_CHECK_ERROR(login_as(n, "nobody-" + std::to_string(i), "x",
                                  "10.3.0.1"),
                       401);
  auto throttled = login_as(n, u.username, u.password, "10.3.0.1");
  TROUPE_CHECK_ERROR(throttled, 429);
  check_retry_after(throttled);
  // Device logins from that address too.
  TROUPE_CHECK_ERROR(device_login_from(n, "some-device", "x", "10.3.0.1"), 429);
  // Another address is served.
  TROUPE_CHECK_STATUS(login_as(n, u.username, u.password, "10.3.0.2"), 200);
  // One refusal of each kind was counted against the address.
  for (auto kind : {"user", "device"})
    CHECK(metric(n, std::string{"troupe_login_throttled_total{kind=\""} + kind
                      + "\",scope=\"address\"}")
            .value_or(0)
          >= 1);
  // After the window, that address may log in again.
  CHECK(eventually(
    [&] {
      return login_as(n, u.username, u.password, "10.3.0.1").status == 200;
    },
    std::chrono::seconds(window_s + 3), 250ms));
}

TEST_CASE("X-Forwarded-For from an untrusted peer is ignored", "[auth]") {
  // The shared node trusts no proxy: every request is from 127.0.0.1,
  // whatever the header says, so spreading over forged addresses does not
  // escape the address limit.
  node n{node_options{
    {{"auth.failed_login_window_s", "60"},
     {"auth.max_failed_logins", "1000"},
     {"auth.max_failed_logins_per_address", "3"}}}};
  for (int i = 0; i < 3; ++i)
    TROUPE_CHECK_ERROR(login_as(n, "ghost", "x",
                                  "10.4.0." + std::to_string(i)),
                       401);
  TROUPE_CHECK_ERROR(login_as(n, "ghost", "x", "10.4.0.9"), 429);
}
