#include "http/parse.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace troupe::http {

namespace {

api_error bad(std::string msg, std::string code = "invalid_request") {
  return api_error{400, std::move(code), std::move(msg)};
}

bool digits(const std::string& s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size())
    return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i])))
      return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// Days since 1970-01-01 for a civil date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

} // namespace

bool valid_id(const std::string& s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (auto c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
          || c == ':' || c == '-'))
      return false;
  return true;
}

std::optional<int64_t> parse_rfc3339(const std::string& s) {
  int y, mo, d, h, mi, sec;
  if (!digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-'
      || !digits(s, 5, 2, mo) || s[7] != '-' || !digits(s, 8, 2, d)
      || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
      || !digits(s, 11, 2, h) || s[13] != ':' || !digits(s, 14, 2, mi)
      || s[16] != ':' || !digits(s, 17, 2, sec))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return std::nullopt;
  size_t pos = 19;
  int64_t ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int64_t scale = 100;
    size_t start = pos;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      ms += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start)
      return std::nullopt;
  }
  int64_t offset_min = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':'
        || !digits(s, pos + 4, 2, om))
      return std::nullopt;
    offset_min = (oh * 60 + om) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size())
    return std::nullopt;
  auto days = days_from_civil(y, static_cast<unsigned>(mo),
                              static_cast<unsigned>(d));
  auto secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
  return secs * 1000 + ms;
}

std::optional<int64_t> parse_ts(const nlohmann::json& j) {
  if (j.is_number_integer())
    return j.get<int64_t>();
  if (j.is_number_unsigned()) {
    auto u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX))
      return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (j.is_number_float()) {
    auto f = j.get<double>();
    if (!std::isfinite(f) || f != std::floor(f) || std::fabs(f) > 9e15)
      return std::nullopt;
    return static_cast<int64_t>(f);
  }
  if (j.is_string())
    return parse_rfc3339(j.get<std::string>());
  return std::nullopt;
}

std::optional<int64_t> parse_step(const std::string& s) {
  if (s.empty())
    return std::nullopt;
  int64_t unit = 1000;
  auto num = s;
  switch (s.back()) {
    case 's':
      num.pop_back();
      break;
    case 'm':
      unit = 60'000;
      num.pop_back();
      break;
    case 'h':
      unit = 3'600'000;
      num.pop_back();
      break;
    case 'd':
      unit = 86'400'000;
      num.pop_back();
      break;
    default:
      break;
  }
  auto n = parse_int64(num);
  if (!n || *n <= 0 || *n > 366LL * 86400'000 / unit)
    return std::nullopt;
  return *n * unit;
}

std::optional<int64_t> parse_int64(const std::string& text) {
  if (text.empty() || text.size() > 19)
    return std::nullopt;
  size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size())
    return std::nullopt;
  for (size_t k = i; k < text.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(text[k])))
      return std::nullopt;
  return std::strtoll(text.c_str(), nullptr, 10);
}

parsed<nlohmann::json> parse_json(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded())
    return bad("request body is not valid JSON", "malformed_json");
  return j;
}

parsed<nlohmann::json> parse_msgpack(const std::string& body) {
  auto j = nlohmann::json::from_msgpack(body, true, false);
  if (j.is_discarded())
    return bad("request body is not valid MessagePack", "malformed_msgpack");
  return j;
}

