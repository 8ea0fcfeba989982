#include "storage/queries.hpp"

#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

namespace troupe::storage {

namespace {

std::string num(int64_t x) {
  return std::to_string(x);
}

/// The FROM and WHERE of a read of device `k`'s points of metric `m` with
/// `lo <= ms <= hi` (SQL expressions; lo and hi bigint epoch milliseconds),
/// naming the chunk `c` and the point `p` (p.ms, p.value): the chunks of
/// the range's hours by their index (a chunk's points lie within its
/// hour), then their points filtered.
std::string points_in(const std::string& k, const std::string& m,
                      const std::string& lo, const std::string& hi) {
  return " FROM telemetry_chunks c, unnest(c.ms, c.vals) AS p(ms, value)"
         " WHERE c.device_key = " + k + " AND c.metric_id = " + m
         + " AND c.hour >= floor((" + lo + ") / 3600000.0)::bigint"
         + " AND c.hour <= floor((" + hi + ") / 3600000.0)::bigint"
         + " AND p.ms >= " + lo + " AND p.ms <= " + hi;
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

/// The latest value of every metric of the devices `keys`, ordered by
/// device and metric name, with the batch mark the row carries: one query
/// for a whole batch or page.
caf::error
for_latest(connection& c, const std::vector<int64_t>& keys,
           const std::function<void(int64_t, latest_row,
                                    std::optional<int64_t>)>& each) {
  auto l = c.exec("SELECT l.device_key, m.name,"
                  " (extract(epoch FROM l.ts) * 1000)::bigint, l.value,"
                  " l.batch_hwm"
                  " FROM latest l JOIN metrics m ON m.id = l.metric_id"
                  " WHERE l.device_key = ANY($1::bigint[])"
                  " ORDER BY l.device_key, m.name",
                  {array_literal(keys)});
  if (!l)
    return l.error();
  for (int i = 0; i < l->rows(); ++i)
    each(l->i64(i, 0), {l->str(i, 1), l->i64(i, 2), l->f64(i, 3)},
         l->opt_i64(i, 4));
  return caf::none;
}

/// A device's latest rows and its devices row each may hold its batch mark
/// (migration 11): the greatest is the mark.
void load_latest_row(device_row& d, latest_row row,
                     std::optional<int64_t> batch_hwm) {
  if (batch_hwm && *batch_hwm > d.batch_hwm.value_or(-1))
    d.batch_hwm = batch_hwm;
  d.metrics.push_back(row.metric);
  d.latest.push_back(std::move(row));
}

} // namespace

int32_t place_device(std::string_view id, size_t data_shards) {
  if (data_shards <= 1)
    return 0;
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](char c) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  };
  for (auto c : std::string_view{"data/"})
    mix(c);
  for (auto c : id)
    mix(c);
  // splitmix64's finalizer: every bit of h reaches the low ones.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return static_cast<int32_t>(h % data_shards);
}

caf::expected<std::string> secret_key(connection& c) {
  auto r = c.exec("SELECT value FROM settings WHERE key = 'secret_key'");
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return make_storage_error(errc::not_found, "settings.secret_key missing");
  return r->str(0, 0);
}

