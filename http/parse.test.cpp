#include "http/parse.hpp"

#include <cstdio>
#include <string>
#include <vector>

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

// -- parse_telemetry_json: simdjson On-Demand --------------------------------

namespace {

using troupe::actors::telemetry;

/// The reference: the bounded DOM, then the walk over it.
parsed<telemetry> dom_path(const std::string& body,
                           const telemetry_limits& lim) {
  auto doc = parse_json(body, lim.max_depth);
  if (auto e = error_of(doc))
    return *e;
  return parse_telemetry(std::get<json>(doc), lim, now);
}

std::string describe(const parsed<telemetry>& p) {
  if (auto e = error_of(p))
    return std::to_string(e->status) + " " + e->code + ": " + e->message;
  auto& t = std::get<telemetry>(p);
  std::string out = "batch " + std::to_string(t.batch_id);
  for (auto& pt : t.points) {
    char value[32];
    std::snprintf(value, sizeof value, "%a", pt.value); // exact, sign too
    out += " " + pt.metric + "@" + std::to_string(pt.ts_ms) + "=" + value;
  }
  return out;
}

std::string error_message(const parsed<telemetry>& p) {
  auto e = error_of(p);
  return e ? e->message : std::string{"(no error)"};
}

std::string point_json(int i) {
  return R"({"metric": "m)" + std::to_string(i % 7) + R"(", "value": )"
         + std::to_string(i) + R"(.25, "ts": )" + std::to_string(now - i)
         + "}";
}

std::string points_body(int n) {
  std::string body = R"({"batch_id": 3, "points": [)";
  for (int i = 0; i < n; ++i)
    body += (i ? ", " : "") + point_json(i);
  return body + "]}";
}

} // namespace

TEST_CASE("JSON telemetry: both forms, members in any order") {
  telemetry_limits lim;
  auto t = parse_telemetry_json(R"({"batch_id": 17, "points": [
    {"metric": "temp", "value": 21.5, "ts": 1763805600000},
    {"value": 40, "metric": "hum"},
    {"ts": "2025-11-22T09:59:59.5Z", "extra": [1, {"a": null}],
     "metric": "co2", "value": -3e2}]})",
                                lim, now);
  REQUIRE(!error_of(t));
  auto& msg = std::get<telemetry>(t);
  CHECK(msg.batch_id == 17);
  REQUIRE(msg.points.size() == 3);
  CHECK(msg.points[0].metric == "temp");
  CHECK(msg.points[0].value == 21.5);
  CHECK(msg.points[0].ts_ms == now);
  CHECK(msg.points[1].metric == "hum");
  CHECK(msg.points[1].ts_ms == now);
  CHECK(msg.points[2].value == -300);
  CHECK(msg.points[2].ts_ms == now - 500);
  // The short form with "values" first and "batch_id" last; points come
  // sorted by metric name, as the DOM's std::map gave them.
  auto s = parse_telemetry_json(
    R"({"values": {"temp": 21.5, "hum": 40}, "ts": 1763805599000,
        "batch_id": 9})",
    lim, now);
  REQUIRE(!error_of(s));
  auto& sm = std::get<telemetry>(s);
  CHECK(sm.batch_id == 9);
  REQUIRE(sm.points.size() == 2);
  CHECK(sm.points[0].metric == "hum");
  CHECK(sm.points[1].metric == "temp");
  CHECK(sm.points[1].ts_ms == now - 1000);
  // Keys are compared unescaped.
  auto esc = parse_telemetry_json(R"({"v\u0061lues": {"a": 1}})", lim, now);
  REQUIRE(!error_of(esc));
  CHECK(std::get<telemetry>(esc).batch_id == -1);
}

