#include "storage/ingest.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include "cluster-config/errc.hpp"
#include "storage/logger.hpp"

namespace troupe::storage {

namespace {

/// Which primary this is: its timeline (which grows at every promotion),
/// address and start time. Two commits seen with the same epoch are in one
/// primary's history; a rebuilt cluster or a second promotion from the same
/// timeline (split brain) shows another one.
const std::string epoch_sql
  = "substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)"
    " || ' ' || coalesce(host(inet_server_addr()), 'local') || ':'"
    " || coalesce(inet_server_port()::text, '') || ' '"
    " || (extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint";

// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
constexpr int64_t pg_epoch_us = 946'684'800'000'000;

void put_u16(std::string& out, uint16_t x) {
  out += static_cast<char>(x >> 8);
  out += static_cast<char>(x & 0xFF);
}

void put_u32(std::string& out, uint32_t x) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out += static_cast<char>((x >> shift) & 0xFF);
}

void put_u64(std::string& out, uint64_t x) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out += static_cast<char>((x >> shift) & 0xFF);
}

bool get_u32(const std::string& in, size_t& pos, uint32_t& x) {
  if (pos + 4 > in.size())
    return false;
  x = 0;
  for (int i = 0; i < 4; ++i)
    x = (x << 8) | static_cast<uint8_t>(in[pos++]);
  return true;
}

bool get_u64(const std::string& in, size_t& pos, uint64_t& x) {
  if (pos + 8 > in.size())
    return false;
  x = 0;
  for (int i = 0; i < 8; ++i)
    x = (x << 8) | static_cast<uint8_t>(in[pos++]);
  return true;
}

uint64_t double_bits(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return bits;
}

double bits_double(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}

} // namespace

std::string encode_copy_binary(const std::vector<point_row>& rows,
                               const std::vector<int32_t>& metric_ids) {
  std::string out;
  out.reserve(19 + rows.size() * 46 + 2);
  out.append("PGCOPY\n\377\r\n\0", 11);
  put_u32(out, 0); // flags
  put_u32(out, 0); // header extension length
  for (size_t i = 0; i < rows.size(); ++i) {
    auto& r = rows[i];
    put_u16(out, 4);
    put_u32(out, 8);
    put_u64(out, static_cast<uint64_t>(r.device_key));
    put_u32(out, 4);
    put_u32(out, static_cast<uint32_t>(metric_ids[i]));
    put_u32(out, 8);
    put_u64(out, static_cast<uint64_t>(r.ts_ms * 1000 - pg_epoch_us));
    put_u32(out, 8);
    put_u64(out, double_bits(r.value));
  }
  put_u16(out, 0xFFFF);
  return out;
}

std::string encode_batch(const ingest_batch& batch) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(batch.points.size()));
  for (auto& p : batch.points) {
    put_u64(out, static_cast<uint64_t>(p.device_key));
    put_u32(out, static_cast<uint32_t>(p.metric.size()));
    out += p.metric;
    put_u64(out, static_cast<uint64_t>(p.ts_ms));
    put_u64(out, double_bits(p.value));
  }
  put_u32(out, static_cast<uint32_t>(batch.marks.size()));
  for (auto& m : batch.marks) {
    put_u64(out, static_cast<uint64_t>(m.device_key));
    put_u64(out, static_cast<uint64_t>(m.batch_hwm));
    put_u64(out, static_cast<uint64_t>(m.last_seen_ms));
  }
  return out;
}

bool decode_batch(const std::string& in, ingest_batch& out) {
  size_t pos = 0;
  uint32_t n = 0;
  uint64_t a = 0, b = 0, c = 0;
  out = ingest_batch{};
  if (!get_u32(in, pos, n))
    return false;
  for (uint32_t i = 0; i < n; ++i) {
    point_row p;
    uint32_t len = 0;
    if (!get_u64(in, pos, a) || !get_u32(in, pos, len)
        || pos + len > in.size())
      return false;
    p.device_key = static_cast<int64_t>(a);
    p.metric = in.substr(pos, len);
    pos += len;
    if (!get_u64(in, pos, a) || !get_u64(in, pos, b))
      return false;
    p.ts_ms = static_cast<int64_t>(a);
    p.value = bits_double(b);
    out.points.push_back(std::move(p));
  }
  if (!get_u32(in, pos, n))
    return false;
  for (uint32_t i = 0; i < n; ++i) {
    if (!get_u64(in, pos, a) || !get_u64(in, pos, b) || !get_u64(in, pos, c))
      return false;
    out.marks.push_back({static_cast<int64_t>(a), static_cast<int64_t>(b),
                         static_cast<int64_t>(c)});
  }
  return pos == in.size();
}

