#pragma once

#include <nlohmann/json.hpp>

#include "actors/install.hpp"

/// JSON renderings of the actors' replies, as API.md shows them.
namespace troupe::http {

/// A command for a device (id, name, args, created_ms, expires_ms).
nlohmann::json device_command_json(const actors::command& c);
/// A command for a user: plus status, delivered_ms, result, finished_ms.
nlohmann::json user_command_json(const actors::command& c);
nlohmann::json commands_json(const std::vector<actors::command>& cs);
/// A device in a list; `detail` adds pending_commands and metrics.
nlohmann::json device_json(const actors::device_view& v, bool detail);
nlohmann::json user_json(const actors::user_info& u);
nlohmann::json user_json(const actors::user_record& u);
nlohmann::json tenant_json(const actors::tenant_info& t);
/// A device's analysis: {"device", "metrics": {name: {"rollups": [...],
/// "anomalies": N}}}.
nlohmann::json analysis_json(const actors::analysis_reply& a);
/// A threshold rule (device_id null: every device of the tenant).
nlohmann::json rule_json(const actors::rule& r);
/// An alert (null rule_id, metric, closed_ms, value where they do not
/// apply).
nlohmann::json alert_json(const actors::alert& a);
/// Parses stored JSON text; null when empty or invalid.
nlohmann::json json_or_null(const std::string& text);

} // namespace troupe::http
