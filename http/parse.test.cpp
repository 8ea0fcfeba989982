#include "http/parse.hpp"

#include <catch2/catch.hpp>

using namespace troupe::http;
using json = nlohmann::json;

namespace {

constexpr int64_t now = 1'763'805'600'000; // 2025-11-22T10:00:00Z

template <class T>
const api_error* error_of(const parsed<T>& p) {
  return std::get_if<api_error>(&p);
}

} // namespace

TEST_CASE("ids follow API.md") {
  CHECK(valid_id("dev-1.a:b_C"));
  CHECK(!valid_id(""));
  CHECK(!valid_id(std::string(65, 'a')));
  CHECK(!valid_id("a/b"));
  CHECK(!valid_id("a b"));
}

TEST_CASE("RFC 3339 timestamps") {
  CHECK(parse_rfc3339("2025-11-22T10:00:00Z") == now);
  CHECK(parse_rfc3339("2025-11-22T10:00:00.123Z") == now + 123);
  CHECK(parse_rfc3339("2025-11-22T12:00:00+02:00") == now);
  CHECK(!parse_rfc3339("2025-11-22 garbage"));
  CHECK(!parse_rfc3339("2025-13-22T10:00:00Z"));
  CHECK(parse_ts(json(5)) == 5);
  CHECK(!parse_ts(json(true)));
}

TEST_CASE("steps") {
  CHECK(parse_step("60s") == 60'000);
  CHECK(parse_step("5m") == 300'000);
  CHECK(parse_step("1h") == 3'600'000);
  CHECK(parse_step("1d") == 86'400'000);
  CHECK(!parse_step("0s"));
  CHECK(!parse_step("x"));
  CHECK(!parse_step(""));
}

TEST_CASE("telemetry in both forms") {
  telemetry_limits lim;
  auto long_form = json::parse(R"({"batch_id": 17, "points": [
    {"metric": "temp", "value": 21.5, "ts": 1763805600000},
    {"metric": "hum", "value": 40}]})");
  auto t = parse_telemetry(long_form, lim, now);
  REQUIRE(!error_of(t));
  auto& msg = std::get<troupe::actors::telemetry>(t);
  CHECK(msg.batch_id == 17);
  REQUIRE(msg.points.size() == 2);
  CHECK(msg.points[1].ts_ms == now);
  auto short_form = json::parse(
    R"({"ts": 1763805600000, "values": {"temp": 21.5, "hum": 40}})");
  auto s = parse_telemetry(short_form, lim, now);
  REQUIRE(!error_of(s));
  CHECK(std::get<troupe::actors::telemetry>(s).points.size() == 2);
  CHECK(std::get<troupe::actors::telemetry>(s).batch_id == -1);
}

TEST_CASE("one bad point rejects the batch, naming it") {
  telemetry_limits lim;
  auto body = json::parse(R"({"points": [
    {"metric": "a", "value": 1}, {"metric": "a", "value": 1},
    {"metric": "a", "value": 1}, {"metric": "a", "value": "x"}]})");
  auto t = parse_telemetry(body, lim, now);
  REQUIRE(error_of(t));
  CHECK(error_of(t)->status == 400);
  CHECK(error_of(t)->message == "points[3].value is not a finite number");
  auto old = json::parse(R"({"points": [{"metric": "a", "value": 1, "ts": 1}]})");
  REQUIRE(error_of(parse_telemetry(old, lim, now)));
  CHECK(error_of(parse_telemetry(old, lim, now))->message.find("points[0].ts")
        != std::string::npos);
  auto future = json{{"points", {{{"metric", "a"}, {"value", 1},
                                  {"ts", now + 301'000}}}}};
  REQUIRE(error_of(parse_telemetry(future, lim, now)));
  CHECK(error_of(parse_telemetry(json::parse(R"({"batch_id": -1, "values":
    {"a": 1}})"), lim, now)));
  CHECK(error_of(parse_telemetry(json::parse("[]"), lim, now)));
  CHECK(error_of(parse_telemetry(json::parse(R"({"points": []})"), lim, now)));
  CHECK(error_of(parse_telemetry(json::parse(R"({"points": [{"metric":
    "bad name", "value": 1}]})"), lim, now)));
  lim.max_points = 2;
  auto many = json::parse(R"({"points": [{"metric": "a", "value": 1},
    {"metric": "a", "value": 1}, {"metric": "a", "value": 1}]})");
  CHECK(error_of(parse_telemetry(many, lim, now)));
}

TEST_CASE("bodies that are not JSON or MessagePack") {
  CHECK(error_of(parse_json("{nope")));
  CHECK(!error_of(parse_json("{}")));
  auto mp = json::to_msgpack(json{{"values", {{"a", 1.5}}}});
  auto p = parse_msgpack(std::string(mp.begin(), mp.end()));
  REQUIRE(!error_of(p));
  CHECK(std::get<json>(p)["values"]["a"] == 1.5);
  CHECK(error_of(parse_msgpack("\xc1")));
}

TEST_CASE("cursors and limits") {
  auto c = encode_cursor("d:dev-17");
  CHECK(decode_cursor(c) == std::string{"d:dev-17"});
  CHECK(!decode_cursor("!!"));
  CHECK(std::get<int64_t>(parse_limit("", 100, 1000)) == 100);
  CHECK(std::get<int64_t>(parse_limit("5000", 100, 1000)) == 1000);
  CHECK(error_of(parse_limit("0", 100, 1000)));
  CHECK(error_of(parse_limit("abc", 100, 1000)));
}
