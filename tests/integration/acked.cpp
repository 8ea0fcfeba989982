#include "tests/integration/acked.hpp"

namespace troupe::test {

namespace {

/// (device id, ts) -> value of every stored point of load_metric.
std::map<std::pair<std::string, int64_t>, double>
stored_points(const std::vector<std::shared_ptr<database>>& dbs,
              size_t* rows_out) {
  std::map<std::pair<std::string, int64_t>, double> out;
  *rows_out = 0;
  for (auto& db : dbs) {
    auto rows = db->query(
      "SELECT d.id, round(extract(epoch FROM t.ts) * 1000)::bigint, t.value "
      "FROM telemetry t JOIN devices d ON d.key = t.device_key "
      "JOIN metrics m ON m.id = t.metric_id WHERE m.name = '"
      + std::string{load_metric} + "'");
    *rows_out += rows.size();
    for (auto& r : rows)
      out[{r[0], std::stoll(r[1])}] = std::stod(r[2]);
  }
  return out;
}

verdict check_stored(const std::vector<std::shared_ptr<database>>& dbs,
                     const std::vector<acked_batch>& acked,
                     const std::vector<device_state>& devices) {
  verdict v;
  auto stored = stored_points(dbs, &v.rows);
  for (auto& b : acked) {
    for (auto& p : b.body["points"]) {
      ++v.acked_points;
      auto key = std::make_pair(devices[b.device].id, p["ts"].get<int64_t>());
      auto i = stored.find(key);
      if (i == stored.end()) {
        if (v.missing++ == 0)
          v.first_missing = key.first + " batch " + std::to_string(b.batch_id)
                            + " ts " + std::to_string(key.second);
      } else if (i->second != p["value"].get<double>()) {
        ++v.wrong_value;
      }
    }
  }
  return v;
}

} // namespace

verdict wait_stored(const std::vector<std::shared_ptr<database>>& dbs,
                    const std::vector<acked_batch>& acked,
                    const std::vector<device_state>& devices,
                    std::chrono::milliseconds timeout) {
  verdict v;
  eventually(
    [&] {
      try {
        v = check_stored(dbs, acked, devices);
      } catch (const std::exception& e) {
        // PostgreSQL may still be coming up.
        v.missing = v.acked_points ? v.acked_points : 1;
        v.first_missing = e.what();
      }
      return v.missing == 0 && v.wrong_value == 0;
    },
    timeout, std::chrono::milliseconds(250));
  return v;
}

std::string describe(const std::map<int, size_t>& statuses) {
  std::string out;
  for (auto& [status, count] : statuses)
    out += (status == 0 ? std::string{"no-answer"} : std::to_string(status))
           + ":" + std::to_string(count) + " ";
  return out;
}

} // namespace troupe::test