parsed<actors::telemetry> parse_telemetry(const nlohmann::json& body,
                                          const telemetry_limits& limits,
                                          int64_t now_ms) {
  if (!body.is_object())
    return bad("telemetry body must be a JSON object");
  actors::telemetry out;
  if (auto it = body.find("batch_id"); it != body.end() && !it->is_null()) {
    if (it->is_number_unsigned()
        && it->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
      out.batch_id = static_cast<int64_t>(it->get<uint64_t>());
    else if (it->is_number_integer() && it->get<int64_t>() >= 0)
      out.batch_id = it->get<int64_t>();
    else
      return bad("batch_id must be a non-negative integer");
  }
  auto check_ts = [&](int64_t ts, const std::string& where)
    -> std::optional<api_error> {
    if (ts < now_ms - limits.max_age_ms)
      return bad(where + " is older than "
                 + std::to_string(limits.max_age_ms / 86'400'000) + " days");
    if (ts > now_ms + limits.max_future_ms)
      return bad(where + " is more than "
                 + std::to_string(limits.max_future_ms / 1000)
                 + " s in the future");
    return std::nullopt;
  };
  auto pts = body.find("points");
  auto vals = body.find("values");
  if (pts != body.end() && vals != body.end())
    return bad("give either points or values, not both");
  if (pts != body.end()) {
    if (!pts->is_array())
      return bad("points must be an array");
    if (pts->empty())
      return bad("points must not be empty");
    if (pts->size() > limits.max_points)
      return bad("too many points: " + std::to_string(pts->size())
                   + " (at most " + std::to_string(limits.max_points) + ")",
                 "too_many_points");
    out.points.reserve(pts->size());
    for (size_t i = 0; i < pts->size(); ++i) {
      auto& p = (*pts)[i];
      auto where = "points[" + std::to_string(i) + "]";
      if (!p.is_object())
        return bad(where + " is not an object");
      actors::point pt;
      auto m = p.find("metric");
      if (m == p.end() || !m->is_string() || !valid_id(m->get<std::string>()))
        return bad(where + ".metric is missing or not a valid metric name");
      pt.metric = m->get<std::string>();
      auto v = p.find("value");
      if (v == p.end() || !v->is_number() || !std::isfinite(v->get<double>()))
        return bad(where + ".value is not a finite number");
      pt.value = v->get<double>();
      auto t = p.find("ts");
      if (t == p.end() || t->is_null()) {
        pt.ts_ms = now_ms;
      } else {
        auto ts = parse_ts(*t);
        if (!ts)
          return bad(where + ".ts is not a timestamp (integer ms or "
                             "RFC 3339)");
        if (auto e = check_ts(*ts, where + ".ts"))
          return *e;
        pt.ts_ms = *ts;
      }
      out.points.push_back(std::move(pt));
    }
    return out;
  }
  if (vals != body.end()) {
    if (!vals->is_object())
      return bad("values must be an object of metric: number");
    if (vals->empty())
      return bad("values must not be empty");
    if (vals->size() > limits.max_points)
      return bad("too many points: " + std::to_string(vals->size()),
                 "too_many_points");
    int64_t ts = now_ms;
    if (auto t = body.find("ts"); t != body.end() && !t->is_null()) {
      auto parsed_ts = parse_ts(*t);
      if (!parsed_ts)
        return bad("ts is not a timestamp (integer ms or RFC 3339)");
      if (auto e = check_ts(*parsed_ts, "ts"))
        return *e;
      ts = *parsed_ts;
    }
    for (auto& [name, v] : vals->items()) {
      if (!valid_id(name))
        return bad("values." + name + " is not a valid metric name");
      if (!v.is_number() || !std::isfinite(v.get<double>()))
        return bad("values." + name + " is not a finite number");
      out.points.push_back({name, ts, v.get<double>()});
    }
    return out;
  }
  return bad("telemetry needs points or values");
}

std::string encode_cursor(const std::string& position) {
  std::string out;
  int val = 0, bits = -6;
  for (unsigned char c : position) {
    val = (val << 8) + c;
    bits += 8;
    while (bits >= 0) {
      out.push_back(b64[(val >> bits) & 0x3F]);
      bits -= 6;
    }
  }
  if (bits > -6)
    out.push_back(b64[((val << 8) >> (bits + 8)) & 0x3F]);
  return out;
}

std::optional<std::string> decode_cursor(const std::string& cursor) {
  std::string out;
  int val = 0, bits = -8;
  for (auto c : cursor) {
    auto p = std::strchr(b64, c);
    if (!p || c == '\0')
      return std::nullopt;
    val = (val << 6) + static_cast<int>(p - b64);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  if (out.size() < 2 || out[1] != ':')
    return std::nullopt;
  return out;
}

parsed<int64_t> parse_limit(const std::string& text, int64_t def,
                            int64_t max) {
  if (text.empty())
    return def;
  auto n = parse_int64(text);
  if (!n || *n < 1)
    return bad("limit must be a positive integer");
  return std::min(*n, max);
}

} // namespace troupe::http