TEST_CASE("JSON telemetry errors are named as before") {
  telemetry_limits lim;
  auto check = [&](const std::string& body, const std::string& message,
                   const std::string& code = "invalid_request") {
    INFO(body);
    auto p = parse_telemetry_json(body, lim, now);
    REQUIRE(error_of(p));
    CHECK(error_of(p)->status == 400);
    CHECK(error_of(p)->code == code);
    CHECK(error_of(p)->message == message);
  };
  check(R"({"points": [{"metric": "a", "value": 1}, {"metric": "a",
    "value": 1}, {"metric": "a", "value": 1}, {"metric": "a",
    "value": "x"}]})",
        "points[3].value is not a finite number");
  check(R"({"points": [{"metric": "a", "value": 1, "ts": 1}]})",
        "points[0].ts is older than 30 days");
  check(R"({"points": [{"metric": "a", "value": 1, "ts": 1763805901000}]})",
        "points[0].ts is more than 300 s in the future");
  check(R"({"points": [{"metric": "a", "value": 1, "ts": 1.5}]})",
        "points[0].ts is not a timestamp (integer ms or RFC 3339)");
  check(R"({"points": [{"metric": "a b", "value": 1}]})",
        "points[0].metric is missing or not a valid metric name");
  check(R"({"points": [{"metric": "a", "value": 1}, 7]})",
        "points[1] is not an object");
  check(R"({"points": {}})", "points must be an array");
  check(R"({"points": []})", "points must not be empty");
  check(R"({"points": [], "values": {}})",
        "give either points or values, not both");
  check("[]", "telemetry body must be an object");
  check("17", "telemetry body must be an object");
  check(R"({"batch_id": -1, "values": {"a": 1}})",
        "batch_id must be a non-negative integer");
  check(R"({"batch_id": 1.0, "values": {"a": 1}})",
        "batch_id must be a non-negative integer");
  check(R"({"batch_id": 9223372036854775808, "values": {"a": 1}})",
        "batch_id must be a non-negative integer");
  check(R"({"values": []})", "values must be an object of metric: number");
  check(R"({"values": {}})", "values must not be empty");
  check(R"({"values": {"a": true}})", "values.a is not a finite number");
  check(R"({"values": {"a\u0001": 1}})", "values.? is not a valid metric name");
  check(R"({"ts": "yesterday", "values": {"a": 1}})",
        "ts is not a timestamp (integer ms or RFC 3339)");
  check(R"({"batch_id": 1})", "telemetry needs points or values");
  // Telemetry errors follow parse_telemetry's order, not the document's.
  check(R"({"points": [{"metric": "a", "value": "x"}], "batch_id": -1})",
        "batch_id must be a non-negative integer");
  // ts beyond int64 wraps, as nlohmann's get<int64_t>() did.
  check(R"({"points": [{"metric": "a", "value": 1,
    "ts": 18446744073709551615}]})",
        "points[0].ts is older than 30 days");
  check(R"({"points": [{"metric": "a", "value": 1, "ts": 1e16}]})",
        "points[0].ts is not a timestamp (integer ms or RFC 3339)");
  lim.max_points = 2;
  check(R"({"points": [{"metric": "a", "value": "bad"}, {"metric": "a",
    "value": 1}, {"metric": "a", "value": 1}]})",
        "too many points: 3 (at most 2)", "too_many_points");
  check(R"({"values": {"a": 1, "b": 2, "c": 3}})", "too many points: 3",
        "too_many_points");
}

TEST_CASE("JSON telemetry: malformed bodies are 400 malformed_json") {
  telemetry_limits lim;
  for (std::string body :
       {"", "{nope", "{} x", R"({"values": {"a": 1}} {})",
        R"({"values": {"a": 1}}})", R"({"values": {"a": 1},})",
        R"({"values": {"a": 1}, "x": [1 2]})", R"({"values": {"a": 1e400}})",
        R"({"values": {"a": 1}, "x": tru})", R"({"values": {"a": 01}})",
        R"({"values": {"a": 1}, "x": "\ud800"})", "{\"values\": {\"a\": 1}"}) {
    INFO(body);
    auto p = parse_telemetry_json(body, lim, now);
    REQUIRE(error_of(p));
    CHECK(error_of(p)->status == 400);
    CHECK(error_of(p)->code == "malformed_json");
    CHECK(error_of(p)->message.rfind("request body is not valid JSON", 0)
          == 0);
  }
}