caf::expected<int64_t>
sync_device_shards(connection& c, size_t shards,
                   const std::function<int32_t(const std::string&)>& shard_of) {
  auto stored = c.exec("SELECT value FROM settings WHERE key = 'shards'");
  if (!stored)
    return stored.error();
  auto count = std::to_string(shards);
  bool all = stored->rows() == 0 || stored->str(0, 0) != count;
  int64_t updated = 0;
  // In chunks, so a large fleet never holds one long transaction.
  std::string after;
  for (;;) {
    auto r = c.exec(std::string{"SELECT id FROM devices WHERE id > $1"}
                      + (all ? "" : " AND shard IS NULL")
                      + " ORDER BY id LIMIT 10000",
                    {after});
    if (!r)
      return r.error();
    if (r->rows() == 0)
      break;
    std::vector<std::string> ids;
    std::vector<int64_t> sh;
    for (int i = 0; i < r->rows(); ++i) {
      ids.push_back(r->str(i, 0));
      sh.push_back(shard_of(ids.back()));
    }
    after = ids.back();
    auto u = c.exec("UPDATE devices d SET shard = u.s FROM unnest($1::text[],"
                    " $2::int[]) AS u(id, s) WHERE d.id = u.id",
                    {array_literal(ids), array_literal(sh)},
                    retry::idempotent);
    if (!u)
      return u.error();
    updated += u->affected();
  }
  auto set = c.exec("INSERT INTO settings VALUES ('shards', $1)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    {count}, retry::idempotent);
  if (!set)
    return set.error();
  return updated;
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

caf::expected<bool> set_password(connection& c, const std::string& username,
                                 const std::string& password_hash,
                                 const std::string& keep_session) {
  auto r = c.exec("WITH u AS (UPDATE users SET password_hash = $2"
                  " WHERE username = $1 RETURNING username),"
                  " s AS (DELETE FROM sessions WHERE username IN"
                  " (SELECT username FROM u) AND token_hash <> $3)"
                  " SELECT count(*) FROM u",
                  {username, password_hash, keep_session}, retry::idempotent);
  if (!r)
    return r.error();
  return r->i64(0, 0) > 0;
}

caf::expected<int64_t> count_admins(connection& c) {
  auto r = c.exec("SELECT count(*) FROM users WHERE role = 'admin'");
  if (!r)
    return r.error();
  return r->i64(0, 0);
}

// -- devices ----------------------------------------------------------------------------

caf::expected<std::vector<int64_t>> reserve_device_keys(connection& c,
                                                        size_t n) {
  auto r = c.exec("SELECT nextval(pg_get_serial_sequence('devices', 'key'))"
                  " FROM generate_series(1, $1)",
                  {num(static_cast<int64_t>(n))});
  if (!r)
    return r.error();
  std::vector<int64_t> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->i64(i, 0));
  return out;
}

caf::expected<std::optional<std::string>>
first_existing_device(connection& c, const std::vector<std::string>& ids) {
  auto dup = c.exec("SELECT id FROM devices WHERE id = ANY($1::text[]) "
                    "ORDER BY id LIMIT 1",
                    {array_literal(ids)});
  if (!dup)
    return dup.error();
  if (dup->rows() == 0)
    return std::optional<std::string>{};
  return std::optional<std::string>{dup->str(0, 0)};
}

namespace {

/// The columns of `ds` as array parameters: id, name, tenant, secret hash,
/// shard, data shard, key, silence window (0: none).
std::vector<param> device_arrays(const std::vector<new_device>& ds) {
  std::vector<std::string> ids, names, tenants, hashes;
  std::vector<int64_t> shards, data_shards, keys, silences;
  for (auto& d : ds) {
    ids.push_back(d.id);
    names.push_back(d.name);
    tenants.push_back(d.tenant);
    hashes.push_back(d.secret_hash);
    shards.push_back(d.shard);
    data_shards.push_back(d.data_shard);
    keys.push_back(d.key);
    silences.push_back(d.silence_s.value_or(0));
  }
  return {array_literal(ids),    array_literal(names),
          array_literal(tenants), array_literal(hashes),
          array_literal(shards), array_literal(data_shards),
          array_literal(keys),   array_literal(silences)};
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// A data shard's rows of `tenants` (ids as names: they only back its
/// foreign keys; names live in the catalog).
caf::error copy_tenants(connection& c, const std::vector<std::string>& tenants) {
  return status_of(c.exec("INSERT INTO tenants (id, name, created_ms)"
                          " SELECT DISTINCT t, t, $2::bigint"
                          " FROM unnest($1::text[]) AS t"
                          " ON CONFLICT DO NOTHING",
                          {array_literal(tenants), num(wall_ms())},
                          retry::idempotent));
}

} // namespace

caf::error insert_devices(connection& c, const std::vector<new_device>& ds) {
  // Find a conflicting id first, for a precise error.
  std::vector<std::string> ids;
  for (auto& d : ds)
    ids.push_back(d.id);
  auto dup = first_existing_device(c, ids);
  if (!dup)
    return dup.error();
  if (*dup)
    return make_storage_error(errc::conflict,
                              "device " + **dup + " already exists");
  auto ps = device_arrays(ds);
  ps.push_back(num(wall_ms()));
  return status_of(c.exec(
    "INSERT INTO devices (id, name, tenant, secret_hash, shard, data_shard,"
    " key, silence_s, created_ms)"
    " SELECT i, n, t, h, s, ds, k, nullif(si, 0), $9::bigint FROM"
    " unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],"
    " $6::int[], $7::bigint[], $8::int[]) AS u(i, n, t, h, s, ds, k, si)",
    ps));
}

caf::error mirror_devices(connection& c, const std::vector<new_device>& ds) {
  if (ds.empty())
    return caf::none;
  std::vector<std::string> tenants;
  for (auto& d : ds)
    tenants.push_back(d.tenant);
  auto now = num(wall_ms());
  if (auto err = copy_tenants(c, tenants))
    return err;
  // The secret stays in the catalog: a copy never authenticates anyone.
  auto ps = device_arrays(ds);
  ps.push_back(now);
  return status_of(c.exec(
    "INSERT INTO devices AS d (id, name, tenant, secret_hash, shard,"
    " data_shard, key, silence_s, created_ms)"
    " SELECT i, n, t, '', s, ds, k, nullif(si, 0), $9::bigint FROM"
    " unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],"
    " $6::int[], $7::bigint[], $8::int[]) AS u(i, n, t, h, s, ds, k, si)"
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
    " tenant = excluded.tenant, shard = excluded.shard,"
    " data_shard = excluded.data_shard, silence_s = excluded.silence_s,"
    " batch_hwm = CASE WHEN d.key = excluded.key THEN d.batch_hwm END,"
    " last_seen_ms = CASE WHEN d.key = excluded.key THEN d.last_seen_ms END,"
    " key = excluded.key"
    " WHERE (d.key, d.name, d.tenant, d.shard, d.data_shard, d.silence_s)"
    " IS DISTINCT FROM (excluded.key, excluded.name, excluded.tenant,"
    " excluded.shard, excluded.data_shard, excluded.silence_s)",
    ps, retry::idempotent));
}

caf::error delete_device_copy(connection& c, const std::string& id,
                              int64_t key) {
  return status_of(c.exec("WITH gone AS (DELETE FROM devices WHERE id = $1"
                          " AND key = $2 RETURNING key)"
                          " DELETE FROM latest WHERE device_key IN"
                          " (SELECT key FROM gone)",
                          {id, num(key)}, retry::idempotent));
}

caf::expected<int64_t> sweep_device_copies(connection& shard,
                                           connection& catalog,
                                           int64_t made_before_ms) {
  int64_t gone = 0;
  int64_t after = std::numeric_limits<int64_t>::min();
  for (;;) {
    auto copies = shard.exec("SELECT key, id FROM devices WHERE key > $1"
                             " AND created_ms < $2 ORDER BY key LIMIT 1000",
                             {num(after), num(made_before_ms)});
    if (!copies)
      return copies.error();
    if (copies->rows() == 0)
      return gone;
    std::vector<int64_t> keys;
    for (int i = 0; i < copies->rows(); ++i)
      keys.push_back(copies->i64(i, 0));
    auto known = catalog.exec("SELECT key FROM devices"
                              " WHERE key = ANY($1::bigint[])",
                              {array_literal(keys)});
    if (!known)
      return known.error();
    std::set<int64_t> present;
    for (int i = 0; i < known->rows(); ++i)
      present.insert(known->i64(i, 0));
    for (int i = 0; i < copies->rows(); ++i) {
      if (present.count(keys[static_cast<size_t>(i)]))
        continue;
      if (auto err = delete_device_copy(shard, copies->str(i, 1),
                                        keys[static_cast<size_t>(i)]))
        return err;
      ++gone;
    }
    after = keys.back();
  }
}

caf::expected<std::optional<int32_t>>
device_data_shard(connection& c, const std::string& id) {
  auto r = c.exec("SELECT data_shard FROM devices WHERE id = $1", {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<int32_t>{};
  return std::optional<int32_t>{static_cast<int32_t>(r->i64(0, 0))};
}

caf::error load_device_data(connection& c, std::vector<device_row*>& rows) {
  if (rows.empty())
    return caf::none;
  std::vector<new_device> copies;
  std::vector<std::string> ids;
  std::vector<int64_t> keys;
  std::map<int64_t, device_row*> by_key;
  std::map<std::string, device_row*> by_id;
  for (auto* d : rows) {
    copies.push_back({d->id, d->name, d->tenant, "", d->shard.value_or(0),
                      d->data_shard, d->key, d->silence_s});
    ids.push_back(d->id);
    keys.push_back(d->key);
    by_key[d->key] = d;
    by_id[d->id] = d;
    d->latest.clear();
    d->metrics.clear();
    d->open_commands.clear();
  }
  if (auto err = mirror_devices(c, copies))
    return err;
  auto marks = c.exec("SELECT key, batch_hwm, last_seen_ms FROM devices"
                      " WHERE key = ANY($1::bigint[])",
                      {array_literal(keys)});
  if (!marks)
    return marks.error();
  for (int i = 0; i < marks->rows(); ++i) {
    auto& d = *by_key.at(marks->i64(i, 0));
    d.batch_hwm = marks->opt_i64(i, 1);
    d.last_seen_ms = marks->opt_i64(i, 2);
  }
  if (auto err = for_latest(c, keys,
                            [&](int64_t key, latest_row row,
                                std::optional<int64_t> hwm) {
                              load_latest_row(*by_key.at(key), std::move(row),
                                              hwm);
                            }))
    return err;
  auto cmds = c.exec(std::string{"SELECT "} + command_cols
                       + " FROM commands WHERE device_id = ANY($1::text[])"
                         " AND status IN ('pending', 'delivered') ORDER BY seq",
                     {array_literal(ids)});
  if (!cmds)
    return cmds.error();
  for (int i = 0; i < cmds->rows(); ++i) {
    auto cmd = command_from(*cmds, i);
    if (auto it = by_id.find(cmd.device_id); it != by_id.end())
      it->second->open_commands.push_back(std::move(cmd));
  }
  return caf::none;
}

caf::expected<std::map<std::string, device_row>>
load_devices(connection& c, const std::vector<std::string>& ids,
             int64_t now_ms) {
  std::map<std::string, device_row> out;
  if (ids.empty())
    return out;
  auto id_list = array_literal(ids);
  auto r = c.exec("SELECT key, id, name, tenant, secret_hash, batch_hwm,"
                  " last_seen_ms, created_ms, shard, data_shard, silence_s"
                  " FROM devices WHERE id = ANY($1::text[])",
                  {id_list});
  if (!r)
    return r.error();
  std::map<int64_t, device_row*> by_key;
  std::vector<int64_t> keys;
  for (int i = 0; i < r->rows(); ++i) {
    device_row d;
    d.key = r->i64(i, 0);
    d.id = r->str(i, 1);
    d.name = r->str(i, 2);
    d.tenant = r->str(i, 3);
    d.secret_hash = r->str(i, 4);
    d.batch_hwm = r->opt_i64(i, 5);
    d.last_seen_ms = r->opt_i64(i, 6);
    d.created_ms = r->i64(i, 7);
    if (!r->is_null(i, 8))
      d.shard = static_cast<int32_t>(r->i64(i, 8));
    d.data_shard = static_cast<int32_t>(r->i64(i, 9));
    d.silence_s = r->opt_i64(i, 10);
    keys.push_back(d.key);
    auto& slot = out[d.id];
    slot = std::move(d);
    by_key[slot.key] = &slot;
  }
  if (out.empty())
    return out;
  if (auto err = for_latest(c, keys,
                            [&](int64_t key, latest_row row,
                                std::optional<int64_t> hwm) {
                              load_latest_row(*by_key.at(key), std::move(row),
                                              hwm);
                            }))
    return err;
  auto cmds = c.exec(std::string{"SELECT "} + command_cols
                       + " FROM commands WHERE device_id = ANY($1::text[])"
                         " AND status IN ('pending', 'delivered') ORDER BY seq",
                     {id_list});
  if (!cmds)
    return cmds.error();
  for (int i = 0; i < cmds->rows(); ++i) {
    auto cmd = command_from(*cmds, i);
    if (auto it = out.find(cmd.device_id); it != out.end())
      it->second.open_commands.push_back(std::move(cmd));
  }
  auto toks = c.exec("SELECT device_id, token_hash, expires_ms"
                     " FROM device_tokens WHERE device_id = ANY($1::text[])"
                     " AND expires_ms > $2",
                     {id_list, num(now_ms)});
  if (!toks)
    return toks.error();
  for (int i = 0; i < toks->rows(); ++i)
    if (auto it = out.find(toks->str(i, 0)); it != out.end())
      it->second.tokens.emplace_back(toks->str(i, 1), toks->i64(i, 2));
  return out;
}

caf::expected<std::vector<device_summary>>
list_device_summaries(connection& c, const device_filter& f,
                      int32_t data_shard) {
  // Byte order (COLLATE "C", as devices_data_shard is built), as the
  // merge of the data shards' pages has it, whatever the collation.
  std::string sql = "SELECT key, id, name, tenant, last_seen_ms, silence_s"
                    " FROM devices WHERE data_shard = $2 AND id COLLATE \"C\" > $1";
  std::vector<param> ps = {f.after, num(data_shard)};
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
  sql += " ORDER BY id COLLATE \"C\" LIMIT $" + std::to_string(ps.size());
  auto r = c.exec(sql, ps);
  if (!r)
    return r.error();
  std::vector<device_summary> out;
  std::map<int64_t, size_t> at;
  std::vector<int64_t> keys;
  for (int i = 0; i < r->rows(); ++i) {
    device_summary d;
    d.key = r->i64(i, 0);
    d.id = r->str(i, 1);
    d.name = r->str(i, 2);
    d.tenant = r->str(i, 3);
    d.last_seen_ms = r->opt_i64(i, 4);
    d.silence_s = r->opt_i64(i, 5);
    at[d.key] = out.size();
    keys.push_back(d.key);
    out.push_back(std::move(d));
  }
  if (out.empty())
    return out;
  if (auto err = for_latest(c, keys,
                            [&](int64_t key, latest_row row,
                                std::optional<int64_t>) {
                              out[at.at(key)].latest.push_back(std::move(row));
                            }))
    return err;
  return out;
}

caf::error touch_device(connection& c, const std::string& id,
                        int64_t last_seen_ms) {
  return status_of(c.exec("UPDATE devices SET last_seen_ms = greatest("
                          "coalesce(last_seen_ms, 0), $2) WHERE id = $1",
                          {id, num(last_seen_ms)}, retry::idempotent));
}

caf::expected<bool> update_device(connection& c, const std::string& id,
                                  const device_change& change) {
  param silence;
  if (change.silence_s)
    silence = num(*change.silence_s);
  auto r = c.exec("UPDATE devices SET name = coalesce($2, name),"
                  " silence_s = CASE WHEN $3::bigint IS NULL THEN silence_s"
                  " ELSE nullif($3::bigint, 0) END WHERE id = $1",
                  {id, change.name, silence}, retry::idempotent);
  if (!r)
    return r.error();
  return r->affected() > 0;
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

caf::error insert_device_token(connection& c, const std::string& token_hash,
                               const std::string& device_id,
                               int64_t expires_ms) {
  // Drop expired tokens of this device while here.
  auto del = c.exec("DELETE FROM device_tokens WHERE device_id = $1 AND "
                    "expires_ms < $2",
                    {device_id,
                     num(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count())},
                    retry::idempotent);
  if (!del)
    return del.error();
  // The hash is of a fresh random token: a retry after a lost answer finds
  // its own row.
  return status_of(c.exec("INSERT INTO device_tokens VALUES ($1, $2, $3)"
                          " ON CONFLICT DO NOTHING",
                          {token_hash, device_id, num(expires_ms)},
                          retry::idempotent));
}

// -- sessions ---------------------------------------------------------------------------

caf::error insert_session(connection& c, const session_row& s) {
  // A fresh random token: a retry after a lost answer finds its own row.
  return status_of(c.exec("INSERT INTO sessions VALUES ($1, $2, $3, $4)"
                          " ON CONFLICT DO NOTHING",
                          {s.token_hash, s.user.username, num(s.created_ms),
                           num(s.last_seen_ms)},
                          retry::idempotent));
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
                          {token_hash, num(last_seen_ms)},
                          retry::idempotent));
}

caf::error delete_session(connection& c, const std::string& token_hash) {
  return status_of(
    c.exec("DELETE FROM sessions WHERE token_hash = $1", {token_hash},
           retry::idempotent));
}

// -- commands ----------------------------------------------------------------------------

caf::expected<command_row> insert_command(connection& c, command_row cmd) {
  // A device deleted meanwhile has no row to refer to: not_found, not a
  // foreign key violation (also when the delete commits between the check
  // and the insert's own).
  auto gone = [&] {
    return make_storage_error(errc::not_found,
                              "device " + cmd.device_id + " not found");
  };
  auto r = c.exec("INSERT INTO commands (id, device_id, name, args, status,"
                  " created_ms, expires_ms) SELECT $1, $2, $3, $4::jsonb,"
                  " 'pending', $5, $6 WHERE EXISTS (SELECT 1 FROM devices"
                  " WHERE id = $2) RETURNING seq",
                  {cmd.id, cmd.device_id, cmd.name, cmd.args_json,
                   num(cmd.created_ms), num(cmd.expires_ms)});
  if (!r) {
    if (r.error() == errc::query_failed) {
      auto there = c.exec("SELECT 1 FROM devices WHERE id = $1",
                          {cmd.device_id});
      if (there && there->rows() == 0)
        return gone();
    }
    return r.error();
  }
  if (r->rows() == 0)
    return gone();
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
                          {array_literal(ids), num(now_ms)},
                          retry::idempotent));
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

caf::expected<cancel_outcome>
cancel_command(connection& c, const std::string& device_id,
               const std::string& id, const std::string& by, int64_t now_ms) {
  auto r = c.exec(std::string{"UPDATE commands SET status = 'cancelled',"
                              " finished_ms = $3,"
                              " result = jsonb_build_object('cancelled_by',"
                              " $4::text)"
                              " WHERE id = $1 AND device_id = $2"
                              " AND status = 'pending' AND expires_ms > $3"
                              " RETURNING "}
                    + command_cols,
                  {id, device_id, num(now_ms), by},
                  retry::idempotent);
  if (!r)
    return r.error();
  cancel_outcome out;
  out.cancelled = r->rows() > 0;
  if (!out.cancelled) {
    r = c.exec(std::string{"SELECT "} + command_cols
                 + " FROM commands WHERE id = $1 AND device_id = $2",
               {id, device_id});
    if (!r)
      return r.error();
  }
  out.found = r->rows() > 0;
  if (!out.found)
    return out;
  out.row = command_from(*r, 0);
  // Past its time to live, an open command is expired, whether or not the
  // device actor has recorded that yet.
  auto& s = out.row.status;
  if (!out.cancelled && (s == "pending" || s == "delivered")
      && out.row.expires_ms <= now_ms)
    s = "expired";
  return out;
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
  // Newest first by hour, then by time within the hour: the chunks come in
  // index order and the LIMIT stops the scan early.
  auto r = c.exec(
    "SELECT ms, value FROM (SELECT p.ms, p.value"
      + points_in("$1::bigint", "(SELECT id FROM metrics WHERE name = $2)",
                  "$3::bigint", "$4::bigint")
      + " ORDER BY c.hour DESC, p.ms DESC LIMIT $5) s ORDER BY ms",
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
  // Buckets of whole hours come from the hourly rollups plus the deltas
  // not merged yet (exact in one snapshot: the pass moves deltas into
  // rollups in one transaction), and raw points only for the partial hours
  // at the ends of the range: 30 days is ~720 rows, not ~260,000 points.
  constexpr int64_t hour_ms = 3'600'000;
  constexpr int64_t far = std::numeric_limits<int64_t>::max() - hour_ms;
  bool in_range = q.from_ms >= 0 && q.from_ms < far && q.to_ms < far;
  auto first_hour = in_range ? (q.from_ms + hour_ms - 1) / hour_ms * hour_ms
                             : 0;
  auto end_hour = in_range ? (q.to_ms + 1) / hour_ms * hour_ms : 0;
  bool by_hours = in_range && q.step_ms % hour_ms == 0
                  && end_hour > first_hour;
  // Buckets in epoch milliseconds (bigint arithmetic per point, floored
  // also before 1970, as date_bin from the epoch).
  const char* bin = "(t - ((t % $6::bigint) + $6::bigint) % $6::bigint)";
  const char* outer = "SELECT b, n, mn, mx, av FROM (";
  std::vector<param> ps{num(q.device_key), q.metric, num(q.from_ms),
                        num(q.to_ms), num(static_cast<int64_t>(q.limit)),
                        num(q.step_ms)};
  std::string sql;
  if (by_hours) {
    ps.push_back(num(first_hour));
    ps.push_back(num(end_hour));
    sql = "WITH m AS (SELECT id FROM metrics WHERE name = $2),"
          " parts AS ("
          " SELECT (extract(epoch FROM r.hour) * 1000)::bigint AS t,"
          "  r.count AS n, r.min AS mn, r.max AS mx, r.avg AS av"
          "  FROM rollups r, m WHERE r.device_key = $1"
          "  AND r.metric_id = m.id AND r.hour >= to_timestamp($7 / 1000.0)"
          "  AND r.hour < to_timestamp($8 / 1000.0)"
          " UNION ALL"
          " SELECT (extract(epoch FROM d.hour) * 1000)::bigint, d.n, d.mn,"
          "  d.mx, d.mean FROM rollup_deltas d, m"
          "  WHERE d.device_key = $1 AND d.metric_id = m.id"
          "  AND d.hour >= to_timestamp($7 / 1000.0)"
          "  AND d.hour < to_timestamp($8 / 1000.0)"
          " UNION ALL"
          " SELECT p.ms, 1, p.value, p.value, p.value"
          + points_in("$1::bigint", "(SELECT id FROM m)", "$3::bigint",
                      "$7::bigint - 1")
          + " UNION ALL"
            " SELECT p.ms, 1, p.value, p.value, p.value"
          + points_in("$1::bigint", "(SELECT id FROM m)", "$8::bigint",
                      "$4::bigint")
          + ")"
          // Means merge by count fractions: no sum of values overflows.
          + std::string{outer} + "SELECT b, sum(n)::bigint AS n, min(mn) AS mn,"
          " max(mx) AS mx, sum(av * (n::float8 / tot)) AS av FROM ("
          " SELECT " + bin + " AS b, n, mn, mx, av, (sum(n) OVER"
          " (PARTITION BY " + bin + "))::float8 AS tot FROM parts) w";
  } else {
    sql = std::string{outer} + "SELECT " + bin
          + " AS b, count(*) AS n, min(value) AS mn, max(value) AS mx,"
            " avg(value) AS av FROM (SELECT p.ms AS t, p.value"
          + points_in("$1::bigint",
                      "(SELECT id FROM metrics WHERE name = $2)",
                      "$3::bigint", "$4::bigint")
          + ") p";
  }
  auto r = c.exec(sql + " GROUP BY b ORDER BY b DESC LIMIT $5) s ORDER BY 1 DESC",
                  ps);
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

// -- analysis -----------------------------------------------------------------------------

namespace {

param opt_key(std::optional<int64_t> k) {
  if (!k)
    return std::nullopt;
  return num(*k);
}

std::string dbl(double x) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", x);
  return buf;
}

std::vector<int64_t> keys_from(const result& r) {
  std::vector<int64_t> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(r.i64(i, 0));
  return out;
}

constexpr const char* rule_cols
  = "id, tenant, device_id, metric, op, value, for_s, created_ms, created_by";

rule_row rule_from(const result& r, int i, int col = 0) {
  rule_row x;
  x.id = r.str(i, col);
  x.tenant = r.str(i, col + 1);
  x.device_id = r.is_null(i, col + 2) ? "" : r.str(i, col + 2);
  x.metric = r.str(i, col + 3);
  x.op = r.str(i, col + 4);
  x.value = r.f64(i, col + 5);
  x.for_s = r.i64(i, col + 6);
  x.created_ms = r.i64(i, col + 7);
  x.created_by = r.is_null(i, col + 8) ? "" : r.str(i, col + 8);
  return x;
}

constexpr const char* alert_cols
  = "id, tenant, device_id, kind, rule_id, metric, message, state, opened_ms,"
    " closed_ms, value";

alert_row alert_from(const result& r, int i) {
  alert_row a;
  a.id = r.str(i, 0);
  a.tenant = r.str(i, 1);
  a.device_id = r.str(i, 2);
  a.kind = r.str(i, 3);
  a.rule_id = r.is_null(i, 4) ? "" : r.str(i, 4);
  a.metric = r.is_null(i, 5) ? "" : r.str(i, 5);
  a.message = r.str(i, 6);
  a.state = r.str(i, 7);
  a.opened_ms = r.i64(i, 8);
  a.closed_ms = r.opt_i64(i, 9);
  if (!r.is_null(i, 10))
    a.value = r.f64(i, 10);
  return a;
}

/// A shard filter as a parameter: an int[] literal, or NULL for all.
param shard_param(const shard_filter& f) {
  if (!f)
    return std::nullopt;
  return array_literal(std::vector<int64_t>(f->begin(), f->end()));
}

// Alert ids: random, from pgcrypto (installed by the migrations).
constexpr const char* new_alert_id = "encode(gen_random_bytes(12), 'hex')";

} // namespace

caf::expected<rollup_chunk>
merge_rollup_deltas(connection& c, const std::vector<int64_t>& skip_keys,
              std::optional<int64_t> only_key, size_t limit,
              const shard_filter& shards) {
  // One statement: the deltas taken are deleted and merged into their
  // rollups in one transaction, so each counts exactly once. SKIP LOCKED
  // lets several workers (or nodes) share the work; two merging into the
  // same rollup row serialize on it (ON CONFLICT DO UPDATE sees the
  // other's committed row). No raw point is read.
  auto r = c.exec(
    "WITH pick AS ("
    " SELECT ctid, device_key, metric_id, hour, n, mean, mn, mx"
    " FROM rollup_deltas"
    " WHERE NOT (device_key = ANY($1::bigint[]))"
    " AND ($2::bigint IS NULL OR device_key = $2::bigint)"
    " AND ($4::int[] IS NULL OR device_key IN (SELECT key FROM devices"
    "  WHERE shard = ANY($4::int[])))"
    " LIMIT $3 FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM rollup_deltas WHERE ctid IN (SELECT ctid FROM pick)),"
    // Means are merged weighted by count fractions (never through a
    // sum), so huge finite values cannot overflow.
    " w AS (SELECT device_key, metric_id, hour, n, mn, mx, mean * (n::float8"
    "  / (sum(n) OVER (PARTITION BY device_key, metric_id, hour))::float8)"
    "  AS part"
    "  FROM pick WHERE n > 0),"
    " agg AS ("
    " SELECT device_key, metric_id, hour, sum(n) AS n, sum(part) AS a,"
    "  min(mn) AS mn, max(mx) AS mx FROM w"
    " GROUP BY device_key, metric_id, hour),"
    " up AS ("
    " INSERT INTO rollups (device_key, metric_id, hour, count, min, max, avg,"
    "  anomaly, checked)"
    " SELECT device_key, metric_id, hour, n, mn, mx, a, false, false"
    " FROM agg"
    " ON CONFLICT (device_key, metric_id, hour) DO UPDATE SET"
    "  count = rollups.count + excluded.count,"
    "  min = least(rollups.min, excluded.min),"
    "  max = greatest(rollups.max, excluded.max),"
    "  avg = rollups.avg * (rollups.count::float8"
    "   / (rollups.count + excluded.count))"
    "   + excluded.avg * (excluded.count::float8"
    "   / (rollups.count + excluded.count)),"
    "  checked = false"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM pick), (SELECT count(*) FROM up)",
    {array_literal(skip_keys), opt_key(only_key),
     num(static_cast<int64_t>(limit)), shard_param(shards)});
  if (!r)
    return r.error();
  return rollup_chunk{r->i64(0, 0), r->i64(0, 1)};
}

caf::expected<std::vector<int64_t>>
delta_device_keys(connection& c, const std::vector<int64_t>& skip_keys,
                  const shard_filter& shards) {
  auto r = c.exec("SELECT DISTINCT device_key FROM rollup_deltas"
                  " WHERE NOT (device_key = ANY($1::bigint[]))"
                  " AND ($2::int[] IS NULL OR device_key IN (SELECT key"
                  "  FROM devices WHERE shard = ANY($2::int[])))"
                  " ORDER BY device_key",
                  {array_literal(skip_keys), shard_param(shards)});
  if (!r)
    return r.error();
  return keys_from(*r);
}

caf::expected<std::vector<anomaly_candidate>>
unchecked_rollups(connection& c, const std::vector<int64_t>& skip_keys,
                  std::optional<int64_t> only_key, size_t limit,
                  const shard_filter& shards) {
  auto r = c.exec(
    "SELECT u.device_key, u.metric_id,"
    " (extract(epoch FROM u.hour) * 1000)::bigint, u.count, u.avg,"
    " w.n, coalesce(w.mean, 0), coalesce(w.sd, 0)"
    " FROM rollups u CROSS JOIN LATERAL ("
    "  SELECT count(*) AS n, avg(p.avg) AS mean, stddev_samp(p.avg) AS sd"
    "  FROM (SELECT avg FROM rollups p WHERE p.device_key = u.device_key"
    "   AND p.metric_id = u.metric_id AND p.hour < u.hour"
    "   ORDER BY p.hour DESC LIMIT 24) p) w"
    " WHERE NOT u.checked AND NOT (u.device_key = ANY($1::bigint[]))"
    " AND ($2::bigint IS NULL OR u.device_key = $2::bigint)"
    " AND ($4::int[] IS NULL OR u.device_key IN (SELECT key FROM devices"
    "  WHERE shard = ANY($4::int[])))"
    " ORDER BY u.device_key, u.metric_id, u.hour LIMIT $3",
    {array_literal(skip_keys), opt_key(only_key),
     num(static_cast<int64_t>(limit)), shard_param(shards)});
  if (!r)
    return r.error();
  std::vector<anomaly_candidate> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->i64(i, 0), r->i64(i, 1), r->i64(i, 2), r->i64(i, 3),
                   r->f64(i, 4), r->i64(i, 5), r->f64(i, 6), r->f64(i, 7)});
  return out;
}

