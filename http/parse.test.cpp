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
  CHECK(error_of(parse_json("")));
  CHECK(error_of(parse_json("{} x")));
  CHECK(!error_of(parse_json("{}")));
  auto mp = json::to_msgpack(json{{"values", {{"a", 1.5}}}});
  auto p = parse_telemetry_msgpack(std::string(mp.begin(), mp.end()),
                                   telemetry_limits{}, now);
  REQUIRE(!error_of(p));
  auto& t = std::get<troupe::actors::telemetry>(p);
  REQUIRE(t.points.size() == 1);
  CHECK(t.points[0].metric == "a");
  CHECK(t.points[0].value == 1.5);
  CHECK(t.points[0].ts_ms == now);
  CHECK(error_of(parse_telemetry_msgpack("\xc1", telemetry_limits{}, now)));
  // Trailing bytes after the value.
  auto two = std::string(mp.begin(), mp.end()) + "\xc0";
  CHECK(error_of(parse_telemetry_msgpack(two, telemetry_limits{}, now)));
}

namespace {

std::string nested_json(size_t levels) {
  return std::string(levels, '[') + std::string(levels, ']');
}

} // namespace

TEST_CASE("JSON nesting is bounded below each top-level member") {
  // {"args": <32 levels>} is fine; 33 levels are refused, naming args.
  CHECK(!error_of(parse_json("{\"args\":" + nested_json(32) + "}", 32)));
  auto deep = parse_json("{\"args\":" + nested_json(33) + "}", 32);
  REQUIRE(error_of(deep));
  CHECK(error_of(deep)->status == 400);
  CHECK(error_of(deep)->message == "args nests deeper than 32 levels");
  // A million levels: no recursion, so no stack overflow.
  auto huge = parse_json("{\"result\":" + nested_json(1'000'000) + "}", 32);
  REQUIRE(error_of(huge));
  CHECK(error_of(huge)->message.rfind("result", 0) == 0);
  // In a bulk array, the element is named.
  auto bulk = parse_json("[{}, {\"name\": " + nested_json(40) + "}]", 32);
  REQUIRE(error_of(bulk));
  CHECK(error_of(bulk)->message.rfind("[1].name", 0) == 0);
  // A top-level array nests from the root.
  CHECK(error_of(parse_json(nested_json(34), 32)));
}

TEST_CASE("JSON strings and keys may not hold NUL") {
  auto p = parse_json(R"({"name": "a\u0000b"})");
  REQUIRE(error_of(p));
  CHECK(error_of(p)->message == "name contains a NUL character");
  auto nested = parse_json(R"({"args": {"x": ["ok", "\u0000"]}})");
  REQUIRE(error_of(nested));
  CHECK(error_of(nested)->message == "args contains a NUL character");
  auto in_array = parse_json(R"([{"id": "a"}, {"id": "b", "name": "\u0000"}])");
  REQUIRE(error_of(in_array));
  CHECK(error_of(in_array)->message == "[1].name contains a NUL character");
  CHECK(error_of(parse_json(R"({"args": {"\u0000": 1}})")));
  // Other escapes are fine, values keep their content.
  auto ok = parse_json(R"({"name": "tab\there \u00e9"})");
  REQUIRE(!error_of(ok));
  CHECK(std::get<json>(ok)["name"] == "tab\there \u00e9");
}

TEST_CASE("MessagePack is decoded under limits") {
  telemetry_limits lim;
  lim.max_depth = 8;
  // 100,000 nested one-element arrays, then nil.
  auto arrays = std::string(100'000, '\x91') + '\xc0';
  auto a = parse_telemetry_msgpack(arrays, lim, now);
  REQUIRE(error_of(a));
  CHECK(error_of(a)->message.find("deeper") != std::string::npos);
  // 100,000 nested one-entry maps.
  std::string maps;
  for (int i = 0; i < 100'000; ++i)
    maps += "\x81\xa1x";
  maps += '\xc0';
  CHECK(error_of(parse_telemetry_msgpack(maps, lim, now)));
  // A declared 4-billion-element array or string with nothing behind it.
  CHECK(error_of(parse_telemetry_msgpack(std::string{"\xdd\xff\xff\xff\xff",
                                                     5},
                                         lim, now)));
  CHECK(error_of(parse_telemetry_msgpack(std::string{"\xdb\xff\xff\xff\xff",
                                                     5},
                                         lim, now)));
  // The long form with ts as integer, float and RFC 3339 string.
  auto mp = json::to_msgpack(json{
    {"batch_id", 9},
    {"points",
     {{{"metric", "a"}, {"value", 1}, {"ts", now - 1}},
      {{"metric", "b"}, {"value", -2.5}, {"ts", double(now - 2)}},
      {{"metric", "c"}, {"value", 3u}, {"ts", "2025-11-22T10:00:00Z"}}}}});
  auto t = parse_telemetry_msgpack(std::string(mp.begin(), mp.end()), lim, now);
  REQUIRE(!error_of(t));
  auto& msg = std::get<troupe::actors::telemetry>(t);
  CHECK(msg.batch_id == 9);
  REQUIRE(msg.points.size() == 3);
  CHECK(msg.points[1].value == -2.5);
  CHECK(msg.points[1].ts_ms == now - 2);
  CHECK(msg.points[2].ts_ms == now);
  // The same validation as JSON.
  auto bad = json::to_msgpack(
    json{{"points", {{{"metric", "a"}, {"value", "x"}}}}});
  auto e = parse_telemetry_msgpack(std::string(bad.begin(), bad.end()), lim,
                                   now);
  REQUIRE(error_of(e));
  CHECK(error_of(e)->message == "points[0].value is not a finite number");
}

TEST_CASE("Content-Encoding: gzip and identity only") {
  CHECK(!check_content_encoding(""));
  CHECK(!check_content_encoding("gzip"));
  CHECK(!check_content_encoding("GZIP "));
  CHECK(!check_content_encoding("identity"));
  for (auto c : {"br", "x-evil", "deflate", "gzip, br"}) {
    auto e = check_content_encoding(c);
    REQUIRE(e);
    CHECK(e->status == 415);
    CHECK(e->code == "unsupported_media_type");
  }
}

TEST_CASE("cursors and limits") {
  auto c = encode_cursor("d:dev-17");
  CHECK(decode_cursor(c) == std::string{"d:dev-17"});
  CHECK(!decode_cursor("!!"));
  // Positions with control characters never reach PostgreSQL.
  CHECK(!decode_cursor(encode_cursor(std::string{"d:\0", 3})));
  CHECK(std::get<int64_t>(parse_limit("", 100, 1000)) == 100);
  CHECK(std::get<int64_t>(parse_limit("5000", 100, 1000)) == 1000);
  CHECK(error_of(parse_limit("0", 100, 1000)));
  CHECK(error_of(parse_limit("abc", 100, 1000)));
}