TEST_CASE("JSON telemetry: nesting is bounded without recursion") {
  telemetry_limits lim;
  auto deep = nested_json(100'000);
  // An unknown top-level member.
  auto a = parse_telemetry_json(R"({"values": {"a": 1}, "extra": )" + deep
                                  + "}",
                                lim, now);
  CHECK(error_message(a) == "extra nests deeper than 32 levels");
  // An unknown member of a point, and a point that is an array.
  auto b = parse_telemetry_json(
    R"({"points": [{"metric": "a", "value": 1, "x": )" + deep + "}]}", lim,
    now);
  CHECK(error_message(b) == "points nests deeper than 32 levels");
  auto c = parse_telemetry_json(R"({"points": [)" + deep + "]}", lim, now);
  CHECK(error_message(c).find("deeper") != std::string::npos);
  // The same in objects, and as a metric's value.
  std::string objects;
  for (int i = 0; i < 100'000; ++i)
    objects += R"({"x":)";
  objects += "1" + std::string(100'000, '}');
  auto d = parse_telemetry_json(R"({"values": {"a": )" + objects + "}}", lim,
                                now);
  CHECK(error_message(d) == "values nests deeper than 32 levels");
  // The bound itself: 32 levels below a top-level member pass (the point is
  // level 2, its member's value 3).
  auto at_bound = R"({"points": [{"metric": "a", "value": 1, "x": )"
                  + nested_json(30) + "}]}";
  CHECK(!error_of(parse_telemetry_json(at_bound, lim, now)));
  auto past = R"({"points": [{"metric": "a", "value": 1, "x": )"
              + nested_json(31) + "}]}";
  CHECK(error_message(parse_telemetry_json(past, lim, now))
        == "points nests deeper than 32 levels");
}

TEST_CASE("JSON telemetry: NUL characters are refused as parse_json does") {
  telemetry_limits lim;
  // In a metric name, an unknown member, a key: named by the top-level
  // member, before any telemetry error.
  CHECK(error_message(parse_telemetry_json(
          R"({"points": [{"metric": "a\u0000", "value": 1}]})", lim, now))
        == "points contains a NUL character");
  CHECK(error_message(parse_telemetry_json(
          R"({"values": {"a": 1}, "note": ["ok", "\u0000"]})", lim, now))
        == "note contains a NUL character");
  CHECK(error_message(parse_telemetry_json(
          R"({"values": {"a\u0000": 1}})", lim, now))
        == "values.a key contains a NUL character");
  CHECK(error_message(parse_telemetry_json(
          R"({"\u0000": 1, "values": {"a": 1}})", lim, now))
        == "a key contains a NUL character");
  CHECK(error_message(parse_telemetry_json(
          R"({"points": [{"metric": "a", "value": "x"}], "z": "\u0000"})",
          lim, now))
        == "z contains a NUL character");
}

TEST_CASE("JSON telemetry: duplicate keys count with their last value") {
  telemetry_limits lim;
  auto p = parse_telemetry_json(
    R"({"points": [{"metric": "a", "value": "x"}], "batch_id": 1,
        "points": [{"metric": "b", "value": 1, "value": 2}],
        "batch_id": 2})",
    lim, now);
  REQUIRE(!error_of(p));
  auto& t = std::get<telemetry>(p);
  CHECK(t.batch_id == 2);
  REQUIRE(t.points.size() == 1);
  CHECK(t.points[0].metric == "b");
  CHECK(t.points[0].value == 2);
  auto v = parse_telemetry_json(R"({"values": {"a": "x", "b": 1, "a": 3}})",
                                lim, now);
  REQUIRE(!error_of(v));
  REQUIRE(std::get<telemetry>(v).points.size() == 2);
  CHECK(std::get<telemetry>(v).points[0].value == 3);
}