ingest_writer::ingest_writer(std::string url, int64_t connect_timeout_s,
                             bool need_standby)
  : conn_(std::move(url), connect_timeout_s), need_standby_(need_standby) {
}

caf::expected<bool> ingest_writer::standby_has() {
  // The primary's WAL insert position now is past everything this session
  // committed. A synchronous standby that has flushed up to it has all of
  // it. Commits of other sessions in flight put the position a little ahead
  // of what the standby confirmed so far, so a healthy standby gets a few
  // short looks before the answer is no.
  std::string target;
  // A standby's flush confirmation takes about one round trip: look again
  // soon, then less often (~32 ms in all).
  for (auto pause_us : {0, 250, 500, 1000, 2000, 4000, 8000, 16000}) {
    if (pause_us > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
    auto res = conn_.exec(
      "SELECT current_setting('synchronous_standby_names') <> ''"
      " AND current_setting('synchronous_commit') IN ('on', 'remote_apply')"
      " AND EXISTS (SELECT 1 FROM pg_stat_replication"
      "  WHERE sync_state IN ('sync', 'quorum')),"
      " EXISTS (SELECT 1 FROM pg_stat_replication"
      "  WHERE sync_state IN ('sync', 'quorum')"
      "  AND flush_lsn >= coalesce($1::pg_lsn, pg_current_wal_insert_lsn())),"
      " coalesce($1::pg_lsn, pg_current_wal_insert_lsn())::text, "
        + epoch_sql,
      {target.empty() ? param{} : param{target}});
    if (!res)
      return res.error();
    if (res->rows() != 1)
      return false;
    if (target.empty()) {
      target = res->str(0, 2);
      epoch_ = res->str(0, 3);
    }
    if (!res->boolean(0, 0))
      return false; // no synchronous standby at all: no use waiting
    if (res->boolean(0, 1))
      return true;
  }
  return false;
}

caf::error ingest_writer::confirm() {
  if (!need_standby_)
    return caf::none;
  auto on = standby_has();
  if (!on)
    // Committed, but whether a standby has it cannot be told: as unsafe.
    return make_storage_error(errc::unreplicated,
                              "cannot ask whether a standby has the commit: "
                                + config::describe(on.error()));
  if (!*on)
    return make_storage_error(errc::unreplicated,
                              "committed on the primary; no synchronous "
                              "standby has it");
  return caf::none;
}

caf::error ingest_writer::resolve_metrics(const ingest_batch& batch,
                                          std::vector<int32_t>& ids) {
  std::vector<std::string> missing;
  for (auto& p : batch.points)
    if (metric_ids_.count(p.metric) == 0
        && std::find(missing.begin(), missing.end(), p.metric)
             == missing.end())
      missing.push_back(p.metric);
  if (!missing.empty()) {
    auto lit = array_literal(missing);
    auto ins = conn_.exec("INSERT INTO metrics (name) SELECT unnest($1::text[])"
                          " ON CONFLICT (name) DO NOTHING",
                          {lit});
    if (!ins)
      return ins.error();
    auto sel = conn_.exec("SELECT name, id FROM metrics WHERE name = ANY($1)",
                          {lit});
    if (!sel)
      return sel.error();
    for (int i = 0; i < sel->rows(); ++i)
      metric_ids_[sel->str(i, 0)] = static_cast<int32_t>(sel->i64(i, 1));
  }
  ids.clear();
  ids.reserve(batch.points.size());
  for (auto& p : batch.points)
    ids.push_back(metric_ids_.at(p.metric));
  return caf::none;
}

namespace {

/// Batches up to this many points are written by one statement (one round
/// trip, one commit); larger ones by binary COPY in a transaction, which
/// /// costs three more round trips but far less CPU per point. Replays insert
/// with a statement that skips what is stored already (COPY cannot).
constexpr size_t single_statement_points = 2000;

/// The shortest text that reads back as exactly v (std::to_chars: several
/// times cheaper than printf's %.17g, which showed in profiles).
std::string float_text(double v) {
  char buf[40];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

/// What one batch adds to one (device, metric, hour) rollup. The mean is a
/// running mean (never a sum), so finite values never overflow it.
struct hour_delta {
  int64_t n = 0;
  double mean = 0;
  double mn = 0;
  double mx = 0;

  void add(double v) {
    mn = n == 0 ? v : std::min(mn, v);
    mx = n == 0 ? v : std::max(mx, v);
    ++n;
    mean += v / static_cast<double>(n) - mean / static_cast<double>(n);
  }
};

using hour_key = std::tuple<int64_t, int32_t, int64_t>;

int64_t hour_of(int64_t ts_ms) {
  return (ts_ms >= 0 ? ts_ms : ts_ms - 3'599'999) / 3'600'000;
}

/// What a batch changes besides the raw points, as array parameters: the
/// newest point per (device, metric) for `latest`, what it adds to each
/// hour's rollup (merged by the rollup pass), and the devices' batch marks.
struct side_rows {
  std::vector<int64_t> lkeys, lmetrics, lts;
  std::vector<std::string> lvalues;
  std::vector<int64_t> hkeys, hmetrics, hstarts, hn;
  std::vector<std::string> hmean, hmn, hmx;
  std::vector<int64_t> mkeys, mhwm, mseen;

  side_rows(const ingest_batch& batch, const std::vector<int32_t>& ids) {
    std::map<std::pair<int64_t, int32_t>, size_t> newest;
    std::map<hour_key, hour_delta> hours;
    for (size_t i = 0; i < batch.points.size(); ++i) {
      auto& p = batch.points[i];
      auto k = std::make_pair(p.device_key, ids[i]);
      auto it = newest.find(k);
      if (it == newest.end() || batch.points[it->second].ts_ms <= p.ts_ms)
        newest[k] = i;
      hours[{p.device_key, ids[i], hour_of(p.ts_ms)}].add(p.value);
    }
    for (auto& [k, i] : newest) {
      lkeys.push_back(k.first);
      lmetrics.push_back(k.second);
      lts.push_back(batch.points[i].ts_ms);
      lvalues.push_back(float_text(batch.points[i].value));
    }
    set_hours(hours);
    for (auto& m : batch.marks) {
      mkeys.push_back(m.device_key);
      mhwm.push_back(m.batch_hwm);
      mseen.push_back(m.last_seen_ms);
    }
  }

  /// Replaces the hour deltas by those of the rows `inserted` returned
  /// (device_key, metric_id, ts in ms, value): a replay counts only the
  /// points it stored.
  void hours_from(const result& inserted) {
    std::map<hour_key, hour_delta> hours;
    for (int i = 0; i < inserted.rows(); ++i)
      hours[{inserted.i64(i, 0), static_cast<int32_t>(inserted.i64(i, 1)),
             hour_of(inserted.i64(i, 2))}]
        .add(std::strtod(inserted.str(i, 3).c_str(), nullptr));
    set_hours(hours);
  }

  void set_hours(const std::map<hour_key, hour_delta>& hours) {
    for (auto* v : {&hkeys, &hmetrics, &hstarts, &hn})
      v->clear();
    for (auto* v : {&hmean, &hmn, &hmx})
      v->clear();
    for (auto& [k, d] : hours) {
      hkeys.push_back(std::get<0>(k));
      hmetrics.push_back(std::get<1>(k));
      hstarts.push_back(std::get<2>(k) * 3600);
      hn.push_back(d.n);
      hmean.push_back(float_text(d.mean));
      hmn.push_back(float_text(d.mn));
      hmx.push_back(float_text(d.mx));
    }
  }

  /// The CTEs applying them, numbering parameters from $first; params()
  /// gives the values in that order. A committed point always has its
  /// latest value, its share of its hour's rollup and its device's batch
  /// mark, in its transaction. The marks also filter devices
  /// by `key = ANY(keys)`: joined to unnest() alone, the planner chose a
  /// sequential scan of all devices for batches of ~30 devices (every flush
  /// read the whole table on a 1,000-device fleet).
  static std::string ctes(int first) {
    int next = first;
    auto p = [&next] { return "$" + std::to_string(next++); };
    std::string sql = "lat AS (INSERT INTO latest (device_key, metric_id, ts,"
                      " value) SELECT k, m, to_timestamp(t / 1000.0), v FROM"
                      " unnest(";
    sql += p() + "::bigint[], ";
    sql += p() + "::int[], ";
    sql += p() + "::bigint[], ";
    sql += p() + "::float8[]) AS u(k, m, t, v)"
                 " ON CONFLICT (device_key, metric_id) DO UPDATE"
                 " SET ts = excluded.ts, value = excluded.value"
                 " WHERE latest.ts <= excluded.ts),"
                 " deltas AS (INSERT INTO rollup_deltas (device_key,"
                 " metric_id, hour, n, mean, mn, mx)"
                 " SELECT k, m, to_timestamp(h), n, a, lo, hi FROM unnest(";
    sql += p() + "::bigint[], ";
    sql += p() + "::int[], ";
    sql += p() + "::bigint[], ";
    sql += p() + "::bigint[], ";
    sql += p() + "::float8[], ";
    sql += p() + "::float8[], ";
    sql += p() + "::float8[]) AS u(k, m, h, n, a, lo, hi)),";
    sql += " marks AS (UPDATE devices d SET"
             " batch_hwm = CASE WHEN u.h < 0 THEN d.batch_hwm"
             "  ELSE greatest(coalesce(d.batch_hwm, -1), u.h) END,"
             " last_seen_ms = greatest(coalesce(d.last_seen_ms, 0), u.s)"
             " FROM unnest(";
    auto keys = p();
    sql += keys + "::bigint[], ";
    sql += p() + "::bigint[], ";
    sql += p() + "::bigint[]) AS u(k, h, s) WHERE d.key = u.k AND d.key = ANY("
           + keys + "::bigint[]))";
    return sql;
  }

  void params(std::vector<param>& out) const {
    for (auto* v : {&lkeys, &lmetrics, &lts})
      out.push_back(array_literal(*v));
    out.push_back(array_literal(lvalues));
    for (auto* v : {&hkeys, &hmetrics, &hstarts, &hn})
      out.push_back(array_literal(*v));
    for (auto* v : {&hmean, &hmn, &hmx})
      out.push_back(array_literal(*v));
    for (auto* v : {&mkeys, &mhwm, &mseen})
      out.push_back(array_literal(*v));
  }
};

} // namespace

namespace {

/// Inserts the points given as four arrays ($1..$4, point_params()).
const std::string insert_points_sql
  = "INSERT INTO telemetry (device_key, metric_id, ts, value)"
    " SELECT k, m, to_timestamp(t / 1000.0), v FROM unnest($1::bigint[],"
    " $2::int[], $3::bigint[], $4::float8[]) AS u(k, m, t, v)";

std::vector<param> point_params(const ingest_batch& batch,
                                const std::vector<int32_t>& ids) {
  std::vector<int64_t> keys, metrics, ts;
  std::vector<std::string> values;
  for (size_t i = 0; i < batch.points.size(); ++i) {
    keys.push_back(batch.points[i].device_key);
    metrics.push_back(ids[i]);
    ts.push_back(batch.points[i].ts_ms);
    values.push_back(float_text(batch.points[i].value));
  }
  return {array_literal(keys), array_literal(metrics), array_literal(ts),
          array_literal(values)};
}

} // namespace

caf::error ingest_writer::write(const ingest_batch& batch, mode how) {
  std::vector<int32_t> ids;
  if (auto err = resolve_metrics(batch, ids))
    return err;
  side_rows side{batch, ids};
  std::vector<param> params;
  if (how == mode::fresh && batch.points.size() <= single_statement_points) {
    // One statement, its own transaction: points, latest values, hour
    // deltas and marks commit together in one round trip.
    params = point_params(batch, ids);
    side.params(params);
    auto res = conn_.exec("WITH ins AS (" + insert_points_sql + "), "
                            + side_rows::ctes(5) + " SELECT 1",
                          params, retry::never);
    return res ? confirm() : res.error();
  }
  // Larger batches and replays: a transaction of several statements.
  auto run = [&](const std::string& sql,
                 const std::vector<param>& ps = {}) {
    return conn_.exec(sql, ps, retry::never);
  };
  if (auto res = run("BEGIN"); !res)
    return res.error();
  auto fail = [&](caf::error err) {
    if (conn_.ok())
      (void) run("ROLLBACK");
    return err;
  };
  if (how == mode::replay) {
    // Only points not stored already; the hour deltas count those alone.
    auto ins = run(insert_points_sql
                     + " WHERE NOT EXISTS (SELECT 1 FROM telemetry s WHERE"
                       " s.device_key = u.k AND s.metric_id = u.m"
                       " AND s.ts = to_timestamp(u.t / 1000.0)"
                       " AND s.value = u.v)"
                       " RETURNING device_key, metric_id,"
                       " (extract(epoch FROM ts) * 1000)::bigint, value",
                   point_params(batch, ids));
    if (!ins)
      return fail(ins.error());
    side.hours_from(*ins);
  } else if (auto err = conn_.copy_in(
               "COPY telemetry (device_key, metric_id, ts, value) FROM STDIN"
               " (FORMAT binary)",
               encode_copy_binary(batch.points, ids))) {
    return fail(std::move(err));
  }
  side.params(params);
  if (auto res = run("WITH " + side_rows::ctes(1) + " SELECT 1", params); !res)
    return fail(res.error());
  if (auto res = run("COMMIT"); !res)
    return fail(res.error());
  return confirm();
}

} // namespace troupe::storage
