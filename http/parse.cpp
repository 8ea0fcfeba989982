#include "http/parse.hpp"

#include "actors/analysis.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <algorithm>

#include <msgpack.hpp>

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

parsed<actors::telemetry> parse_telemetry_json(const std::string& body,
                                               const telemetry_limits& limits,
                                               int64_t now_ms) {
  auto doc = parse_json(body, limits.max_depth);
  if (auto e = std::get_if<api_error>(&doc))
    return *e;
  return parse_telemetry(std::get<nlohmann::json>(doc), limits, now_ms);
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
      if (!name->is_string() || name->get<std::string>().size() > 256)
        return bad(where + "name must be a string (at most 256)");
      nm = name->get<std::string>();
    }
    out.push_back({id->get<std::string>(), nm, tenant->get<std::string>()});
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
  if (p->size() < 8 || p->size() > 1024)
    return bad("password must be 8 to 1024 characters");
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

} // namespace troupe::http
