// Device side of API.md: login, telemetry (both JSON forms, MessagePack,
// RFC 3339 timestamps), batch_id deduplication, limits and validation, and
// the error answers of the device endpoints.

#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#ifndef MSGPACK_NO_BOOST
#  define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

using namespace troupe::test;

namespace {

constexpr int64_t minute_ms = 60'000;
constexpr int64_t day_ms = 86'400'000;

struct fixture {
  node& n = shared_node();
  std::string tenant = make_tenant(n);
  std::string admin = n.admin_token();
  device_login_info dev = make_device(n, tenant);
};

json point(const std::string& metric, double value, int64_t ts) {
  return {{"metric", metric}, {"value", value}, {"ts", ts}};
}

/// Sends a marker point after a rejected batch and waits for it: the device
/// handles its batches in order, so once the marker is visible, anything the
/// rejected batch had stored would be too.
json history_after_marker(fixture& f, const std::string& metric) {
  auto ts = now_ms() - 1000;
  auto r = post_telemetry(f.n, f.dev.token,
                          {{"points", {point(metric, 424242, ts)}}});
  if (r.status != 202)
    f.n.fail("marker point rejected", r);
  json pts;
  bool seen = eventually(
    [&] {
      pts = history(f.n, f.admin, f.dev.id, metric);
      return has_point(pts, ts, 424242);
    },
    15s);
  if (!seen)
    f.n.fail("marker point never became visible",
             f.n.get("/api/v1/devices/" + f.dev.id + "/telemetry?metric="
                       + metric,
                     f.admin));
  return pts;
}

bool message_contains(const response& r, const std::string& needle) {
  return r.body.is_object() && r.body.contains("error")
         && r.body["error"].is_object()
         && r.body["error"].value("message", "").find(needle)
              != std::string::npos;
}

} // namespace

TEST_CASE("device login returns a token and pending commands", "[device]") {
  fixture f;
  auto r = f.n.post("/api/v1/device/login",
                    {{"device_id", f.dev.id}, {"secret", f.dev.secret}});
  INFO(r.describe());
  REQUIRE(r.status == 200);
  REQUIRE(r.body.is_object());
  CHECK(r.body["token"].is_string());
  CHECK_FALSE(r.body.value("token", "").empty());
  CHECK(r.body["expires_in"] == 86400);
  CHECK(r.body["commands"].is_array());
  // The new token works.
  auto t = post_telemetry(f.n, r.body["token"].get<std::string>(),
                          {{"values", {{"x", 1}}}});
  TROUPE_CHECK_STATUS(t, 202);
}

TEST_CASE("device login: same 401 for a wrong id and a wrong secret",
          "[device][errors]") {
  fixture f;
  auto wrong_secret = f.n.post(
    "/api/v1/device/login",
    {{"device_id", f.dev.id}, {"secret", f.dev.secret + "x"}});
  auto wrong_id = f.n.post(
    "/api/v1/device/login",
    {{"device_id", unique_id("nosuchdev")}, {"secret", f.dev.secret}});
  TROUPE_CHECK_ERROR(wrong_secret, 401);
  TROUPE_CHECK_ERROR(wrong_id, 401);
  CHECK(wrong_secret.body == wrong_id.body);
}

TEST_CASE("device login: malformed requests", "[device][errors]") {
  fixture f;
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/login",
                                 "{\"device_id\": \"x\", \"secret\":"),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/device/login", {{"device_id", f.dev.id}}),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/device/login",
                              {{"device_id", 17}, {"secret", f.dev.secret}}),
                     400);
  TROUPE_CHECK_ERROR(f.n.post("/api/v1/device/login", json::array()), 400);
  TROUPE_CHECK_ERROR(
    f.n.request("POST", "/api/v1/device/login",
                json({{"device_id", f.dev.id}, {"secret", f.dev.secret}})
                  .dump(),
                "text/plain"),
    415);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/login"), 405);
}

TEST_CASE("telemetry, long form", "[device][telemetry]") {
  fixture f;
  auto t1 = now_ms() - 2 * minute_ms;
  auto t2 = t1 + 30'000;
  auto r = post_telemetry(f.n, f.dev.token,
                          {{"batch_id", 1},
                           {"points",
                            {point("temp", 21.5, t1), point("temp", 22.5, t2),
                             point("hum", 40, t2)}}});
  INFO(r.describe());
  REQUIRE(r.status == 202);
  CHECK(r.body["accepted"] == 3);
  CHECK(r.body["commands"].is_array());
  auto temp = wait_history(f.n, f.admin, f.dev.id, "temp", 2);
  CHECK(temp == json::array({{t1, 21.5}, {t2, 22.5}}));
  auto hum = wait_history(f.n, f.admin, f.dev.id, "hum", 1);
  CHECK(hum == json::array({{t2, 40}}));
}

