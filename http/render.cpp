#include "http/render.hpp"

namespace troupe::http {

namespace {

nlohmann::json opt_ms(int64_t x) {
  return x < 0 ? nlohmann::json(nullptr) : nlohmann::json(x);
}

// Also any optional string: empty is null.
nlohmann::json tenant_or_null(const std::string& t) {
  return t.empty() ? nlohmann::json(nullptr) : nlohmann::json(t);
}

} // namespace

nlohmann::json json_or_null(const std::string& text) {
  if (text.empty())
    return nullptr;
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

nlohmann::json device_command_json(const actors::command& c) {
  auto args = json_or_null(c.args_json);
  return {{"id", c.id},
          {"name", c.name},
          {"args", args.is_null() ? nlohmann::json::object() : args},
          {"created_ms", c.created_ms},
          {"expires_ms", c.expires_ms}};
}

nlohmann::json user_command_json(const actors::command& c) {
  auto j = device_command_json(c);
  j["status"] = c.status;
  j["delivered_ms"] = opt_ms(c.delivered_ms);
  j["result"] = json_or_null(c.result_json);
  j["finished_ms"] = opt_ms(c.finished_ms);
  return j;
}

nlohmann::json commands_json(const std::vector<actors::command>& cs) {
  auto arr = nlohmann::json::array();
  for (auto& c : cs)
    arr.push_back(device_command_json(c));
  return arr;
}

nlohmann::json device_json(const actors::device_view& v, bool detail) {
  auto latest = nlohmann::json::object();
  for (auto& [m, l] : v.latest)
    latest[m] = {{"value", l.value}, {"ts", l.ts_ms}};
  nlohmann::json j = {{"id", v.id},
                      {"name", v.name},
                      {"tenant", v.tenant},
                      {"online", v.online},
                      {"last_seen_ms", opt_ms(v.last_seen_ms)},
                      {"silence_s", v.silence_s > 0
                                      ? nlohmann::json(v.silence_s)
                                      : nlohmann::json(nullptr)},
                      {"latest", latest}};
  if (detail) {
    j["pending_commands"] = v.pending_commands;
    j["metrics"] = v.metrics;
  }
  if (v.data_unavailable)
    j["data_unavailable"] = true;
  return j;
}

nlohmann::json user_json(const actors::user_info& u) {
  return {{"username", u.username},
          {"role", u.role},
          {"tenant", tenant_or_null(u.tenant)}};
}

nlohmann::json user_json(const actors::user_record& u) {
  return {{"username", u.username},
          {"role", u.role},
          {"tenant", tenant_or_null(u.tenant)},
          {"created_ms", u.created_ms}};
}

nlohmann::json tenant_json(const actors::tenant_info& t) {
  return {{"id", t.id}, {"name", t.name}, {"created_ms", t.created_ms}};
}

nlohmann::json analysis_json(const actors::analysis_reply& a) {
  auto metrics = nlohmann::json::object();
  for (auto& m : a.metrics) {
    auto rollups = nlohmann::json::array();
    for (auto& r : m.rollups)
      rollups.push_back({{"hour_ms", r.hour_ms},
                         {"count", r.count},
                         {"min", r.min},
                         {"max", r.max},
                         {"avg", r.avg},
                         {"anomaly", r.anomaly}});
    metrics[m.metric] = {{"rollups", rollups}, {"anomalies", m.anomalies}};
  }
  return {{"device", a.device}, {"metrics", metrics}};
}

nlohmann::json rule_json(const actors::rule& r) {
  return {{"id", r.id},
          {"tenant", r.tenant},
          {"device_id", tenant_or_null(r.device_id)},
          {"metric", r.metric},
          {"op", r.op},
          {"value", r.value},
          {"for_s", r.for_s},
          {"created_ms", r.created_ms}};
}

nlohmann::json alert_json(const actors::alert& a) {
  return {{"id", a.id},
          {"tenant", a.tenant},
          {"device_id", a.device_id},
          {"kind", a.kind},
          {"rule_id", tenant_or_null(a.rule_id)},
          {"metric", tenant_or_null(a.metric)},
          {"message", a.message},
          {"state", a.state},
          {"opened_ms", a.opened_ms},
          {"closed_ms", opt_ms(a.closed_ms)},
          {"value", a.has_value ? nlohmann::json(a.value)
                                : nlohmann::json(nullptr)}};
}

} // namespace troupe::http
