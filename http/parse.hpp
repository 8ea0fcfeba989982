#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "actors/install.hpp"
#include "http/errc.hpp"

/// Pure request parsing and validation, kept apart from the server so it
/// can be unit-tested. Nothing here throws: failures are api_error values.
namespace troupe::http {

template <class T>
using parsed = std::variant<T, api_error>;

/// Ids, usernames and metric names: [A-Za-z0-9_.:-]{1,64}.
bool valid_id(const std::string& s);

/// RFC 3339 ("2026-11-22T10:00:00.123Z", offsets allowed) to ms.
std::optional<int64_t> parse_rfc3339(const std::string& s);

/// A timestamp field: integer ms or an RFC 3339 string.
std::optional<int64_t> parse_ts(const nlohmann::json& j);

/// "60s", "5m", "1h", "1d" (or plain seconds) to ms.
std::optional<int64_t> parse_step(const std::string& s);

/// Parses a JSON body without recursion. Containers may nest at most
/// `max_depth` levels below a top-level member (so `args` of a command may
/// nest max_depth levels; the document as a whole max_depth + 1), and no
/// string or key may hold a NUL character (PostgreSQL stores neither in
/// text nor jsonb). Errors are 400s naming the field: "args nests deeper
/// than 32 levels", "[3].name contains a NUL character".
parsed<nlohmann::json> parse_json(const std::string& body,
                                  size_t max_depth = 32);

/// A request's Content-Encoding: none, `identity` and `gzip` are accepted;
/// anything else is a 415.
std::optional<api_error> check_content_encoding(const std::string& header);

struct telemetry_limits {
  size_t max_points = 10'000;
  int64_t max_age_ms = 30LL * 86'400'000;
  int64_t max_future_ms = 300'000;
  /// Nesting allowed below a top-level member (unknown fields included).
  size_t max_depth = 32;
};

/// Validates a telemetry body (both forms) into the message; a batch with
/// any invalid point is rejected whole, naming the first bad point.
parsed<actors::telemetry> parse_telemetry(const nlohmann::json& body,
                                          const telemetry_limits& limits,
                                          int64_t now_ms);

/// Parses a JSON telemetry body (bounded, see parse_json) into the message.
parsed<actors::telemetry> parse_telemetry_json(const std::string& body,
                                               const telemetry_limits& limits,
                                               int64_t now_ms);

/// Validates POST /devices/{id}/commands: name (an id), args (an object
/// or null), ttl_s (1 s .. 30 days). `who` is left for the caller.
parsed<actors::post_command> parse_post_command(const nlohmann::json& body);

/// The most devices one POST /commands reaches.
constexpr size_t max_bulk_devices = 1000;
/// Whether `q` is a device search (GET /devices, a command's filter): at
/// most 128 printable characters.
bool valid_search(const std::string& q);

/// The most devices one POST /commands with a filter reaches.
constexpr size_t max_filter_devices = 10'000;
/// The most bytes of args one POST /commands stores (args x devices).
constexpr size_t max_bulk_args = 8u << 20;

/// The devices of a fleet search (GET /devices' q and online).
struct device_filter {
  std::string q;
  int8_t online = -1; // -1: any, 0: offline, 1: online
};

/// One command for many devices (POST /commands): the ids given, or every
/// device the caller sees that matches `filter`.
struct bulk_command {
  std::vector<std::string> device_ids;
  std::optional<device_filter> filter;
  actors::post_command command;
};

/// Validates POST /commands: either device_ids (1..max_bulk_devices
/// distinct ids) or filter ({q?, online?}, as GET /devices takes them),
/// and the fields of parse_post_command, args times devices at most
/// max_bulk_args bytes (for a filter: checked by bulk_args_error once its
/// devices are known). `who` is left for the caller.
parsed<bulk_command> parse_bulk_command(const nlohmann::json& body);

/// The 400 for args that, copied to `devices` devices, exceed
/// max_bulk_args bytes; none when they fit.
std::optional<api_error> bulk_args_error(size_t args_bytes, size_t devices);

/// Validates a rule (POST /rules): metric, op, value, for_s, device_id,
/// tenant.
parsed<actors::rule> parse_rule(const nlohmann::json& body);

/// Validates device registrations (POST /admin/devices): one object or an
/// array of 1..10,000, each {id, tenant, name?, silence_s?}, ids unique;
/// `bulk` tells which form it was.
parsed<std::vector<actors::new_device_spec>>
parse_device_specs(const nlohmann::json& body, bool& bulk);

/// Validates POST /admin/users: username, password (8..1024), role, tenant
/// (required unless admin).
parsed<actors::create_user> parse_create_user(const nlohmann::json& body);

/// The password in `body[key]`: a string of 8..1024 characters (the rule
/// of POST /admin/users, the admin's reset and the user's own change).
parsed<std::string> parse_password(const nlohmann::json& body,
                                   const char* key);

/// The longest silence window a device may have, s (a year).
constexpr int64_t max_silence_s = 365LL * 86400;

/// Validates PATCH /admin/devices/{id}: {"name"?: 1..256 characters, no
/// control characters, "silence_s"?: 1..max_silence_s, or null for the
/// node's default}, at least one of them. `who` and `id` are left for the
/// caller.
parsed<actors::update_device> parse_device_patch(const nlohmann::json& body);

/// Decodes a MessagePack telemetry body (the same structure as JSON)
/// straight into the message with msgpack-c, under unpack limits (depth,
/// array and map sizes, string, binary and extension sizes), so no input
/// can exhaust the stack or memory; the same validation as JSON.
parsed<actors::telemetry> parse_telemetry_msgpack(
  const std::string& body, const telemetry_limits& limits, int64_t now_ms);

/// True when `s` holds no byte below 0x20 (query parameters and cursors are
/// passed to PostgreSQL, which refuses NUL in text).
bool printable(const std::string& s);

/// Opaque cursors: base64url of a position.
std::string encode_cursor(const std::string& position);
std::optional<std::string> decode_cursor(const std::string& cursor);

/// A `limit` query parameter: default when empty; error when not an integer
/// or below 1; clamped to `max`.
parsed<int64_t> parse_limit(const std::string& text, int64_t def, int64_t max);

/// An integer query parameter (ms timestamps may also be RFC 3339).
std::optional<int64_t> parse_int64(const std::string& text);

} // namespace troupe::http
