#include "storage/queries.hpp"

#include <chrono>
#include <cstdio>

namespace troupe::storage {

namespace {

std::string num(int64_t x) {
  return std::to_string(x);
}

param opt_str(const std::string& s) {
  if (s.empty())
    return std::nullopt;
  return s;
}

user_row user_from(const result& r, int i, int col = 0) {
  user_row u;
  u.username = r.str(i, col);
  u.password_hash = r.str(i, col + 1);
  u.role = r.str(i, col + 2);
  u.tenant = r.is_null(i, col + 3) ? "" : r.str(i, col + 3);
  u.created_ms = r.i64(i, col + 4);
  return u;
}

constexpr const char* command_cols
  = "id, device_id, name, args::text, status, created_ms, expires_ms,"
    " delivered_ms, result::text, finished_ms, seq";

command_row command_from(const result& r, int i) {
  command_row c;
  c.id = r.str(i, 0);
  c.device_id = r.str(i, 1);
  c.name = r.str(i, 2);
  c.args_json = r.str(i, 3);
  c.status = r.str(i, 4);
  c.created_ms = r.i64(i, 5);
  c.expires_ms = r.i64(i, 6);
  c.delivered_ms = r.opt_i64(i, 7);
  if (!r.is_null(i, 8))
    c.result_json = r.str(i, 8);
  c.finished_ms = r.opt_i64(i, 9);
  c.seq = r.i64(i, 10);
  return c;
}

caf::error status_of(const caf::expected<result>& r) {
  return r ? caf::none : r.error();
}

} // namespace

caf::expected<std::string> secret_key(connection& c) {
  auto r = c.exec("SELECT value FROM settings WHERE key = 'secret_key'");
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return make_storage_error(errc::not_found, "settings.secret_key missing");
  return r->str(0, 0);
}

// -- tenants and users ------------------------------------------------------------

caf::error insert_tenant(connection& c, const tenant_row& t) {
  return status_of(c.exec("INSERT INTO tenants VALUES ($1, $2, $3)",
                          {t.id, t.name, num(t.created_ms)}));
}

caf::expected<std::vector<tenant_row>> list_tenants(connection& c) {
  auto r = c.exec("SELECT id, name, created_ms FROM tenants ORDER BY id");
  if (!r)
    return r.error();
  std::vector<tenant_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->str(i, 0), r->str(i, 1), r->i64(i, 2)});
  return out;
}

caf::expected<bool> tenant_exists(connection& c, const std::string& id) {
  auto r = c.exec("SELECT 1 FROM tenants WHERE id = $1", {id});
  if (!r)
    return r.error();
  return r->rows() > 0;
}

caf::error insert_user(connection& c, const user_row& u) {
  return status_of(c.exec("INSERT INTO users VALUES ($1, $2, $3, $4, $5)",
                          {u.username, u.password_hash, u.role,
                           opt_str(u.tenant), num(u.created_ms)}));
}

caf::expected<std::optional<user_row>> find_user(connection& c,
                                                 const std::string& username) {
  auto r = c.exec("SELECT username, password_hash, role, tenant, created_ms"
                  " FROM users WHERE username = $1",
                  {username});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<user_row>{};
  return std::optional<user_row>{user_from(*r, 0)};
}

caf::expected<std::vector<user_row>>
list_users(connection& c, const std::string& after, size_t limit) {
  auto r = c.exec("SELECT username, password_hash, role, tenant, created_ms"
                  " FROM users WHERE username > $1 ORDER BY username LIMIT $2",
                  {after, num(static_cast<int64_t>(limit))});
  if (!r)
    return r.error();
  std::vector<user_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(user_from(*r, i));
  return out;
}

caf::expected<bool> delete_user(connection& c, const std::string& username) {
  auto r = c.exec("DELETE FROM users WHERE username = $1", {username});
  if (!r)
    return r.error();
  return r->affected() > 0;
}

caf::expected<int64_t> count_admins(connection& c) {
  auto r = c.exec("SELECT count(*) FROM users WHERE role = 'admin'");
  if (!r)
    return r.error();
  return r->i64(0, 0);
}

// -- devices ----------------------------------------------------------------------------