caf::expected<std::vector<int64_t>>
unchecked_device_keys(connection& c, const std::vector<int64_t>& skip_keys,
                      const shard_filter& shards) {
  auto r = c.exec("SELECT DISTINCT device_key FROM rollups WHERE NOT checked"
                  " AND NOT (device_key = ANY($1::bigint[]))"
                  " AND ($2::int[] IS NULL OR device_key IN (SELECT key"
                  "  FROM devices WHERE shard = ANY($2::int[])))"
                  " ORDER BY device_key",
                  {array_literal(skip_keys), shard_param(shards)});
  if (!r)
    return r.error();
  return keys_from(*r);
}

caf::error set_anomaly_flags(connection& c,
                             const std::vector<anomaly_candidate>& cs,
                             const std::vector<bool>& flags) {
  if (cs.empty())
    return caf::none;
  std::vector<int64_t> keys, metrics, hours, counts;
  std::vector<std::string> avgs, fl;
  for (size_t i = 0; i < cs.size(); ++i) {
    keys.push_back(cs[i].device_key);
    metrics.push_back(cs[i].metric_id);
    hours.push_back(cs[i].hour_ms);
    counts.push_back(cs[i].count);
    avgs.push_back(dbl(cs[i].avg));
    fl.push_back(flags[i] ? "true" : "false");
  }
  // Only rows unchanged since they were read: a rollup pass that rewrote
  // one meanwhile left it unchecked for the next anomaly pass.
  return status_of(c.exec(
    "UPDATE rollups r SET anomaly = u.a, checked = true"
    " FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[],"
    " $5::float8[], $6::bool[]) AS u(k, m, h, n, v, a)"
    " WHERE r.device_key = u.k AND r.metric_id = u.m"
    " AND r.hour = to_timestamp(u.h / 1000.0) AND r.count = u.n"
    " AND r.avg = u.v",
    {array_literal(keys), array_literal(metrics), array_literal(hours),
     array_literal(counts), array_literal(avgs), array_literal(fl)}));
}