TEST_CASE("JSON telemetry: 10,000 points") {
  telemetry_limits lim;
  auto p = parse_telemetry_json(points_body(10'000), lim, now);
  REQUIRE(!error_of(p));
  auto& t = std::get<telemetry>(p);
  REQUIRE(t.points.size() == 10'000);
  CHECK(t.points[9'999].metric == "m3");
  CHECK(t.points[9'999].value == 9999.25);
  CHECK(t.points[9'999].ts_ms == now - 9'999);
  CHECK(describe(p) == describe(dom_path(points_body(10'000), lim)));
  auto many = parse_telemetry_json(points_body(10'001), lim, now);
  REQUIRE(error_of(many));
  CHECK(error_of(many)->code == "too_many_points");
  CHECK(error_of(many)->message == "too many points: 10001 (at most 10000)");
  // After a large body, this thread's parser still serves small ones.
  CHECK(!error_of(parse_telemetry_json(points_body(2), lim, now)));
}

TEST_CASE("JSON telemetry: simdjson decodes as the DOM path did") {
  telemetry_limits lim;
  const std::string ok_point = R"({"metric": "a", "value": 1})";
  const std::vector<std::string> bodies = {
    // valid, long form
    points_body(1),
    points_body(100),
    R"({"points": [{"metric": "a", "value": 1, "ts": null}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": 1763805600000.0}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": 1.7638056e12}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": -0}]})",
    R"({"points": [{"metric": "a", "value": 1,
        "ts": "2025-11-22T12:00:00+02:00"}]})",
    R"({"points": [{"metric": "a", "value": -0}, {"metric": "b",
        "value": -0.0}, {"metric": "c", "value": 1e-400}, {"metric": "d",
        "value": 18446744073709551615}, {"metric": "e",
        "value": 123456789012345678901234567890}, {"metric": "f",
        "value": 1.7976931348623157e308}, {"metric": "g", "value": 4.9e-324},
        {"metric": "h", "value": 0.1}, {"metric": "i", "value": -1E+2}]})",
    R"({"batch_id": 0, "points": [{"metric": "a", "value": 1}]})",
    R"({"batch_id": -0, "points": [{"metric": "a", "value": 1}]})",
    R"({"batch_id": 9223372036854775807, "points": [{"metric": "a",
        "value": 1}]})",
    R"({"batch_id": null, "ts": "junk", "points": [{"metric": "a",
        "value": 1}]})",
    R"( { "points" : [ { "value" : 2 , "metric" : "a" } ] } )"
    "\r\n\t",
    R"({"extra": {"x": [true, false, null, "s\"\\\/\b\f\n\r\t\u00e9", -1.5e-3,
        {"": {}}, []]}, "points": [{"metric": "a", "value": 1,
        "metric": "b", "note": {"deep": [[[[1]]]]}}]})",
    R"({"p\u006fints": [{"m\u0065tric": "a", "value": 1}]})",
    R"({"points": [{"metric": "a", "value": "x"}], "points": [{"metric": "a",
        "value": 1}]})",
    // valid, short form
    R"({"values": {"b": 1, "a": 2, "c": 3.5}})",
    R"({"values": {"a": 1}, "ts": 1763805600000, "batch_id": 5})",
    R"({"ts": "2025-11-22T10:00:00Z", "values": {"a": 1, "a": 2}})",
    R"({"ts": null, "values": {"a.b:c-d_e": 1}})",
    // not JSON, or JSON that nlohmann refuses
    "",
    "   ",
    "{",
    "{nope",
    "{} x",
    "{}}",
    R"({"points": [}])",
    R"({"points": [)" + ok_point + ",]}",
    R"({"points": [)" + ok_point + "]",
    R"({"values" {"a": 1}})",
    R"({"values": {"a": 1}, "x": [1 2]})",
    R"({"values": {"a": 1}, "x": [1}})",
    R"({"values": {"a": 1}, "x": nul})",
    R"({"values": {"a": 1}, "x": -})",
    R"({"values": {"a": 1}, "x": 1.})",
    R"({"values": {"a": 1}, "x": "\x"})",
    R"({"values": {"a": 1}, "x": "\udc00"})",
    R"({"values": {"a": 1}, "x": 1.7976931348623159e308})",
    R"({"values": {"a": 1}, "x": 1)" + std::string(400, '0') + "}",
    "{\"values\": {\"a\": 1}, \"x\": \"tab\there\"}",
    "{\"values\": {\"a\": 1}, \"x\": \"\xff\"}",
    "{\"values\": {\"a\": 1}, \"x\": \"\xed\xa0\x80\"}",
    "{\"values\": {\"a\": 1}, \"x\": \"unclosed}",
    // what nlohmann accepts and simdjson does not: the reference decides
    "\xef\xbb\xbf{\"values\": {\"a\": 1}}",
    R"({"values": {"a": 1}})" + std::string(1, '\0') + " trailing",
    // not an object
    "[]",
    "null",
    "\"points\"",
    R"([{"x": )" + nested_json(40) + "}]",
    R"([{"\u0000": 1}])",
    // telemetry errors
    R"({"batch_id": "1", "values": {"a": 1}})",
    R"({"batch_id": 1.5, "values": {"a": 1}})",
    R"({"batch_id": 18446744073709551615, "values": {"a": 1}})",
    R"({"batch_id": {}, "values": {"a": 1}})",
    R"({"points": null})",
    R"({"points": null, "values": null})",
    R"({"points": [1, {"metric": "a", "value": "x"}]})",
    R"({"points": [{"value": 1}]})",
    R"({"points": [{"metric": 7, "value": 1}]})",
    R"({"points": [{"metric": ")" + std::string(65, 'a')
      + R"(", "value": 1}]})",
    R"({"points": [{"metric": "a"}]})",
    R"({"points": [{"metric": "a", "value": null}]})",
    R"({"points": [{"metric": "a", "value": [1]}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": true}]})",
    R"({"points": [{"metric": "a", "value": 1,
        "ts": "2025-13-01T00:00:00Z"}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": 9223372036854775808}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": -9223372036854775809}]})",
    R"({"points": [{"metric": "a", "value": 1, "ts": 1763805900001}]})",
    R"({"values": "a"})",
    R"({"values": {"bad name": 1}})",
    R"({"values": {"a": "1"}})",
    R"({"values": {"a": 1}, "ts": 0})",
    R"({"values": {"a": 1}, "ts": [1763805600000]})",
    R"({"points": [{"metric": "a", "value": 1}], "points": 1})",
    // parse_json's bounds come first, in document order
    R"({"points": [{"metric": "a", "value": "x"}], "z": )" + nested_json(33)
      + "}",
    R"({"batch_id": -1, "z": [1, 2, "\u0000"]})",
    R"({"": )" + nested_json(40) + "}",
    R"({"": ["\u0000"]})",
    R"({"": {"\u0000": 1}})",
    R"({"points": [{"metric": "a", "value": "x"}], "z": [1,]})",
    R"({"z": )" + nested_json(40) + R"(, "w": [1,]})",
    R"({"z": [1,], "w": )" + nested_json(40) + "}",
    R"({"a": "\u0000", "b": "\ud800"})",
    R"({"a": "\ud800", "b": "\u0000"})",
    R"({"points": [{"metric": "a", "value": 1, "x": )" + nested_json(31)
      + "}]}",
    R"({"values": {"a": )" + nested_json(32) + "}}",
    R"({"values": {"a": )" + nested_json(31) + "}}",
    // a few more of each
    R"({"values": {"a": 1}, "x": 1e400})",
    R"({"values": {"a": 1}, "x": tru})",
    R"({"values": {"a": 1}, "x": 01})",
    R"({"points": [{"metric": "a", "value": 1, "ts": "\u0000"}]})",
    R"({"points": [{"metric": "a", "value": 1}], "values": {"a": 1}})",
    R"({"values": {"a": 1}, "ts": 1e16})",
    R"({"points": [{"metric": "a", "value": 1, "metric": "bad name"}]})",
    R"({"values": {"": 1}})",
    R"({"values": {"b": 1, "a": "x"}})",
  };
  size_t errors = 0;
  for (auto& body : bodies) {
    INFO(body.substr(0, 200));
    auto expected = dom_path(body, lim);
    CHECK(describe(parse_telemetry_json(body, lim, now)) == describe(expected));
    errors += error_of(expected) != nullptr;
  }
  // A tight limit of depth and points too.
  telemetry_limits tight;
  tight.max_depth = 1;
  tight.max_points = 3;
  for (auto& body : bodies) {
    INFO(body.substr(0, 200));
    CHECK(describe(parse_telemetry_json(body, tight, now))
          == describe(dom_path(body, tight)));
  }
  CHECK(bodies.size() >= 90);
  CHECK(errors >= 60);
}