caf::error insert_devices(connection& c, const std::vector<new_device>& ds) {
  std::vector<std::string> ids, names, tenants, hashes;
  for (auto& d : ds) {
    ids.push_back(d.id);
    names.push_back(d.name);
    tenants.push_back(d.tenant);
    hashes.push_back(d.secret_hash);
  }
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  // Find a conflicting id first, for a precise error.
  auto dup = c.exec("SELECT id FROM devices WHERE id = ANY($1::text[]) "
                    "ORDER BY id LIMIT 1",
                    {array_literal(ids)});
  if (!dup)
    return dup.error();
  if (dup->rows() > 0)
    return make_storage_error(errc::conflict,
                              "device " + dup->str(0, 0) + " already exists");
  return status_of(c.exec(
    "INSERT INTO devices (id, name, tenant, secret_hash, created_ms)"
    " SELECT * , $5::bigint FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::text[])",
    {array_literal(ids), array_literal(names), array_literal(tenants),
     array_literal(hashes), num(now)}));
}

caf::expected<std::optional<device_row>>
load_device(connection& c, const std::string& id, int64_t now_ms) {
  auto r = c.exec("SELECT key, id, name, tenant, secret_hash, batch_hwm,"
                  " last_seen_ms, created_ms FROM devices WHERE id = $1",
                  {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<device_row>{};
  device_row d;
  d.key = r->i64(0, 0);
  d.id = r->str(0, 1);
  d.name = r->str(0, 2);
  d.tenant = r->str(0, 3);
  d.secret_hash = r->str(0, 4);
  d.batch_hwm = r->opt_i64(0, 5);
  d.last_seen_ms = r->opt_i64(0, 6);
  d.created_ms = r->i64(0, 7);
  auto l = c.exec("SELECT m.name, (extract(epoch FROM l.ts) * 1000)::bigint,"
                  " l.value FROM latest l JOIN metrics m ON m.id = l.metric_id"
                  " WHERE l.device_key = $1 ORDER BY m.name",
                  {num(d.key)});
  if (!l)
    return l.error();
  for (int i = 0; i < l->rows(); ++i) {
    d.latest.push_back({l->str(i, 0), l->i64(i, 1), l->f64(i, 2)});
    d.metrics.push_back(l->str(i, 0));
  }
  auto cmds = c.exec(std::string{"SELECT "} + command_cols
                       + " FROM commands WHERE device_id = $1 AND status IN"
                         " ('pending', 'delivered') ORDER BY seq",
                     {id});
  if (!cmds)
    return cmds.error();
  for (int i = 0; i < cmds->rows(); ++i)
    d.open_commands.push_back(command_from(*cmds, i));
  auto toks = c.exec("SELECT token_hash, expires_ms FROM device_tokens"
                     " WHERE device_id = $1 AND expires_ms > $2",
                     {id, num(now_ms)});
  if (!toks)
    return toks.error();
  for (int i = 0; i < toks->rows(); ++i)
    d.tokens.emplace_back(toks->str(i, 0), toks->i64(i, 1));
  return std::optional<device_row>{std::move(d)};
}

caf::expected<bool> delete_device(connection& c, const std::string& id) {
  auto r = c.exec("DELETE FROM devices WHERE id = $1 RETURNING key", {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return false;
  // Raw telemetry stays until its partition expires; the latest values go.
  if (auto l = c.exec("DELETE FROM latest WHERE device_key = $1",
                      {r->str(0, 0)});
      !l)
    return l.error();
  return true;
}

caf::expected<bool> update_device_secret(connection& c, const std::string& id,
                                         const std::string& secret_hash) {
  auto r = c.exec("UPDATE devices SET secret_hash = $2 WHERE id = $1",
                  {id, secret_hash});
  if (!r)
    return r.error();
  if (r->affected() == 0)
    return false;
  auto t = c.exec("DELETE FROM device_tokens WHERE device_id = $1", {id});
  if (!t)
    return t.error();
  return true;
}

caf::expected<std::vector<std::string>>
list_device_ids(connection& c, const device_filter& f) {
  std::string sql = "SELECT id FROM devices WHERE id > $1";
  std::vector<param> ps = {f.after};
  if (!f.tenant.empty()) {
    ps.push_back(f.tenant);
    sql += " AND tenant = $" + std::to_string(ps.size());
  }
  if (!f.q.empty()) {
    std::string pattern = "%";
    for (auto ch : f.q) {
      if (ch == '%' || ch == '_' || ch == '\\')
        pattern += '\\';
      pattern += ch;
    }
    pattern += "%";
    ps.push_back(pattern);
    auto n = std::to_string(ps.size());
    sql += " AND (id ILIKE $" + n + " OR name ILIKE $" + n + ")";
  }
  if (f.online) {
    ps.push_back(num(f.online_since_ms));
    auto n = std::to_string(ps.size());
    sql += *f.online ? " AND last_seen_ms >= $" + n
                     : " AND (last_seen_ms IS NULL OR last_seen_ms < $" + n
                         + ")";
  }
  ps.push_back(num(static_cast<int64_t>(f.limit)));
  sql += " ORDER BY id LIMIT $" + std::to_string(ps.size());
  auto r = c.exec(sql, ps);
  if (!r)
    return r.error();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->str(i, 0));
  return out;
}

caf::error insert_device_token(connection& c, const std::string& token_hash,
                               const std::string& device_id,
                               int64_t expires_ms) {
  // Drop expired tokens of this device while here.
  auto del = c.exec("DELETE FROM device_tokens WHERE device_id = $1 AND "
                    "expires_ms < $2",
                    {device_id,
                     num(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count())});
  if (!del)
    return del.error();
  return status_of(c.exec("INSERT INTO device_tokens VALUES ($1, $2, $3)",
                          {token_hash, device_id, num(expires_ms)}));
}

// -- sessions ---------------------------------------------------------------------------

caf::error insert_session(connection& c, const session_row& s) {
  return status_of(c.exec("INSERT INTO sessions VALUES ($1, $2, $3, $4)",
                          {s.token_hash, s.user.username, num(s.created_ms),
                           num(s.last_seen_ms)}));
}

caf::expected<std::optional<session_row>>
load_session(connection& c, const std::string& token_hash) {
  auto r = c.exec("SELECT u.username, u.password_hash, u.role, u.tenant,"
                  " u.created_ms, s.created_ms, s.last_seen_ms FROM sessions s"
                  " JOIN users u ON u.username = s.username"
                  " WHERE s.token_hash = $1",
                  {token_hash});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<session_row>{};
  session_row s;
  s.token_hash = token_hash;
  s.user = user_from(*r, 0);
  s.user.password_hash.clear();
  s.created_ms = r->i64(0, 5);
  s.last_seen_ms = r->i64(0, 6);
  return std::optional<session_row>{std::move(s)};
}

caf::error touch_session(connection& c, const std::string& token_hash,
                         int64_t last_seen_ms) {
  return status_of(c.exec("UPDATE sessions SET last_seen_ms = greatest("
                          "last_seen_ms, $2) WHERE token_hash = $1",
                          {token_hash, num(last_seen_ms)}));
}

caf::error delete_session(connection& c, const std::string& token_hash) {
  return status_of(
    c.exec("DELETE FROM sessions WHERE token_hash = $1", {token_hash}));
}

// -- commands ----------------------------------------------------------------------------

caf::expected<command_row> insert_command(connection& c, command_row cmd) {
  auto r = c.exec("INSERT INTO commands (id, device_id, name, args, status,"
                  " created_ms, expires_ms) VALUES ($1, $2, $3, $4::jsonb,"
                  " 'pending', $5, $6) RETURNING seq",
                  {cmd.id, cmd.device_id, cmd.name, cmd.args_json,
                   num(cmd.created_ms), num(cmd.expires_ms)});
  if (!r)
    return r.error();
  cmd.seq = r->i64(0, 0);
  cmd.status = "pending";
  return cmd;
}

caf::error mark_delivered(connection& c, const std::vector<std::string>& ids,
                          int64_t now_ms) {
  if (ids.empty())
    return caf::none;
  return status_of(c.exec("UPDATE commands SET status = 'delivered',"
                          " delivered_ms = coalesce(delivered_ms, $2)"
                          " WHERE id = ANY($1::text[]) AND status IN"
                          " ('pending', 'delivered')",
                          {array_literal(ids), num(now_ms)}));
}

caf::expected<bool> finish_command(connection& c, const std::string& device_id,
                                   const std::string& id,
                                   const std::string& status,
                                   const std::string& result_json,
                                   int64_t now_ms) {
  auto r = c.exec("UPDATE commands SET status = $3, result = $4::jsonb,"
                  " finished_ms = $5, delivered_ms = coalesce(delivered_ms,"
                  " $5) WHERE id = $1 AND device_id = $2 AND status IN"
                  " ('pending', 'delivered')",
                  {id, device_id, status, result_json, num(now_ms)});
  if (!r)
    return r.error();
  return r->affected() > 0;
}

caf::error expire_commands(connection& c, const std::vector<std::string>& ids) {
  if (ids.empty())
    return caf::none;
  return status_of(c.exec("UPDATE commands SET status = 'expired'"
                          " WHERE id = ANY($1::text[]) AND status IN"
                          " ('pending', 'delivered')",
                          {array_literal(ids)}));
}

caf::expected<std::vector<command_row>>
list_commands(connection& c, const std::string& device_id,
              const std::string& status, int64_t after_seq, size_t limit) {
  std::string sql = std::string{"SELECT "} + command_cols
                    + " FROM commands WHERE device_id = $1 AND seq > $2";
  std::vector<param> ps = {device_id, num(after_seq)};
  if (!status.empty()) {
    ps.push_back(status);
    sql += " AND status = $3";
  }
  ps.push_back(num(static_cast<int64_t>(limit)));
  sql += " ORDER BY seq LIMIT $" + std::to_string(ps.size());
  auto r = c.exec(sql, ps);
  if (!r)
    return r.error();
  std::vector<command_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(command_from(*r, i));
  return out;
}

// -- telemetry ----------------------------------------------------------------------------

caf::expected<std::vector<history_point>>
raw_history(connection& c, const history_query& q) {
  auto r = c.exec(
    "SELECT ts_ms, value FROM (SELECT (extract(epoch FROM t.ts) * 1000)::bigint"
    " AS ts_ms, t.value FROM telemetry t JOIN metrics m ON m.id = t.metric_id"
    " WHERE t.device_key = $1 AND m.name = $2"
    " AND t.ts >= to_timestamp($3 / 1000.0) AND t.ts <= to_timestamp($4 / "
    "1000.0)"
    " ORDER BY t.ts DESC LIMIT $5) s ORDER BY ts_ms",
    {num(q.device_key), q.metric, num(q.from_ms), num(q.to_ms),
     num(static_cast<int64_t>(q.limit))});
  if (!r)
    return r.error();
  std::vector<history_point> out;
  out.reserve(static_cast<size_t>(r->rows()));
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->i64(i, 0), r->f64(i, 1)});
  return out;
}

caf::expected<std::vector<history_bucket>>
bucket_history(connection& c, const history_query& q) {
  auto r = c.exec(
    "SELECT b, count(*), min(value), max(value), avg(value) FROM ("
    " SELECT (floor(extract(epoch FROM t.ts) * 1000 / $6) * $6)::bigint AS b,"
    " t.value FROM telemetry t JOIN metrics m ON m.id = t.metric_id"
    " WHERE t.device_key = $1 AND m.name = $2"
    " AND t.ts >= to_timestamp($3 / 1000.0) AND t.ts <= to_timestamp($4 / "
    "1000.0)) s"
    " GROUP BY b ORDER BY b DESC LIMIT $5",
    {num(q.device_key), q.metric, num(q.from_ms), num(q.to_ms),
     num(static_cast<int64_t>(q.limit)), num(q.step_ms)});
  if (!r)
    return r.error();
  std::vector<history_bucket> out(static_cast<size_t>(r->rows()));
  for (int i = 0; i < r->rows(); ++i) {
    auto& b = out[static_cast<size_t>(r->rows() - 1 - i)];
    b = {r->i64(i, 0), r->i64(i, 1), r->f64(i, 2), r->f64(i, 3),
         r->f64(i, 4)};
  }
  return out;
}

} // namespace troupe::storage
