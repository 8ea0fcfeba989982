#include "storage/membership.hpp"

namespace troupe::storage {

namespace {

constexpr const char* db_now = "(extract(epoch FROM clock_timestamp()) * 1000)"
                               "::bigint";

constexpr const char* member_cols
  = "id, http_address, cluster_address, state, incarnation, started_ms,"
    " heartbeat_ms, applied_version, actors";

member_row member_from(const result& r, int i) {
  return {r.str(i, 0), r.str(i, 1), r.str(i, 2), r.str(i, 3),
          r.i64(i, 4), r.i64(i, 5), r.i64(i, 6), r.i64(i, 7),
          r.i64(i, 8)};
}

/// Parses a text[] literal of simple identifiers ({a,b,"c d"}).
std::vector<std::string> parse_array(std::string_view s) {
  std::vector<std::string> out;
  if (s.size() < 2)
    return out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    auto c = s[i];
    if (quoted) {
      if (c == '\\' && i + 2 < s.size())
        cur += s[++i];
      else if (c == '"')
        quoted = false;
      else
        cur += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(std::move(cur));
  return out;
}

} // namespace

caf::expected<int64_t> db_now_ms(connection& c) {
  auto r = c.exec(std::string{"SELECT "} + db_now);
  if (!r)
    return r.error();
  return r->i64(0, 0);
}

caf::expected<member_row> register_member(connection& c, const std::string& id,
                                          const std::string& http_address,
                                          const std::string& cluster_address) {
  auto r = c.exec(
    std::string{"INSERT INTO members (id, http_address, cluster_address,"
                " state, incarnation, started_ms, heartbeat_ms,"
                " applied_version) VALUES ($1, $2, $3, 'alive', 1, "}
      + db_now + ", " + db_now
      + ", 0) ON CONFLICT (id) DO UPDATE SET http_address = excluded."
        "http_address, cluster_address = excluded.cluster_address,"
        " state = 'alive', incarnation = members.incarnation + 1,"
        " started_ms = excluded.started_ms, heartbeat_ms ="
        " excluded.heartbeat_ms, applied_version = 0 RETURNING "
      + member_cols,
    {id, http_address, cluster_address});
  if (!r)
    return r.error();
  return member_from(*r, 0);
}

caf::expected<std::optional<std::string>>
heartbeat_member(connection& c, const std::string& id, int64_t incarnation,
                 int64_t actors) {
  auto r = c.exec(std::string{"UPDATE members SET heartbeat_ms = "} + db_now
                    + ", actors = $3 WHERE id = $1 AND incarnation = $2 AND"
                      " state IN ('alive', 'draining', 'drained') RETURNING"
                      " state",
                  {id, std::to_string(incarnation), std::to_string(actors)});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<std::string>{};
  return std::optional<std::string>{r->str(0, 0)};
}

caf::expected<std::vector<member_row>> list_members(connection& c) {
  auto r = c.exec(std::string{"SELECT "} + member_cols
                  + " FROM members ORDER BY started_ms, id");
  if (!r)
    return r.error();
  std::vector<member_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(member_from(*r, i));
  return out;
}

caf::expected<std::vector<std::string>> expire_members(connection& c,
                                                       int64_t lease_ms) {
  auto r = c.exec(std::string{"UPDATE members SET state = 'dead' WHERE state"
                              " IN ('alive', 'draining', 'drained') AND "
                              "heartbeat_ms < "}
                    + db_now + " - $1 RETURNING id",
                  {std::to_string(lease_ms)});
  if (!r)
    return r.error();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->str(i, 0));
  return out;
}

caf::expected<bool> declare_dead(connection& c, const std::string& id,
                                 int64_t stale_ms) {
  auto r = c.exec(std::string{"UPDATE members SET state = 'dead' WHERE id = $1"
                              " AND state IN ('alive', 'draining', 'drained')"
                              " AND heartbeat_ms < "}
                    + db_now + " - $2",
                  {id, std::to_string(stale_ms)});
  if (!r)
    return r.error();
  return r->affected() > 0;
}

caf::expected<bool> set_member_state(connection& c, const std::string& id,
                                     const std::string& state) {
  auto r = c.exec("UPDATE members SET state = $2 WHERE id = $1", {id, state});
  if (!r)
    return r.error();
  return r->affected() > 0;
}

caf::error set_applied_version(connection& c, const std::string& id,
                               int64_t incarnation, int64_t version) {
  auto r = c.exec("UPDATE members SET applied_version = greatest("
                  "applied_version, $3) WHERE id = $1 AND incarnation = $2",
                  {id, std::to_string(incarnation), std::to_string(version)});
  return r ? caf::none : r.error();
}

caf::expected<std::optional<map_row>> latest_map(connection& c) {
  auto r = c.exec("SELECT version, owners, created_ms, created_by FROM"
                  " shard_maps ORDER BY version DESC LIMIT 1");
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<map_row>{};
  map_row m;
  m.version = r->i64(0, 0);
  m.owners = parse_array(r->text(0, 1));
  m.created_ms = r->i64(0, 2);
  m.created_by = r->str(0, 3);
  return std::optional<map_row>{std::move(m)};
}

caf::error insert_map(connection& c, const map_row& m) {
  auto r = c.exec(std::string{"INSERT INTO shard_maps (version, owners,"
                              " created_ms, created_by) VALUES ($1,"
                              " $2::text[], "}
                    + db_now + ", $3)",
                  {std::to_string(m.version), array_literal(m.owners),
                   m.created_by});
  return r ? caf::none : r.error();
}

} // namespace troupe::storage