TEST_CASE("telemetry, short form", "[device][telemetry]") {
  fixture f;
  auto ts = now_ms() - minute_ms;
  auto r = post_telemetry(f.n, f.dev.token,
                          {{"batch_id", 7},
                           {"ts", ts},
                           {"values", {{"temp", 21.5}, {"hum", 40}}}});
  INFO(r.describe());
  REQUIRE(r.status == 202);
  CHECK(r.body["accepted"] == 2);
  CHECK(r.body["commands"].is_array());
  CHECK(wait_history(f.n, f.admin, f.dev.id, "temp", 1)
        == json::array({{ts, 21.5}}));
  CHECK(wait_history(f.n, f.admin, f.dev.id, "hum", 1)
        == json::array({{ts, 40}}));
}

TEST_CASE("telemetry without ts gets the server's time", "[device][telemetry]") {
  fixture f;
  auto before = now_ms();
  auto r1 = post_telemetry(f.n, f.dev.token, {{"values", {{"nots", 1.5}}}});
  auto r2 = post_telemetry(
    f.n, f.dev.token,
    {{"points", {{{"metric", "nots2"}, {"value", 2.5}}}}});
  auto after = now_ms();
  TROUPE_CHECK_STATUS(r1, 202);
  TROUPE_CHECK_STATUS(r2, 202);
  for (auto [metric, value] :
       {std::pair{"nots", 1.5}, std::pair{"nots2", 2.5}}) {
    auto pts = wait_history(f.n, f.admin, f.dev.id, metric, 1);
    INFO(metric << ": " << pts.dump());
    REQUIRE(pts.size() == 1);
    CHECK(pts[0][1] == value);
    auto ts = pts[0][0].get<int64_t>();
    CHECK(ts >= before - 5000);
    CHECK(ts <= after + 5000);
  }
}

TEST_CASE("telemetry with RFC 3339 timestamps", "[device][telemetry]") {
  fixture f;
  auto ts = (now_ms() - 5 * minute_ms) / 1000 * 1000 + 123;
  auto r = post_telemetry(f.n, f.dev.token,
                          {{"points",
                            {{{"metric", "rfc"}, {"value", 1}, {"ts", rfc3339(ts)}}}}});
  TROUPE_CHECK_STATUS(r, 202);
  auto r2 = post_telemetry(f.n, f.dev.token,
                           {{"ts", rfc3339(ts + 1000)}, {"values", {{"rfc", 2}}}});
  TROUPE_CHECK_STATUS(r2, 202);
  CHECK(wait_history(f.n, f.admin, f.dev.id, "rfc", 2)
        == json::array({{ts, 1}, {ts + 1000, 2}}));
}

TEST_CASE("telemetry as MessagePack", "[device][telemetry]") {
  fixture f;
  auto ts = now_ms() - 3 * minute_ms;
  // Long form, encoded with msgpack-cxx.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{&buf};
  pk.pack_map(2);
  pk.pack(std::string{"batch_id"});
  pk.pack(int64_t{3});
  pk.pack(std::string{"points"});
  pk.pack_array(2);
  for (int i = 0; i < 2; ++i) {
    pk.pack_map(3);
    pk.pack(std::string{"metric"});
    pk.pack(std::string{"mp"});
    pk.pack(std::string{"value"});
    pk.pack(3.25 + i);
    pk.pack(std::string{"ts"});
    pk.pack(int64_t{ts + i * 1000});
  }
  auto r = f.n.request("POST", "/api/v1/device/telemetry",
                       std::string{buf.data(), buf.size()},
                       "application/msgpack", {}, f.dev.token);
  INFO(r.describe());
  CHECK(r.status == 202);
  CHECK(r.body["accepted"] == 2);
  // Short form, encoded by nlohmann::json (integer value, no batch_id).
  auto bytes = json::to_msgpack(
    json{{"ts", ts + 5000}, {"values", {{"mp", 7}, {"mp2", -1.5}}}});
  auto r2 = f.n.request("POST", "/api/v1/device/telemetry",
                        std::string{bytes.begin(), bytes.end()},
                        "application/msgpack", {}, f.dev.token);
  TROUPE_CHECK_STATUS(r2, 202);
  CHECK(wait_history(f.n, f.admin, f.dev.id, "mp", 3)
        == json::array({{ts, 3.25}, {ts + 1000, 4.25}, {ts + 5000, 7}}));
  CHECK(wait_history(f.n, f.admin, f.dev.id, "mp2", 1)
        == json::array({{ts + 5000, -1.5}}));
  // Garbage MessagePack.
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry",
                                 std::string{"\xc1\xc1\xc1", 3},
                                 "application/msgpack", {}, f.dev.token),
                     400);
  // Valid MessagePack of the wrong shape.
  auto wrong = json::to_msgpack(json::array({1, 2, 3}));
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry",
                                 std::string{wrong.begin(), wrong.end()},
                                 "application/msgpack", {}, f.dev.token),
                     400);
}