caf::expected<int64_t>
sync_anomaly_alerts(connection& c, const std::vector<int64_t>& device_keys,
                    int64_t now_ms) {
  if (device_keys.empty())
    return int64_t{0};
  auto keys = array_literal(device_keys);
  constexpr const char* newest
    = "(SELECT DISTINCT ON (device_key, metric_id) device_key, metric_id,"
      " hour, avg, anomaly, checked FROM rollups"
      " WHERE device_key = ANY($1::bigint[])"
      " ORDER BY device_key, metric_id, hour DESC) r";
  auto opened = c.exec(
    std::string{"INSERT INTO alerts (id, tenant, device_id, kind, metric,"
                " message, state, opened_ms, value) SELECT "}
      + new_alert_id
      + ", d.tenant, d.id, 'anomaly', m.name, m.name || ' hourly average '"
        " || r.avg::text || ' in the hour from '"
        " || to_char(r.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')"
        " || ' is an outlier against the previous 24 hours', 'open', $2,"
        " r.avg FROM "
      + newest
      + " JOIN devices d ON d.key = r.device_key"
        " JOIN metrics m ON m.id = r.metric_id"
        " WHERE r.checked AND r.anomaly ON CONFLICT DO NOTHING RETURNING id",
    {keys, num(now_ms)});
  if (!opened)
    return opened.error();
  auto closed = c.exec(
    std::string{"UPDATE alerts a SET state = 'closed', closed_ms = $2 FROM "}
      + newest
      + " JOIN devices d ON d.key = r.device_key"
        " JOIN metrics m ON m.id = r.metric_id"
        " WHERE a.kind = 'anomaly' AND a.state = 'open'"
        " AND a.device_id = d.id AND a.metric = m.name"
        " AND r.checked AND NOT r.anomaly",
    {keys, num(now_ms)});
  if (!closed)
    return closed.error();
  return static_cast<int64_t>(opened->rows());
}

