#include "http/parse.hpp"

#include "actors/analysis.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <memory>
#include <string_view>

#include <msgpack.hpp>
#include <simdjson.h>

namespace troupe::http {

namespace {

api_error bad(std::string msg, std::string code = "invalid_request") {
  return api_error{400, std::move(code), std::move(msg)};
}

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
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

// valid_id and parse_rfc3339 over views, for the simdjson decoder, whose
// strings live in its parser's buffer.

bool is_id(std::string_view s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (auto c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
          || c == ':' || c == '-'))
      return false;
  return true;
}

std::optional<int64_t> rfc3339_ms(std::string_view s) {
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

} // namespace

bool valid_id(const std::string& s) {
  return is_id(s);
}

std::optional<int64_t> parse_rfc3339(const std::string& s) {
  return rfc3339_ms(s);
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

namespace {

/// nlohmann's SAX interface building a DOM with an explicit stack (no
/// recursion), refusing documents nested too deep or holding NUL
/// characters, and remembering where it is so errors name the field.
class bounded_dom {
public:
  using json = nlohmann::json;

  bounded_dom(json& root, size_t max_depth)
    : root_(root), max_depth_(max_depth) {
  }

  std::optional<api_error> error;

  bool null() {
    return add(nullptr);
  }
  bool boolean(bool v) {
    return add(v);
  }
  bool number_integer(json::number_integer_t v) {
    return add(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return add(v);
  }
  bool number_float(json::number_float_t v, const std::string&) {
    return add(v);
  }
  bool string(std::string& v) {
    if (v.find('\0') != std::string::npos)
      return fail(where() + " contains a NUL character");
    return add(std::move(v));
  }
  bool binary(json::binary_t&) {
    return fail("binary values are not accepted");
  }
  bool start_object(size_t) {
    return open(json::value_t::object);
  }
  bool key(std::string& k) {
    if (k.find('\0') != std::string::npos)
      return fail((frames_.size() > 1 ? where() + "." : std::string{})
                  + "a key contains a NUL character");
    frames_.back().key = std::move(k);
    return true;
  }
  bool end_object() {
    return close();
  }
  bool start_array(size_t) {
    return open(json::value_t::array);
  }
  bool end_array() {
    return close();
  }
  bool parse_error(size_t pos, const std::string&,
                   const nlohmann::detail::exception&) {
    if (!error)
      error = api_error{400, "malformed_json",
                        "request body is not valid JSON (at byte "
                          + std::to_string(pos) + ")"};
    return false;
  }

private:
  struct frame {
    json* value;
    std::string key; // the member being read (objects)
  };

  /// The path of the value being read, down to the first object member
  /// ("args", "[3].name"): enough to name the field, short for deep ones.
  /// In an array, the element being read is the last one placed, or for
  /// the innermost frame, the next one.
  std::string where() const {
    std::string out;
    for (size_t i = 0; i < frames_.size(); ++i) {
      auto& f = frames_[i];
      if (f.value->is_array()) {
        auto n = f.value->size();
        auto inner = i + 1 == frames_.size();
        out += "[" + std::to_string(inner ? n : n - 1) + "]";
      } else {
        out += (out.empty() ? "" : ".") + f.key;
        break;
      }
    }
    return out.empty() ? "the body" : out;
  }

  bool fail(std::string msg) {
    error = api_error{400, "invalid_request", std::move(msg)};
    return false;
  }

  json* place(json v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    auto& top = frames_.back();
    if (top.value->is_array()) {
      top.value->push_back(std::move(v));
      return &top.value->back();
    }
    auto& slot = (*top.value)[top.key];
    slot = std::move(v);
    return &slot;
  }

  template <class T>
  bool add(T&& v) {
    place(json(std::forward<T>(v)));
    return true;
  }

  bool open(json::value_t t) {
    // The root is level 0; a member's value opens level 1, so level k
    // opens with k frames below it.
    if (frames_.size() > max_depth_)
      return fail(where() + " nests deeper than "
                  + std::to_string(max_depth_) + " levels");
    frames_.push_back({place(json(t)), {}});
    return true;
  }

  bool close() {
    frames_.pop_back();
    return true;
  }

  json& root_;
  size_t max_depth_;
  std::vector<frame> frames_;
};

// -- telemetry over two document kinds ---------------------------------------

/// A read-only view of a nlohmann::json node for the telemetry walk.
struct json_node {
  const nlohmann::json* v;

  bool is_null() const { return v->is_null(); }
  bool is_object() const { return v->is_object(); }
  bool is_array() const { return v->is_array(); }
  bool is_string() const { return v->is_string(); }
  bool is_number() const { return v->is_number(); }
  size_t size() const { return v->size(); }
  std::optional<json_node> find(const char* key) const {
    auto it = v->find(key);
    if (it == v->end())
      return std::nullopt;
    return json_node{&*it};
  }
  json_node at(size_t i) const { return {&(*v)[i]}; }
  std::string str() const { return v->get<std::string>(); }
  double number() const { return v->get<double>(); }
  std::optional<int64_t> non_negative_int() const {
    if (v->is_number_unsigned()
        && v->get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(v->get<uint64_t>());
    if (v->is_number_integer() && v->get<int64_t>() >= 0)
      return v->get<int64_t>();
    return std::nullopt;
  }
  std::optional<int64_t> ts() const { return parse_ts(*v); }
  /// Calls f(key, node) for each member; stops when f returns false.
  template <class F>
  bool members(F f) const {
    for (auto& [k, x] : v->items())
      if (!f(k, json_node{&x}))
        return false;
    return true;
  }
};

/// The same view of a msgpack-c object.
struct msgpack_node {
  const msgpack::object* v;

  bool is_null() const { return v->type == msgpack::type::NIL; }
  bool is_object() const { return v->type == msgpack::type::MAP; }
  bool is_array() const { return v->type == msgpack::type::ARRAY; }
  bool is_string() const { return v->type == msgpack::type::STR; }
  bool is_number() const {
    return v->type == msgpack::type::POSITIVE_INTEGER
           || v->type == msgpack::type::NEGATIVE_INTEGER
           || v->type == msgpack::type::FLOAT32
           || v->type == msgpack::type::FLOAT64;
  }
  size_t size() const {
    return is_object() ? v->via.map.size : is_array() ? v->via.array.size : 0;
  }
  std::optional<msgpack_node> find(const char* key) const {
    auto n = std::strlen(key);
    for (uint32_t i = 0; i < v->via.map.size; ++i) {
      auto& kv = v->via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR && kv.key.via.str.size == n
          && std::memcmp(kv.key.via.str.ptr, key, n) == 0)
        return msgpack_node{&kv.val};
    }
    return std::nullopt;
  }
  msgpack_node at(size_t i) const { return {&v->via.array.ptr[i]}; }
  std::string str() const { return {v->via.str.ptr, v->via.str.size}; }
  double number() const {
    switch (v->type) {
      case msgpack::type::POSITIVE_INTEGER:
        return static_cast<double>(v->via.u64);
      case msgpack::type::NEGATIVE_INTEGER:
        return static_cast<double>(v->via.i64);
      default:
        return v->via.f64;
    }
  }
  std::optional<int64_t> non_negative_int() const {
    if (v->type == msgpack::type::POSITIVE_INTEGER
        && v->via.u64 <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(v->via.u64);
    return std::nullopt;
  }
  std::optional<int64_t> ts() const {
    switch (v->type) {
      case msgpack::type::POSITIVE_INTEGER:
        if (v->via.u64 > static_cast<uint64_t>(INT64_MAX))
          return std::nullopt;
        return static_cast<int64_t>(v->via.u64);
      case msgpack::type::NEGATIVE_INTEGER:
        return v->via.i64;
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64: {
        auto f = v->via.f64;
        if (!std::isfinite(f) || f != std::floor(f) || std::fabs(f) > 9e15)
          return std::nullopt;
        return static_cast<int64_t>(f);
      }
      case msgpack::type::STR:
        return parse_rfc3339(str());
      default:
        return std::nullopt;
    }
  }
  template <class F>
  bool members(F f) const {
    for (uint32_t i = 0; i < v->via.map.size; ++i) {
      auto& kv = v->via.map.ptr[i];
      // Metric names are strings; anything else cannot be one.
      std::string k = kv.key.type == msgpack::type::STR
                        ? std::string{kv.key.via.str.ptr, kv.key.via.str.size}
                        : std::string{};
      if (!f(k, msgpack_node{&kv.val}))
        return false;
    }
    return true;
  }
};

/// The error for a timestamp outside the accepted window, if it is.
std::optional<api_error> check_ts_window(int64_t ts, const std::string& where,
                                         const telemetry_limits& limits,
                                         int64_t now_ms) {
  if (ts < now_ms - limits.max_age_ms)
    return bad(where + " is older than "
               + std::to_string(limits.max_age_ms / 86'400'000) + " days");
  if (ts > now_ms + limits.max_future_ms)
    return bad(where + " is more than "
               + std::to_string(limits.max_future_ms / 1000)
               + " s in the future");
  return std::nullopt;
}

/// Validates a telemetry document (either form) into the message.
template <class Node>
parsed<actors::telemetry> telemetry_from(const Node& body,
                                         const telemetry_limits& limits,
                                         int64_t now_ms) {
  if (!body.is_object())
    return bad("telemetry body must be an object");
  actors::telemetry out;
  if (auto it = body.find("batch_id"); it && !it->is_null()) {
    auto id = it->non_negative_int();
    if (!id)
      return bad("batch_id must be a non-negative integer");
    out.batch_id = *id;
  }
  auto check_ts = [&](int64_t ts, const std::string& where) {
    return check_ts_window(ts, where, limits, now_ms);
  };
  auto pts = body.find("points");
  auto vals = body.find("values");
  if (pts && vals)
    return bad("give either points or values, not both");
  if (pts) {
    if (!pts->is_array())
      return bad("points must be an array");
    if (pts->size() == 0)
      return bad("points must not be empty");
    if (pts->size() > limits.max_points)
      return bad("too many points: " + std::to_string(pts->size())
                   + " (at most " + std::to_string(limits.max_points) + ")",
                 "too_many_points");
    out.points.reserve(pts->size());
    for (size_t i = 0; i < pts->size(); ++i) {
      auto p = pts->at(i);
      auto where = "points[" + std::to_string(i) + "]";
      if (!p.is_object())
        return bad(where + " is not an object");
      actors::point pt;
      auto m = p.find("metric");
      if (!m || !m->is_string() || !valid_id(m->str()))
        return bad(where + ".metric is missing or not a valid metric name");
      pt.metric = m->str();
      auto v = p.find("value");
      if (!v || !v->is_number() || !std::isfinite(v->number()))
        return bad(where + ".value is not a finite number");
      pt.value = v->number();
      auto t = p.find("ts");
      if (!t || t->is_null()) {
        pt.ts_ms = now_ms;
      } else {
        auto ts = t->ts();
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
  if (vals) {
    if (!vals->is_object())
      return bad("values must be an object of metric: number");
    if (vals->size() == 0)
      return bad("values must not be empty");
    if (vals->size() > limits.max_points)
      return bad("too many points: " + std::to_string(vals->size()),
                 "too_many_points");
    int64_t ts = now_ms;
    if (auto t = body.find("ts"); t && !t->is_null()) {
      auto parsed_ts = t->ts();
      if (!parsed_ts)
        return bad("ts is not a timestamp (integer ms or RFC 3339)");
      if (auto e = check_ts(*parsed_ts, "ts"))
        return *e;
      ts = *parsed_ts;
    }
    std::optional<api_error> err;
    out.points.reserve(vals->size());
    vals->members([&](const std::string& name, const Node& v) {
      if (!valid_id(name))
        err = bad("values." + (printable(name) ? name : std::string{"?"})
                  + " is not a valid metric name");
      else if (!v.is_number() || !std::isfinite(v.number()))
        err = bad("values." + name + " is not a finite number");
      else
        out.points.push_back({name, ts, v.number()});
      return !err;
    });
    if (err)
      return *err;
    return out;
  }
  return bad("telemetry needs points or values");
}

} // namespace

parsed<nlohmann::json> parse_json(const std::string& body, size_t max_depth) {
  nlohmann::json root;
  bounded_dom dom{root, max_depth};
  auto ok = nlohmann::json::sax_parse(body, &dom,
                                      nlohmann::json::input_format_t::json,
                                      true);
  if (dom.error)
    return *dom.error;
  if (!ok)
    return bad("request body is not valid JSON", "malformed_json");
  return root;
}

std::optional<api_error> check_content_encoding(const std::string& header) {
  auto v = header;
  for (auto& c : v)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!v.empty() && v.back() == ' ')
    v.pop_back();
  auto b = v.find_first_not_of(' ');
  v = b == std::string::npos ? std::string{} : v.substr(b);
  if (v.empty() || v == "identity" || v == "gzip")
    return std::nullopt;
  return api_error{415, "unsupported_media_type",
                   "Content-Encoding "
                     + (printable(header) ? header : std::string{"?"})
                     + " is not supported (gzip or identity)"};
}

parsed<actors::telemetry> parse_telemetry(const nlohmann::json& body,
                                          const telemetry_limits& limits,
                                          int64_t now_ms) {
  return telemetry_from(json_node{&body}, limits, now_ms);
}

parsed<actors::telemetry> parse_telemetry_msgpack(
  const std::string& body, const telemetry_limits& limits, int64_t now_ms) {
  // A point is a small map; values and points hold at most max_points.
  auto n = static_cast<std::size_t>(std::max<size_t>(limits.max_points, 16));
  msgpack::unpack_limit lim{n, n, 64 * 1024, 64 * 1024, 64 * 1024,
                            limits.max_depth + 1};
  try {
    std::size_t off = 0;
    auto oh = msgpack::unpack(body.data(), body.size(), off, nullptr, nullptr,
                              lim);
    if (off != body.size())
      return bad("request body holds bytes after the MessagePack value",
                 "malformed_msgpack");
    return telemetry_from(msgpack_node{&oh.get()}, limits, now_ms);
  } catch (const msgpack::depth_size_overflow&) {
    return bad("the MessagePack body nests deeper than "
               + std::to_string(limits.max_depth) + " levels");
  } catch (const msgpack::size_overflow& e) {
    return bad(std::string{"the MessagePack body exceeds a size limit: "}
               + e.what());
  } catch (const std::exception&) {
    return bad("request body is not valid MessagePack", "malformed_msgpack");
  }
}

bool printable(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f)
      return false;
  return true;
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
  if (out.size() < 2 || out[1] != ':' || !printable(out))
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

namespace troupe::http {

// -- telemetry straight from JSON: simdjson On-Demand ------------------------

namespace {

namespace od = simdjson::ondemand;

/// What the decoder keeps of a member it reads: a scalar, or only that it
/// was an array or an object. Strings view the parser's string buffer,
/// which holds them until the next document.
struct scalar {
  enum kind_t : uint8_t {
    absent,
    null,
    boolean,
    signed_int,
    unsigned_int,
    real,
    string,
    container,
  };

  kind_t kind = absent;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  std::string_view s;

  /// Present and not null (null means "not given" for batch_id and ts).
  bool given() const {
    return kind != absent && kind != null;
  }

  bool is_number() const {
    return kind == signed_int || kind == unsigned_int || kind == real;
  }

  /// As nlohmann's get<double>(): integers are converted.
  double number() const {
    return kind == signed_int     ? static_cast<double>(i)
           : kind == unsigned_int ? static_cast<double>(u)
                                  : d;
  }

  /// As json_node::non_negative_int.
  std::optional<int64_t> non_negative_int() const {
    if (kind == signed_int && i >= 0)
      return i;
    if (kind == unsigned_int && u <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(u);
    return std::nullopt;
  }

  /// As parse_ts, quirk included: nlohmann's is_number_integer() holds for
  /// unsigned numbers too, so one above INT64_MAX wraps around to a
  /// negative time (which then fails the age check).
  std::optional<int64_t> ts() const {
    switch (kind) {
      case signed_int:
        return i;
      case unsigned_int:
        return static_cast<int64_t>(u);
      case real:
        if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15)
          return std::nullopt;
        return static_cast<int64_t>(d);
      case string:
        return rfc3339_ms(s);
      default:
        return std::nullopt;
    }
  }
};

/// Decodes one JSON telemetry body in a single forward pass over simdjson's
/// On-Demand iterator, with the observable behaviour of parse_json followed
/// by parse_telemetry, byte for byte:
///
/// - Every value is read and so validated, unknown members included (the
///   On-Demand API validates only what is read; its skip() counts brackets).
///   Unknown containers are walked with an explicit stack, never recursion.
/// - Containers nest at most `max_depth` levels below a top-level member
///   and no string or key holds NUL; these errors are found in document
///   order, before any telemetry error, as parse_json finds them.
/// - Members come in any order. Telemetry errors are decided after the
///   whole document, in parse_telemetry's order (batch_id, points or
///   values, then the first bad point).
/// - A duplicate key counts with its last value, as in the DOM (a repeated
///   "points" replaces the batch, a repeated metric in "values" its value);
///   short-form points come sorted by metric name, as the DOM's std::map
///   gave them.
///
/// When simdjson refuses the input (not JSON, trailing content, a number
/// out of range, a UTF-8 BOM, ...) or the body is not an object, `run`
/// returns nullopt: the request is a 400 anyway, and the reference path
/// names the error exactly as before ("... (at byte N)" counts nlohmann's
/// way). One decoder per body; not thread-safe.
class telemetry_decoder {
public:
  telemetry_decoder(const telemetry_limits& limits, int64_t now_ms)
    : limits_(limits), now_ms_(now_ms) {
  }

  /// The message or its error; nullopt to hand the body to the reference.
  std::optional<parsed<actors::telemetry>> run(od::document& doc) {
    od::object root;
    if (doc.get_object().get(root))
      return std::nullopt;
    for (auto member : root) {
      od::field f;
      std::string_view key;
      if (std::move(member).get(f))
        return std::nullopt;
      if (!read_key(f, true, key))
        break;
      top_key_ = key;
      scalar ignored;
      auto ok = key == "points"     ? read_points(f.value())
                : key == "values"   ? read_values(f.value())
                : key == "batch_id" ? read(f.value(), 1, batch_id_)
                : key == "ts"       ? read(f.value(), 1, ts_)
                                    : read(f.value(), 1, ignored);
      if (!ok)
        break;
    }
    if (bail_)
      return std::nullopt;
    if (refused_)
      return *refused_;
    // The iterator must stand at the end: neither trailing content nor an
    // error left behind (an iterator in error stands elsewhere).
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS)
      return std::nullopt;
    return finish();
  }

private:
  // -- stopping ---------------------------------------------------------------

  /// simdjson refused the input: the reference path names the error.
  bool bail() {
    bail_ = true;
    return false;
  }

  /// A bound of parse_json, named as parse_json names it.
  bool refuse(std::string msg) {
    refused_ = bad(std::move(msg));
    return false;
  }

  /// parse_json's name for anything inside the current top-level member.
  std::string where() const {
    return top_key_.empty() ? std::string{"the body"} : std::string{top_key_};
  }

  bool within_depth(size_t level) {
    if (level <= limits_.max_depth)
      return true;
    return refuse(where() + " nests deeper than "
                  + std::to_string(limits_.max_depth) + " levels");
  }

  // -- reading ----------------------------------------------------------------

  bool read_key(od::field& f, bool top_level, std::string_view& key) {
    if (f.unescaped_key().get(key))
      return bail();
    if (key.find('\0') != std::string_view::npos)
      return refuse((top_level ? std::string{} : where() + ".")
                    + "a key contains a NUL character");
    return true;
  }

  /// Reads a value at `level` (1: a top-level member's value) into `out`,
  /// walking containers through to their end.
  bool read(od::value v, size_t level, scalar& out) {
    out = scalar{};
    od::json_type t;
    if (v.type().get(t))
      return bail();
    if (t == od::json_type::array || t == od::json_type::object) {
      out.kind = scalar::container;
      return skip(v, t, level);
    }
    return read_scalar(v, t, out);
  }

  bool read_scalar(od::value& v, od::json_type t, scalar& out) {
    switch (t) {
      case od::json_type::string:
        if (v.get_string().get(out.s))
          return bail();
        if (out.s.find('\0') != std::string_view::npos)
          return refuse(where() + " contains a NUL character");
        out.kind = scalar::string;
        return true;
      case od::json_type::number: {
        // Not get_number(): in 3.0.1 it reads a float of more than 19
        // significant digits as 0 (its slow path writes to a copy).
        od::number_type type;
        if (v.get_number_type().get(type))
          return bail();
        if (type == od::number_type::signed_integer
            && !v.get_int64().get(out.i)) {
          out.kind = scalar::signed_int;
          return true;
        }
        if (type == od::number_type::unsigned_integer
            && !v.get_uint64().get(out.u)) {
          out.kind = scalar::unsigned_int;
          return true;
        }
        // A float, or an integer beyond 64 bits (nlohmann keeps it as a
        // double); get_double() validates what the above refused.
        if (v.get_double().get(out.d))
          return bail();
        out.kind = scalar::real;
        return true;
      }
      case od::json_type::boolean: {
        bool b;
        if (v.get_bool().get(b))
          return bail();
        out.kind = scalar::boolean;
        return true;
      }
      case od::json_type::null: {
        bool is_null = false;
        if (v.is_null().get(is_null) || !is_null)
          return bail();
        out.kind = scalar::null;
        return true;
      }
      default:
        return bail();
    }
  }

  /// Walks the container `v` (of type `t`, at `level`) to its end, reading
  /// every key and scalar, with an explicit stack of iterators.
  bool skip(od::value v, od::json_type t, size_t level) {
    stack_.clear();
    for (;;) {
      if (t == od::json_type::array || t == od::json_type::object) {
        if (!within_depth(level + stack_.size()))
          return false;
        frame f;
        f.is_object = t == od::json_type::object;
        if (f.is_object) {
          od::object obj;
          if (v.get_object().get(obj) || obj.begin().get(f.fields)
              || obj.end().get(f.fields_end))
            return bail();
        } else {
          od::array arr;
          if (v.get_array().get(arr) || arr.begin().get(f.elements)
              || arr.end().get(f.elements_end))
            return bail();
        }
        stack_.push_back(f);
      } else {
        scalar ignored;
        if (!read_scalar(v, t, ignored))
          return false;
      }
      // Find the next value: the innermost open container's next child.
      for (;;) {
        if (stack_.empty())
          return true;
        auto& top = stack_.back();
        if (top.is_object) {
          if (top.visited)
            ++top.fields;
          if (!(top.fields != top.fields_end)) {
            stack_.pop_back();
            continue;
          }
          top.visited = true;
          od::field fld;
          std::string_view key;
          if ((*top.fields).get(fld))
            return bail();
          if (!read_key(fld, false, key))
            return false;
          v = fld.value();
        } else {
          if (top.visited)
            ++top.elements;
          if (!(top.elements != top.elements_end)) {
            stack_.pop_back();
            continue;
          }
          top.visited = true;
          if ((*top.elements).get(v))
            return bail();
        }
        break;
      }
      if (v.type().get(t))
        return bail();
    }
  }

  bool read_points(od::value v) {
    points_given_ = true;
    points_is_array_ = false;
    points_count_ = 0;
    point_error_.reset();
    points_.clear();
    od::json_type t;
    if (v.type().get(t))
      return bail();
    if (t != od::json_type::array) {
      scalar ignored;
      return read(v, 1, ignored);
    }
    if (!within_depth(1))
      return false;
    points_is_array_ = true;
    od::array arr;
    if (v.get_array().get(arr))
      return bail();
    for (auto element : arr) {
      od::value p;
      if (std::move(element).get(p))
        return bail();
      if (!read_point(p, points_count_))
        return false;
      ++points_count_;
    }
    return true;
  }

  /// Reads points[i]; a bad point is remembered (the first one counts),
  /// the walk goes on.
  bool read_point(od::value p, size_t i) {
    od::json_type t;
    if (p.type().get(t))
      return bail();
    if (t != od::json_type::object) {
      scalar ignored;
      if (!read(p, 2, ignored))
        return false;
      if (!point_error_)
        point_error_ = bad(point_name(i) + " is not an object");
      return true;
    }
    if (!within_depth(2))
      return false;
    od::object obj;
    if (p.get_object().get(obj))
      return bail();
    scalar metric;
    scalar value;
    scalar ts;
    for (auto member : obj) {
      od::field f;
      std::string_view key;
      if (std::move(member).get(f))
        return bail();
      if (!read_key(f, false, key))
        return false;
      scalar ignored;
      auto& slot = key == "metric"  ? metric
                   : key == "value" ? value
                   : key == "ts"    ? ts
                                    : ignored;
      if (!read(f.value(), 3, slot))
        return false;
    }
    // After the first bad point, or past the limit, only validation is
    // left to do: the batch fails either way.
    if (point_error_ || i >= limits_.max_points)
      return true;
    if (metric.kind != scalar::string || !is_id(metric.s)) {
      point_error_ = bad(point_name(i)
                         + ".metric is missing or not a valid metric name");
      return true;
    }
    if (!value.is_number() || !std::isfinite(value.number())) {
      point_error_ = bad(point_name(i) + ".value is not a finite number");
      return true;
    }
    auto ts_ms = now_ms_;
    if (ts.given()) {
      auto parsed_ts = ts.ts();
      if (!parsed_ts) {
        point_error_ = bad(point_name(i) + ".ts is not a timestamp (integer "
                                           "ms or RFC 3339)");
        return true;
      }
      if (!in_window(*parsed_ts)) {
        point_error_ = check_ts_window(*parsed_ts, point_name(i) + ".ts",
                                       limits_, now_ms_);
        return true;
      }
      ts_ms = *parsed_ts;
    }
    points_.push_back({std::string{metric.s}, ts_ms, value.number()});
    return true;
  }

  bool read_values(od::value v) {
    values_given_ = true;
    values_is_object_ = false;
    values_.clear();
    od::json_type t;
    if (v.type().get(t))
      return bail();
    if (t != od::json_type::object) {
      scalar ignored;
      return read(v, 1, ignored);
    }
    if (!within_depth(1))
      return false;
    values_is_object_ = true;
    od::object obj;
    if (v.get_object().get(obj))
      return bail();
    for (auto member : obj) {
      od::field f;
      std::string_view key;
      if (std::move(member).get(f))
        return bail();
      if (!read_key(f, false, key))
        return false;
      values_.push_back({key, {}});
      if (!read(f.value(), 2, values_.back().value))
        return false;
    }
    return true;
  }

  // -- deciding ---------------------------------------------------------------

  static std::string point_name(size_t i) {
    return "points[" + std::to_string(i) + "]";
  }

  bool in_window(int64_t ts) const {
    return ts >= now_ms_ - limits_.max_age_ms
           && ts <= now_ms_ + limits_.max_future_ms;
  }

  /// parse_telemetry's checks, in its order, on what the walk kept.
  parsed<actors::telemetry> finish() {
    actors::telemetry out;
    if (batch_id_.given()) {
      auto id = batch_id_.non_negative_int();
      if (!id)
        return bad("batch_id must be a non-negative integer");
      out.batch_id = *id;
    }
    if (points_given_ && values_given_)
      return bad("give either points or values, not both");
    if (points_given_) {
      if (!points_is_array_)
        return bad("points must be an array");
      if (points_count_ == 0)
        return bad("points must not be empty");
      if (points_count_ > limits_.max_points)
        return bad("too many points: " + std::to_string(points_count_)
                     + " (at most " + std::to_string(limits_.max_points)
                     + ")",
                   "too_many_points");
      if (point_error_)
        return *point_error_;
      out.points = std::move(points_);
      return out;
    }
    if (values_given_) {
      if (!values_is_object_)
        return bad("values must be an object of metric: number");
      // The DOM's std::map: sorted by name, the last duplicate wins.
      std::stable_sort(values_.begin(), values_.end(),
                       [](const entry& x, const entry& y) {
                         return x.name < y.name;
                       });
      size_t n = 0;
      for (size_t k = 0; k < values_.size(); ++k)
        if (k + 1 == values_.size() || values_[k + 1].name != values_[k].name)
          values_[n++] = values_[k];
      values_.resize(n);
      if (n == 0)
        return bad("values must not be empty");
      if (n > limits_.max_points)
        return bad("too many points: " + std::to_string(n),
                   "too_many_points");
      auto ts_ms = now_ms_;
      if (ts_.given()) {
        auto parsed_ts = ts_.ts();
        if (!parsed_ts)
          return bad("ts is not a timestamp (integer ms or RFC 3339)");
        if (auto e = check_ts_window(*parsed_ts, "ts", limits_, now_ms_))
          return *e;
        ts_ms = *parsed_ts;
      }
      out.points.reserve(n);
      for (auto& e : values_) {
        std::string name{e.name};
        if (!is_id(name))
          return bad("values." + (printable(name) ? name : std::string{"?"})
                     + " is not a valid metric name");
        if (!e.value.is_number() || !std::isfinite(e.value.number()))
          return bad("values." + name + " is not a finite number");
        out.points.push_back({std::move(name), ts_ms, e.value.number()});
      }
      return out;
    }
    return bad("telemetry needs points or values");
  }

  // -- state ------------------------------------------------------------------

  /// An open container of an unknown member, for skip().
  struct frame {
    bool is_object = false;
    bool visited = false; // a child was handed out: advance before the next
    od::array_iterator elements;
    od::array_iterator elements_end;
    od::object_iterator fields;
    od::object_iterator fields_end;
  };

  /// A member of "values", in document order.
  struct entry {
    std::string_view name;
    scalar value;
  };

  const telemetry_limits& limits_;
  int64_t now_ms_;
  bool bail_ = false;
  std::optional<api_error> refused_;
  std::string_view top_key_;
  scalar batch_id_;
  scalar ts_;
  bool points_given_ = false;
  bool points_is_array_ = false;
  size_t points_count_ = 0;
  std::optional<api_error> point_error_;
  std::vector<actors::point> points_;
  bool values_given_ = false;
  bool values_is_object_ = false;
  std::vector<entry> values_;
  std::vector<frame> stack_;
};

/// The bodies this thread's parser and buffer are kept for; larger ones
/// (http.max_body_bytes allows 1 MiB) get their own, so that no I/O thread
/// holds megabytes after a large request.
constexpr size_t kept_capacity = 64 * 1024;

/// A device's display name: a string of 1..256 characters (code points;
/// the JSON parser has checked the UTF-8), no control characters (C0, DEL
/// or C1).
parsed<std::string> device_name(const nlohmann::json& name) {
  if (!name.is_string())
    return bad("name must be a string");
  auto& s = name.get_ref<const std::string&>();
  size_t chars = 0;
  bool control = false;
  for (size_t i = 0; i < s.size(); ++i) {
    auto b = static_cast<unsigned char>(s[i]);
    chars += (b & 0xC0) != 0x80;
    control = control || b < 0x20 || b == 0x7F
              || (b == 0xC2 && i + 1 < s.size()
                  && static_cast<unsigned char>(s[i + 1]) < 0xA0);
  }
  if (chars == 0 || chars > 256)
    return bad("name must be 1 to 256 characters");
  if (control)
    return bad("name must not hold control characters");
  return s;
}

/// `silence_s` of a device object: 1..max_silence_s, or 0 when absent or
/// null (the node's analysis.silence_s).
parsed<int64_t> silence_window(const nlohmann::json& device) {
  auto it = device.find("silence_s");
  if (it == device.end() || it->is_null())
    return int64_t{0};
  if (!it->is_number_integer() || it->get<int64_t>() < 1
      || it->get<int64_t>() > max_silence_s)
    return bad("silence_s must be an integer from 1 to "
               + std::to_string(max_silence_s) + ", or null for the "
               + "node's default");
  return it->get<int64_t>();
}

} // namespace

parsed<actors::telemetry> parse_telemetry_json(const std::string& body,
                                               const telemetry_limits& limits,
                                               int64_t now_ms) {
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: decode a
  // padded copy. A parser serves one document at a time, hence one per
  // thread (the edge calls this from each of its I/O threads).
  thread_local od::parser shared_parser;
  thread_local std::string shared_buf;
  auto small = body.size() <= kept_capacity;
  std::unique_ptr<od::parser> own_parser;
  std::string own_buf;
  if (!small)
    own_parser = std::make_unique<od::parser>();
  auto& parser = small ? shared_parser : *own_parser;
  auto& buf = small ? shared_buf : own_buf;
  buf.assign(body);
  buf.append(simdjson::SIMDJSON_PADDING, '\0');
  od::document doc;
  auto ok = (!small || parser.capacity() >= kept_capacity
             || !parser.allocate(kept_capacity))
            && !parser.iterate(buf.data(), body.size(), buf.size()).get(doc);
  if (ok) {
    telemetry_decoder decoder{limits, now_ms};
    if (auto result = decoder.run(doc))
      return std::move(*result);
  }
  // The reference path: the error named as parse_json names it.
  auto dom = parse_json(body, limits.max_depth);
  if (auto e = std::get_if<api_error>(&dom))
    return *e;
  return parse_telemetry(std::get<nlohmann::json>(dom), limits, now_ms);
}

parsed<actors::post_command> parse_post_command(const nlohmann::json& body) {
  if (!body.is_object())
    return bad("body must be a JSON object");
  actors::post_command pc;
  auto name = body.find("name");
  if (name == body.end() || !name->is_string()
      || !valid_id(name->get<std::string>()))
    return bad("name is required ([A-Za-z0-9_.:-]{1,64})");
  pc.name = name->get<std::string>();
  if (auto a = body.find("args"); a != body.end() && !a->is_null()) {
    if (!a->is_object())
      return bad("args must be an object");
    pc.args_json = a->dump();
  }
  if (auto t = body.find("ttl_s"); t != body.end() && !t->is_null()) {
    if (!t->is_number_integer() || t->get<int64_t>() < 1
        || t->get<int64_t>() > 30LL * 86400)
      return bad("ttl_s must be an integer from 1 to 2592000");
    pc.ttl_s = t->get<int64_t>();
  }
  return pc;
}

std::optional<api_error> bulk_args_error(size_t args_bytes, size_t devices) {
  // Every device keeps its own copy of the args until the command is
  // finished, and the answer carries each: bounded in all.
  if (args_bytes * devices <= max_bulk_args)
    return std::nullopt;
  return api_error{400, "invalid_request",
                   "args of " + std::to_string(args_bytes) + " bytes for "
                     + std::to_string(devices) + " devices: at most "
                     + std::to_string(max_bulk_args)
                     + " bytes of args in all"};
}

bool valid_search(const std::string& q) {
  return q.size() <= 128 && printable(q);
}

namespace {

parsed<device_filter> parse_device_filter(const nlohmann::json& f) {
  if (!f.is_object())
    return bad("filter must be an object: {\"q\"?, \"online\"?}");
  device_filter out;
  for (auto& [k, v] : f.items()) {
    if (k == "q") {
      if (!v.is_string() || !valid_search(v.get<std::string>()))
        return bad("filter.q must be at most 128 printable characters");
      out.q = v.get<std::string>();
    } else if (k == "online") {
      if (!v.is_boolean() && !v.is_null())
        return bad("filter.online must be true, false or null");
      out.online = v.is_null() ? -1 : v.get<bool>() ? 1 : 0;
    } else {
      return bad("filter." + k.substr(0, 64)
                 + " is not a filter field (q, online)");
    }
  }
  return out;
}

} // namespace

parsed<bulk_command> parse_bulk_command(const nlohmann::json& body) {
  if (!body.is_object())
    return bad("body must be a JSON object");
  auto ids = body.find("device_ids");
  auto filter = body.find("filter");
  if ((ids == body.end()) == (filter == body.end()))
    return bad("give either device_ids or filter");
  if (filter != body.end()) {
    auto f = parse_device_filter(*filter);
    if (auto e = std::get_if<api_error>(&f))
      return *e;
    auto cmd = parse_post_command(body);
    if (auto e = std::get_if<api_error>(&cmd))
      return *e;
    bulk_command out;
    out.filter = std::get<device_filter>(f);
    out.command = std::move(std::get<actors::post_command>(cmd));
    // At least one device: its args alone must fit.
    if (auto e = bulk_args_error(out.command.args_json.size(), 1))
      return *e;
    return out;
  }
  if (!ids->is_array() || ids->empty()
      || ids->size() > max_bulk_devices)
    return bad("device_ids must be an array of 1 to "
               + std::to_string(max_bulk_devices) + " device ids");
  bulk_command out;
  out.device_ids.reserve(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) {
    auto& id = (*ids)[i];
    if (!id.is_string() || !valid_id(id.get<std::string>()))
      return bad("device_ids[" + std::to_string(i)
                 + "] is not a device id ([A-Za-z0-9_.:-]{1,64})");
    out.device_ids.push_back(id.get<std::string>());
  }
  auto sorted = out.device_ids;
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      dup != sorted.end())
    return bad("device " + *dup + " appears twice in device_ids");
  auto cmd = parse_post_command(body);
  if (auto e = std::get_if<api_error>(&cmd))
    return *e;
  out.command = std::move(std::get<actors::post_command>(cmd));
  if (auto e = bulk_args_error(out.command.args_json.size(),
                               out.device_ids.size()))
    return *e;
  return out;
}

parsed<actors::rule> parse_rule(const nlohmann::json& body) {
  if (!body.is_object())
    return bad("body must be a JSON object");
  actors::rule spec;
  auto metric = body.find("metric");
  if (metric == body.end() || !metric->is_string()
      || !valid_id(metric->get<std::string>()))
    return bad("metric is required ([A-Za-z0-9_.:-]{1,64})");
  spec.metric = metric->get<std::string>();
  auto op = body.find("op");
  if (op == body.end() || !op->is_string()
      || !actors::valid_op(op->get<std::string>()))
    return bad("op must be one of >, >=, <, <=, ==, !=");
  spec.op = op->get<std::string>();
  auto value = body.find("value");
  if (value == body.end() || !value->is_number()
      || !std::isfinite(value->get<double>()))
    return bad("value is required and must be a finite number");
  spec.value = value->get<double>();
  if (auto f = body.find("for_s"); f != body.end() && !f->is_null()) {
    if (!f->is_number_integer() || f->get<int64_t>() < 0
        || f->get<int64_t>() > 86400)
      return bad("for_s must be an integer from 0 to 86400");
    spec.for_s = f->get<int64_t>();
  }
  if (auto d = body.find("device_id"); d != body.end() && !d->is_null()) {
    if (!d->is_string() || !valid_id(d->get<std::string>()))
      return bad("device_id must be a device id ([A-Za-z0-9_.:-]{1,64})");
    spec.device_id = d->get<std::string>();
  }
  if (auto t = body.find("tenant"); t != body.end() && !t->is_null()) {
    if (!t->is_string() || !valid_id(t->get<std::string>()))
      return bad("tenant must be a tenant id");
    spec.tenant = t->get<std::string>();
  }
  return spec;
}

parsed<std::vector<actors::new_device_spec>>
parse_device_specs(const nlohmann::json& body, bool& bulk) {
  bulk = body.is_array();
  if (!bulk && !body.is_object())
    return bad("body must be a device object or an array of them");
  auto n = bulk ? body.size() : 1;
  if (n == 0 || n > 10000)
    return bad("register 1 to 10000 devices at once");
  std::vector<actors::new_device_spec> out;
  out.reserve(n);
  std::vector<std::string> seen;
  for (size_t i = 0; i < n; ++i) {
    auto& d = bulk ? body[i] : body;
    auto where = bulk ? "[" + std::to_string(i) + "]." : std::string{};
    if (!d.is_object())
      return bad(where + " is not an object");
    auto id = d.find("id");
    auto tenant = d.find("tenant");
    auto name = d.find("name");
    if (id == d.end() || !id->is_string()
        || !valid_id(id->get<std::string>()))
      return bad(where + "id is required ([A-Za-z0-9_.:-]{1,64})");
    if (tenant == d.end() || !tenant->is_string()
        || !valid_id(tenant->get<std::string>()))
      return bad(where + "tenant is required");
    std::string nm = id->get<std::string>();
    if (name != d.end() && !name->is_null()) {
      auto checked = device_name(*name);
      if (auto e = std::get_if<api_error>(&checked))
        return bad(where + e->message);
      nm = std::get<std::string>(checked);
    }
    auto silence = silence_window(d);
    if (auto e = std::get_if<api_error>(&silence))
      return bad(where + e->message);
    out.push_back({id->get<std::string>(), nm, tenant->get<std::string>(),
                   std::get<int64_t>(silence)});
    seen.push_back(id->get<std::string>());
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end())
    return bad("the same device id appears twice");
  return out;
}

parsed<actors::create_user> parse_create_user(const nlohmann::json& body) {
  if (!body.is_object())
    return bad("body must be a JSON object");
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto it = body.find(k);
    if (it == body.end() || it->is_null())
      return std::string{};
    if (!it->is_string())
      return std::nullopt;
    return it->get<std::string>();
  };
  auto u = str("username"), p = str("password"), r = str("role"),
       t = str("tenant");
  if (!u || !p || !r || !t)
    return bad("username, password, role and tenant must be strings");
  if (!valid_id(*u))
    return bad("username must match [A-Za-z0-9_.:-]{1,64}");
  if (auto pw = parse_password(body, "password");
      std::holds_alternative<api_error>(pw))
    return std::get<api_error>(pw);
  if (*r != "admin" && *r != "operator" && *r != "viewer")
    return bad("role must be admin, operator or viewer");
  if (*r != "admin" && t->empty())
    return bad("tenant is required for role " + *r);
  if (!t->empty() && !valid_id(*t))
    return bad("tenant is not a valid id");
  actors::create_user out;
  out.username = *u;
  out.password = *p;
  out.role = *r;
  out.tenant = *t;
  return out;
}

parsed<std::string> parse_password(const nlohmann::json& body,
                                   const char* key) {
  auto it = body.is_object() ? body.find(key) : body.end();
  if (it == body.end() || !it->is_string())
    return bad(std::string{key} + " is required (a string)");
  auto& pw = it->get_ref<const std::string&>();
  if (pw.size() < 8 || pw.size() > 1024)
    return bad(std::string{key} + " must be 8 to 1024 characters");
  if (pw.find('\0') != std::string::npos)
    return bad(std::string{key} + " must not hold NUL");
  return pw;
}

parsed<actors::update_device> parse_device_patch(const nlohmann::json& body) {
  if (!body.is_object())
    return bad("body must be a JSON object");
  actors::update_device out;
  if (auto it = body.find("name"); it != body.end()) {
    auto name = device_name(*it);
    if (auto e = std::get_if<api_error>(&name))
      return *e;
    out.name = std::get<std::string>(name);
  }
  if (body.contains("silence_s")) {
    auto silence = silence_window(body);
    if (auto e = std::get_if<api_error>(&silence))
      return *e;
    out.silence_s = std::get<int64_t>(silence);
  }
  if (!out.name && !out.silence_s)
    return bad("give name or silence_s");
  return out;
}

} // namespace troupe::http