TEST_CASE("a repeated batch_id is a duplicate and stores nothing",
          "[device][telemetry]") {
  fixture f;
  auto ts = now_ms() - 10 * minute_ms;
  auto r = post_telemetry(f.n, f.dev.token,
                          {{"batch_id", 100},
                           {"points", {point("dup", 1, ts)}}});
  TROUPE_REQUIRE_STATUS(r, 202);
  CHECK(r.body["accepted"] == 1);
  // The retry of the same batch, and a different body under a stored id.
  for (auto value : {1.0, 99.0}) {
    auto again = post_telemetry(f.n, f.dev.token,
                                {{"batch_id", 100},
                                 {"points", {point("dup", value, ts + 1)}}});
    INFO(again.describe());
    CHECK(again.status == 200);
    CHECK(again.body["accepted"] == 0);
    CHECK(again.body["duplicate"] == true);
  }
  // Short form with a stored id too.
  auto short_again = post_telemetry(
    f.n, f.dev.token,
    {{"batch_id", 100}, {"ts", ts + 2}, {"values", {{"dup", 5}}}});
  TROUPE_CHECK_STATUS(short_again, 200);
  CHECK(short_again.body["duplicate"] == true);
  // A growing id is accepted.
  auto next = post_telemetry(f.n, f.dev.token,
                             {{"batch_id", 101},
                              {"points", {point("dup", 2, ts + 3)}}});
  TROUPE_CHECK_STATUS(next, 202);
  auto pts = history_after_marker(f, "dup");
  CHECK(has_point(pts, ts, 1));
  CHECK(has_point(pts, ts + 3, 2));
  CHECK_FALSE(has_point(pts, ts + 1, 1));
  CHECK_FALSE(has_point(pts, ts + 1, 99));
  CHECK_FALSE(has_point(pts, ts + 2, 5));
  CHECK(pts.size() == 3);
  // batch_ids are per device: another device may use 100.
  auto other = make_device(f.n, f.tenant);
  auto r3 = post_telemetry(f.n, other.token,
                           {{"batch_id", 100},
                            {"points", {point("dup", 1, ts)}}});
  TROUPE_CHECK_STATUS(r3, 202);
}

TEST_CASE("10,000 points per request; one more is rejected",
          "[device][telemetry][limits]") {
  fixture f;
  auto base = now_ms() - 60 * minute_ms;
  auto batch = [&](int count) {
    json pts = json::array();
    for (int i = 0; i < count; ++i)
      pts.push_back({{"metric", "n"}, {"value", i}, {"ts", base + i}});
    return json{{"points", std::move(pts)}};
  };
  auto ok = post_telemetry(f.n, f.dev.token, batch(10'000));
  INFO(ok.describe());
  CHECK(ok.status == 202);
  CHECK(ok.body["accepted"] == 10'000);
  auto too_many = post_telemetry(f.n, f.dev.token, batch(10'001));
  INFO(too_many.describe());
  CHECK((too_many.status == 400 || too_many.status == 413));
  CHECK(error_body_problem(too_many) == "");
  auto pts = wait_history(f.n, f.admin, f.dev.id, "n", 10'000,
                          "&limit=100000");
  CHECK(pts.size() == 10'000);
}

TEST_CASE("a batch with one invalid point is rejected whole",
          "[device][telemetry][limits]") {
  fixture f;
  auto now = now_ms();
  auto good = [&](int i) { return point("v", i, now - minute_ms + i); };
  SECTION("ts older than 30 days names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"batch_id", 5},
       {"points", {good(0), good(1), good(2), point("v", 3, now - 31 * day_ms)}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[3]"));
  }
  SECTION("ts more than 5 minutes ahead names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"points", {good(0), good(1), point("v", 2, now + 10 * minute_ms)}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[2]"));
  }
  SECTION("a value that is not a number names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"points",
        {good(0), {{"metric", "v"}, {"value", "abc"}, {"ts", now}}, good(2)}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[1]"));
  }
  SECTION("a null value names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"points",
        {good(0), good(1), {{"metric", "v"}, {"value", nullptr}, {"ts", now}}}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[2]"));
  }
  SECTION("an invalid metric name names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"points", {good(0), point("bad metric!", 1, now)}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[1]"));
  }
  SECTION("a point without metric names the point") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"points", {good(0), good(1), good(2), good(3),
                   {{"value", 1}, {"ts", now}}}}});
    TROUPE_CHECK_ERROR(r, 400);
    CHECK(message_contains(r, "points[4]"));
  }
  SECTION("short form with a bad value") {
    auto r = post_telemetry(f.n, f.dev.token,
                            {{"ts", now}, {"values", {{"v", 1}, {"w", "x"}}}});
    TROUPE_CHECK_ERROR(r, 400);
  }
  SECTION("short form with a ts too old") {
    auto r = post_telemetry(
      f.n, f.dev.token,
      {{"ts", now - 31 * day_ms}, {"values", {{"v", 1}, {"w", 2}}}});
    TROUPE_CHECK_ERROR(r, 400);
  }
  // Nothing of the rejected batch was stored.
  auto pts = history_after_marker(f, "v");
  INFO(pts.dump());
  CHECK(pts.size() == 1);
  // A metric never stored: an empty history (or 404 for the metric).
  auto w = f.n.get("/api/v1/devices/" + f.dev.id + "/telemetry?metric=w",
                   f.admin);
  INFO(w.describe());
  CHECK((w.status == 404
         || (w.status == 200 && w.body["points"] == json::array())));
}