caf::expected<std::vector<rule_candidate>>
rule_candidates(connection& c, const std::vector<std::string>& skip_rules,
                const std::optional<std::string>& only_rule, int64_t now_ms,
                const shard_filter& shards) {
  auto r = c.exec(
    "SELECT r.id, r.tenant, r.device_id, r.metric, r.op, r.value, r.for_s,"
    " r.created_ms, r.created_by, d.id, d.tenant, l.value,"
    " (extract(epoch FROM l.ts) * 1000)::bigint,"
    " coalesce(w.n, 0), coalesce(w.mn, 0), coalesce(w.mx, 0),"
    " coalesce(w.eq, 0)"
    " FROM rules r JOIN metrics m ON m.name = r.metric"
    " JOIN devices d ON d.tenant = r.tenant"
    "  AND (r.device_id IS NULL OR d.id = r.device_id)"
    " JOIN latest l ON l.device_key = d.key AND l.metric_id = m.id"
    " LEFT JOIN LATERAL ("
    "  SELECT count(*) AS n, min(p.value) AS mn, max(p.value) AS mx,"
    "  count(*) FILTER (WHERE p.value = r.value) AS eq"
    + points_in("d.key", "m.id", "$3::bigint - r.for_s * 1000", "$3::bigint")
    + " AND r.for_s > 0) w ON true"
    " WHERE NOT (r.id = ANY($1::text[])) AND ($2::text IS NULL OR r.id = $2)"
    " AND ($4::int[] IS NULL OR d.shard = ANY($4::int[]))"
    " ORDER BY r.id, d.id",
    {array_literal(skip_rules), only_rule ? param{*only_rule} : std::nullopt,
     num(now_ms), shard_param(shards)});
  if (!r)
    return r.error();
  std::vector<rule_candidate> out;
  for (int i = 0; i < r->rows(); ++i) {
    rule_candidate x;
    x.rule = rule_from(*r, i);
    x.device_id = r->str(i, 9);
    x.device_tenant = r->str(i, 10);
    x.latest = r->f64(i, 11);
    x.latest_ms = r->i64(i, 12);
    x.window_count = r->i64(i, 13);
    x.window_min = r->f64(i, 14);
    x.window_max = r->f64(i, 15);
    x.window_equal = r->i64(i, 16);
    out.push_back(std::move(x));
  }
  return out;
}