TEST_CASE("device registrations: name and silence window") {
  bool bulk = false;
  auto one = parse_device_specs(
    json{{"id", "d1"}, {"tenant", "t"}, {"silence_s", 600}}, bulk);
  REQUIRE(!error_of(one));
  CHECK(!bulk);
  auto& d = std::get<std::vector<troupe::actors::new_device_spec>>(one);
  REQUIRE(d.size() == 1);
  CHECK(d[0].name == "d1");
  CHECK(d[0].silence_s == 600);
  auto many = parse_device_specs(
    json::array({{{"id", "a"}, {"tenant", "t"}, {"silence_s", nullptr}},
                 {{"id", "b"}, {"tenant", "t"}, {"name", "B"}}}),
    bulk);
  REQUIRE(!error_of(many));
  CHECK(bulk);
  for (auto& s : std::get<std::vector<troupe::actors::new_device_spec>>(many))
    CHECK(s.silence_s == 0);
  for (auto bad : {json(0), json(-1), json(2.5), json("60"), json(true),
                   json(max_silence_s + 1), json(1e300),
                   json(18446744073709551615ull)}) {
    INFO(bad.dump());
    auto p = parse_device_specs(
      json::array({{{"id", "a"}, {"tenant", "t"}},
                   {{"id", "b"}, {"tenant", "t"}, {"silence_s", bad}}}),
      bulk);
    auto e = error_of(p);
    REQUIRE(e);
    CHECK(e->status == 400);
    CHECK(e->message.rfind("[1].silence_s", 0) == 0);
  }
  // Names follow the rule of a rename: characters, not bytes, count.
  std::string e256, e257 = "\xc3\xa9";
  for (int i = 0; i < 256; ++i)
    e256 += "\xc3\xa9"; // é
  e257 += e256;
  auto wide = parse_device_specs(
    json{{"id", "d1"}, {"tenant", "t"}, {"name", e256}}, bulk);
  REQUIRE(!error_of(wide));
  CHECK(std::get<std::vector<troupe::actors::new_device_spec>>(wide)[0].name
        == e256);
  for (auto bad : {json(""), json(std::string(257, 'x')), json("a\tb"),
                   json(e257), json("a\xc2\x85" "b"), json("a\x7f"),
                   json(7)}) {
    INFO(bad.dump());
    CHECK(error_of(parse_device_specs(
      json{{"id", "d1"}, {"tenant", "t"}, {"name", bad}}, bulk)));
  }
}