TEST_CASE("telemetry: malformed bodies and wrong types", "[device][errors]") {
  fixture f;
  auto now = now_ms();
  auto raw = [&](const std::string& body) {
    return f.n.request("POST", "/api/v1/device/telemetry", body,
                       "application/json", {}, f.dev.token);
  };
  TROUPE_CHECK_ERROR(raw("{\"points\": ["), 400);
  TROUPE_CHECK_ERROR(raw("not json at all"), 400);
  TROUPE_CHECK_ERROR(raw("[]"), 400);
  TROUPE_CHECK_ERROR(raw("{}"), 400);
  TROUPE_CHECK_ERROR(post_telemetry(f.n, f.dev.token, {{"points", "nope"}}),
                     400);
  TROUPE_CHECK_ERROR(post_telemetry(f.n, f.dev.token, {{"values", json::array()}}),
                     400);
  TROUPE_CHECK_ERROR(post_telemetry(f.n, f.dev.token,
                                    {{"batch_id", "x"},
                                     {"points", {point("v", 1, now)}}}),
                     400);
  TROUPE_CHECK_ERROR(post_telemetry(f.n, f.dev.token,
                                    {{"points",
                                      {{{"metric", "v"}, {"value", 1}, {"ts", "yesterday"}}}}}),
                     400);
  TROUPE_CHECK_ERROR(post_telemetry(f.n, f.dev.token,
                                    {{"points",
                                      {{{"metric", "v"}, {"value", 1}, {"ts", true}}}}}),
                     400);
}

TEST_CASE("telemetry: body over 1 MiB is 413", "[device][errors][limits]") {
  fixture f;
  auto now = now_ms();
  // ~1.5 MiB of valid-looking points (about 50 bytes each).
  json pts = json::array();
  for (int i = 0; i < 32'000; ++i)
    pts.push_back(point("big", i, now - 20 * minute_ms + i));
  auto body = json{{"points", pts}}.dump();
  REQUIRE(body.size() > (1u << 20));
  auto r = f.n.request("POST", "/api/v1/device/telemetry", body,
                       "application/json", {}, f.dev.token);
  TROUPE_CHECK_ERROR(r, 413);
}

TEST_CASE("telemetry: content type, auth and method", "[device][errors]") {
  fixture f;
  auto body = json{{"values", {{"v", 1}}}}.dump();
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry", body,
                                 "text/plain", {}, f.dev.token),
                     415);
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry", body,
                                 "application/xml", {}, f.dev.token),
                     415);
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry", body),
                     401);
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry", body,
                                 "application/json", {}, "not-a-token"),
                     401);
  TROUPE_CHECK_ERROR(f.n.request("POST", "/api/v1/device/telemetry", body,
                                 "application/json",
                                 {{"Authorization", "Basic Zm9vOmJhcg=="}}),
                     401);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/telemetry", f.dev.token), 405);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/commands"), 401);
  TROUPE_CHECK_ERROR(f.n.get("/api/v1/device/commands", "not-a-token"), 401);
}