caf::expected<std::vector<std::string>>
rule_ids(connection& c, const std::vector<std::string>& skip_rules) {
  auto r = c.exec("SELECT id FROM rules WHERE NOT (id = ANY($1::text[]))"
                  " ORDER BY id",
                  {array_literal(skip_rules)});
  if (!r)
    return r.error();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->str(i, 0));
  return out;
}

caf::expected<int64_t> open_alerts(connection& c,
                                   const std::vector<new_alert>& as,
                                   int64_t now_ms) {
  if (as.empty())
    return int64_t{0};
  std::vector<std::string> tenants, devices, kinds, rules, metrics, messages,
    values;
  for (auto& a : as) {
    tenants.push_back(a.tenant);
    devices.push_back(a.device_id);
    kinds.push_back(a.kind);
    rules.push_back(a.rule_id);
    metrics.push_back(a.metric);
    messages.push_back(a.message);
    values.push_back(a.value ? dbl(*a.value) : "");
  }
  auto r = c.exec(
    std::string{"INSERT INTO alerts (id, tenant, device_id, kind, rule_id,"
                " metric, message, state, opened_ms, value) SELECT "}
      + new_alert_id
      + ", t, d, k, nullif(r, ''), nullif(m, ''), msg, 'open', $8,"
        " nullif(v, '')::float8 FROM unnest($1::text[], $2::text[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
        " AS u(t, d, k, r, m, msg, v) ON CONFLICT DO NOTHING RETURNING id",
    {array_literal(tenants), array_literal(devices), array_literal(kinds),
     array_literal(rules), array_literal(metrics), array_literal(messages),
     array_literal(values), num(now_ms)});
  if (!r)
    return r.error();
  return static_cast<int64_t>(r->rows());
}