TEST_CASE("device changes: name, silence window, or both") {
  auto both = parse_device_patch(json{{"name", "Pump"}, {"silence_s", 60}});
  REQUIRE(!error_of(both));
  auto& b = std::get<troupe::actors::update_device>(both);
  CHECK(b.name == std::string{"Pump"});
  CHECK(b.silence_s == int64_t{60});
  auto reset = parse_device_patch(json{{"silence_s", nullptr}});
  REQUIRE(!error_of(reset));
  auto& r = std::get<troupe::actors::update_device>(reset);
  CHECK(!r.name);
  CHECK(r.silence_s == int64_t{0});
  auto name = parse_device_patch(json{{"name", "x"}});
  REQUIRE(!error_of(name));
  CHECK(!std::get<troupe::actors::update_device>(name).silence_s);
  for (auto bad : {json::object(), json::array(), json("x"),
                   json{{"name", nullptr}}, json{{"name", ""}},
                   json{{"name", "a\nb"}}, json{{"silence_s", 0}},
                   json{{"silence_s", max_silence_s + 1}},
                   json{{"name", "ok"}, {"silence_s", "60"}}}) {
    INFO(bad.dump());
    auto p = parse_device_patch(bad);
    auto e = error_of(p);
    REQUIRE(e);
    CHECK(e->status == 400);
  }
}