caf::expected<int64_t>
close_rule_alerts(connection& c, const std::vector<std::string>& rule_ids,
                  const std::vector<std::pair<std::string, std::string>>&
                    breaching,
                  int64_t now_ms, const shard_filter& shards) {
  if (rule_ids.empty())
    return int64_t{0};
  std::vector<std::string> br, bd;
  for (auto& [rule, dev] : breaching) {
    br.push_back(rule);
    bd.push_back(dev);
  }
  auto r = c.exec(
    "UPDATE alerts a SET state = 'closed', closed_ms = $4"
    " WHERE a.kind = 'rule' AND a.state = 'open'"
    " AND a.rule_id = ANY($1::text[]) AND NOT EXISTS ("
    "  SELECT 1 FROM unnest($2::text[], $3::text[]) AS b(r, d)"
    "  WHERE b.r = a.rule_id AND b.d = a.device_id)"
    " AND ($5::int[] IS NULL OR a.device_id IN (SELECT id FROM devices"
    "  WHERE shard = ANY($5::int[])))",
    {array_literal(rule_ids), array_literal(br), array_literal(bd),
     num(now_ms), shard_param(shards)});
  if (!r)
    return r.error();
  return r->affected();
}

caf::expected<std::pair<int64_t, int64_t>>
sync_silence_alerts(connection& c, int64_t default_silence_s,
                    int64_t now_ms, const shard_filter& shards) {
  constexpr const char* window
    = "coalesce(d.silence_s, $2::bigint) * 1000";
  auto opened = c.exec(
    std::string{"INSERT INTO alerts (id, tenant, device_id, kind, message,"
                " state, opened_ms) SELECT "}
      + new_alert_id
      + ", d.tenant, d.id, 'silence', 'device ' || d.id || ' not seen for"
        " more than ' || (" + window + " / 1000)::text || ' s', 'open', $1"
        " FROM devices d WHERE d.last_seen_ms IS NOT NULL"
        " AND ($3::int[] IS NULL OR d.shard = ANY($3::int[]))"
        " AND d.last_seen_ms < $1 - " + window
      + " ON CONFLICT DO NOTHING RETURNING id",
    {num(now_ms), num(default_silence_s), shard_param(shards)});
  if (!opened)
    return opened.error();
  auto closed = c.exec(
    std::string{"UPDATE alerts a SET state = 'closed', closed_ms = $1"
                " FROM devices d WHERE a.kind = 'silence'"
                " AND a.state = 'open' AND d.id = a.device_id"
                " AND ($3::int[] IS NULL OR d.shard = ANY($3::int[]))"
                " AND d.last_seen_ms >= $1 - "}
      + window,
    {num(now_ms), num(default_silence_s), shard_param(shards)});
  if (!closed)
    return closed.error();
  return std::make_pair(static_cast<int64_t>(opened->rows()),
                        closed->affected());
}

caf::expected<std::vector<rollup_row>>
device_rollups(connection& c, int64_t device_key, int64_t from_ms,
               int64_t to_ms) {
  auto r = c.exec(
    "SELECT m.name, (extract(epoch FROM r.hour) * 1000)::bigint, r.count,"
    " r.min, r.max, r.avg, r.anomaly AND r.checked FROM rollups r"
    " JOIN metrics m ON m.id = r.metric_id WHERE r.device_key = $1"
    " AND r.hour > to_timestamp($2 / 1000.0) - interval '1 hour'"
    " AND r.hour <= to_timestamp($3 / 1000.0) ORDER BY m.name, r.hour",
    {num(device_key), num(from_ms), num(to_ms)});
  if (!r)
    return r.error();
  std::vector<rollup_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->str(i, 0), r->i64(i, 1), r->i64(i, 2), r->f64(i, 3),
                   r->f64(i, 4), r->f64(i, 5), r->boolean(i, 6)});
  return out;
}

caf::expected<std::optional<std::string>>
device_tenant(connection& c, const std::string& id) {
  auto r = c.exec("SELECT tenant FROM devices WHERE id = $1", {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<std::string>{};
  return std::optional<std::string>{r->str(0, 0)};
}

caf::error insert_rule(connection& c, const rule_row& r) {
  return status_of(
    c.exec(std::string{"INSERT INTO rules ("} + rule_cols
             + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
           {r.id, r.tenant, opt_str(r.device_id), r.metric, r.op,
            dbl(r.value), num(r.for_s), num(r.created_ms),
            opt_str(r.created_by)}));
}

caf::expected<std::optional<rule_row>> find_rule(connection& c,
                                                 const std::string& id) {
  auto r = c.exec(std::string{"SELECT "} + rule_cols
                    + " FROM rules WHERE id = $1",
                  {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<rule_row>{};
  return std::optional<rule_row>{rule_from(*r, 0)};
}

caf::expected<std::vector<rule_row>>
list_rules(connection& c, const std::string& tenant, int64_t after_ms,
           const std::string& after_id, size_t limit) {
  auto r = c.exec(std::string{"SELECT "} + rule_cols
                    + " FROM rules WHERE ($1::text IS NULL OR tenant = $1)"
                      " AND (created_ms, id) > ($2::bigint, $3::text)"
                      " ORDER BY created_ms, id LIMIT $4",
                  {opt_str(tenant), num(after_ms), after_id,
                   num(static_cast<int64_t>(limit))});
  if (!r)
    return r.error();
  std::vector<rule_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(rule_from(*r, i));
  return out;
}

caf::expected<bool> delete_rule(connection& c, const std::string& id,
                                int64_t now_ms) {
  auto r = c.exec("WITH gone AS (DELETE FROM rules WHERE id = $1 RETURNING id),"
                  " closed AS (UPDATE alerts SET state = 'closed',"
                  " closed_ms = $2 WHERE rule_id IN (SELECT id FROM gone)"
                  " AND state = 'open' RETURNING 1)"
                  " SELECT (SELECT count(*) FROM gone),"
                  " (SELECT count(*) FROM closed)",
                  {id, num(now_ms)});
  if (!r)
    return r.error();
  return r->i64(0, 0) > 0;
}

caf::expected<std::vector<rule_row>> all_rules(connection& c) {
  auto r = c.exec(std::string{"SELECT "} + rule_cols
                  + " FROM rules ORDER BY id");
  if (!r)
    return r.error();
  std::vector<rule_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(rule_from(*r, i));
  return out;
}

caf::expected<int64_t> sync_rules(connection& c,
                                  const std::vector<rule_row>& rules,
                                  int64_t now_ms) {
  std::vector<std::string> ids, tenants, devices, metrics, ops, bys, values;
  std::vector<int64_t> fors, created;
  for (auto& r : rules) {
    ids.push_back(r.id);
    tenants.push_back(r.tenant);
    devices.push_back(r.device_id);
    metrics.push_back(r.metric);
    ops.push_back(r.op);
    values.push_back(dbl(r.value));
    fors.push_back(r.for_s);
    created.push_back(r.created_ms);
    bys.push_back(r.created_by);
  }
  // Rules deleted in the catalog go, with their open alerts (delete_rule).
  auto gone = c.exec("WITH gone AS (DELETE FROM rules"
                     " WHERE NOT (id = ANY($1::text[])) RETURNING id)"
                     " UPDATE alerts SET state = 'closed', closed_ms = $2"
                     " WHERE rule_id IN (SELECT id FROM gone)"
                     " AND state = 'open'",
                     {array_literal(ids), num(now_ms)}, retry::idempotent);
  if (!gone)
    return gone.error();
  if (rules.empty())
    return int64_t{0};
  if (auto err = copy_tenants(c, tenants))
    return err;
  // A device's rule only where the device lives.
  auto ins = c.exec(
    std::string{"INSERT INTO rules ("} + rule_cols
      + ") SELECT i, t, nullif(d, ''), m, o, v, f, cr, nullif(b, '')"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::text[], $6::float8[], $7::int[], $8::bigint[], $9::text[])"
        " AS u(i, t, d, m, o, v, f, cr, b)"
        " WHERE d = '' OR EXISTS (SELECT 1 FROM devices x WHERE x.id = d)"
        " ON CONFLICT (id) DO NOTHING",
    {array_literal(ids), array_literal(tenants), array_literal(devices),
     array_literal(metrics), array_literal(ops), array_literal(values),
     array_literal(fors), array_literal(created), array_literal(bys)},
    retry::idempotent);
  if (!ins)
    return ins.error();
  return static_cast<int64_t>(ins->affected());
}

caf::expected<std::vector<alert_row>> list_alerts(connection& c,
                                                  const alert_filter& f) {
  std::string sql = std::string{"SELECT "} + alert_cols
                    + " FROM alerts WHERE true";
  std::vector<param> ps;
  if (!f.tenant.empty()) {
    ps.push_back(f.tenant);
    sql += " AND tenant = $" + std::to_string(ps.size());
  }
  if (!f.state.empty()) {
    ps.push_back(f.state);
    sql += " AND state = $" + std::to_string(ps.size());
  }
  if (!f.device_id.empty()) {
    ps.push_back(f.device_id);
    sql += " AND device_id = $" + std::to_string(ps.size());
  }
  if (f.before_ms >= 0) {
    ps.push_back(num(f.before_ms));
    ps.push_back(f.before_id);
    // Byte order (COLLATE "C") for ids, as the merge of the data shards'
    // pages has it, whatever the database's collation.
    sql += " AND (opened_ms, id COLLATE \"C\") < ($"
           + std::to_string(ps.size() - 1)
           + "::bigint, $" + std::to_string(ps.size()) + "::text)";
  }
  ps.push_back(num(static_cast<int64_t>(f.limit)));
  sql += " ORDER BY opened_ms DESC, id COLLATE \"C\" DESC LIMIT $"
         + std::to_string(ps.size());
  auto r = c.exec(sql, ps);
  if (!r)
    return r.error();
  std::vector<alert_row> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(alert_from(*r, i));
  return out;
}

caf::expected<std::optional<alert_row>> find_alert(connection& c,
                                                   const std::string& id) {
  auto r = c.exec(std::string{"SELECT "} + alert_cols
                    + " FROM alerts WHERE id = $1",
                  {id});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<alert_row>{};
  return std::optional<alert_row>{alert_from(*r, 0)};
}

caf::expected<std::optional<alert_row>>
close_alert(connection& c, const std::string& id, int64_t now_ms) {
  auto r = c.exec(std::string{"UPDATE alerts SET state = 'closed',"
                              " closed_ms = $2 WHERE id = $1"
                              " AND state = 'open' RETURNING "}
                    + alert_cols,
                  {id, num(now_ms)});
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<alert_row>{};
  return std::optional<alert_row>{alert_from(*r, 0)};
}

} // namespace troupe::storage