TEST_CASE("one command for many devices") {
  auto ok = parse_bulk_command(json{{"device_ids", {"a", "b", "c"}},
                                    {"name", "reboot"},
                                    {"ttl_s", 60}});
  REQUIRE(!error_of(ok));
  auto& b = std::get<bulk_command>(ok);
  CHECK(b.device_ids == std::vector<std::string>{"a", "b", "c"});
  CHECK(b.command.name == "reboot");
  CHECK(b.command.ttl_s == 60);
  json many = json::array();
  for (size_t i = 0; i < max_bulk_devices; ++i)
    many.push_back("d" + std::to_string(i));
  CHECK(!error_of(parse_bulk_command(json{{"device_ids", many},
                                          {"name", "x"}})));
  many.push_back("one-more");
  for (auto bad :
       {json{{"name", "x"}}, json{{"device_ids", json::array()}, {"name", "x"}},
        json{{"device_ids", many}, {"name", "x"}},
        json{{"device_ids", {"a", "a"}}, {"name", "x"}},
        json{{"device_ids", {"a", 7}}, {"name", "x"}},
        json{{"device_ids", {"a", "b/c"}}, {"name", "x"}},
        json{{"device_ids", "a"}, {"name", "x"}},
        json{{"device_ids", {"a"}}},
        json{{"device_ids", {"a"}}, {"name", "x"}, {"ttl_s", 0}},
        json{{"device_ids", {"a", "b", "c"}},
             {"name", "x"},
             {"args", {{"blob", std::string(max_bulk_args / 2, 'x')}}}},
        json::array()}) {
    INFO(bad.dump().substr(0, 200));
    auto p = parse_bulk_command(bad);
    auto e = error_of(p);
    REQUIRE(e);
    CHECK(e->status == 400);
  }
}

TEST_CASE("one command for every device a filter matches") {
  auto ok = parse_bulk_command(
    json{{"filter", {{"q", "pump"}, {"online", true}}}, {"name", "reboot"}});
  REQUIRE(!error_of(ok));
  auto& b = std::get<bulk_command>(ok);
  REQUIRE(b.filter);
  CHECK(b.filter->q == "pump");
  CHECK(b.filter->online == 1);
  CHECK(b.device_ids.empty());
  auto all = parse_bulk_command(json{{"filter", json::object()}, {"name", "x"}});
  REQUIRE(!error_of(all));
  CHECK(std::get<bulk_command>(all).filter->online == -1);
  auto off = parse_bulk_command(
    json{{"filter", {{"online", false}}}, {"name", "x"}});
  REQUIRE(!error_of(off));
  CHECK(std::get<bulk_command>(off).filter->online == 0);
  for (auto bad :
       {json{{"filter", {{"q", "a"}}}, {"device_ids", {"a"}}, {"name", "x"}},
        json{{"filter", nullptr}, {"name", "x"}},
        json{{"filter", {{"q", 1}}}, {"name", "x"}},
        json{{"filter", {{"q", std::string(129, 'a')}}}, {"name", "x"}},
        json{{"filter", {{"q", "a\x01"}}}, {"name", "x"}},
        json{{"filter", {{"online", 1}}}, {"name", "x"}},
        json{{"filter", {{"tenant", "t"}}}, {"name", "x"}},
        json{{"filter", json::object()}},
        json{{"filter", json::object()},
             {"name", "x"},
             {"args", {{"blob", std::string(max_bulk_args + 1, 'x')}}}}}) {
    INFO(bad.dump().substr(0, 200));
    auto p = parse_bulk_command(bad);
    auto e = error_of(p);
    REQUIRE(e);
    CHECK(e->status == 400);
  }
  // The args limit counts the devices a filter found.
  CHECK(!bulk_args_error(1000, max_bulk_args / 1000));
  auto e = bulk_args_error(1000, max_bulk_args / 1000 + 1);
  REQUIRE(e);
  CHECK(e->status == 400);
}
