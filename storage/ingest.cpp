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

point_chunks chunk_points(const ingest_batch& batch,
                          const std::vector<int32_t>& metric_ids) {
  // Chunks in key order, points in upload order within each.
  std::map<std::tuple<int64_t, int32_t, int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < batch.points.size(); ++i) {
    auto& p = batch.points[i];
    groups[{p.device_key, metric_ids[i], hour_of(p.ts_ms)}].push_back(i);
  }
  point_chunks out;
  out.ms.reserve(batch.points.size());
  out.values.reserve(batch.points.size());
  for (auto& [k, idx] : groups) {
    out.keys.push_back(std::get<0>(k));
    out.metrics.push_back(std::get<1>(k));
    out.hours.push_back(std::get<2>(k));
    out.offsets.push_back(static_cast<int64_t>(out.ms.size()) + 1);
    out.counts.push_back(static_cast<int64_t>(idx.size()));
    for (auto i : idx) {
      out.ms.push_back(batch.points[i].ts_ms);
      out.values.push_back(batch.points[i].value);
    }
  }
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

/// What a batch changes besides the raw points, as array parameters: the
/// newest point per (device, metric) for `latest` with the device's batch
/// mark, what it adds to each hour's rollup (merged by the rollup pass), and
/// the devices rows that need last_seen_ms (or a mark without a point).
struct side_rows {
  std::map<hour_key, hour_delta> hours;
  std::vector<int64_t> lkeys, lmetrics, lts, lhwm;
  std::vector<std::string> lvalues;
  std::vector<int64_t> hkeys, hmetrics, hstarts, hn;
  std::vector<std::string> hmean, hmn, hmx;
  std::vector<int64_t> mkeys, mhwm, mseen;

  /// `chunks` is chunk_points(batch, ids): each chunk is one hour's delta.
  side_rows(const ingest_batch& batch, const std::vector<int32_t>& ids,
            const point_chunks& chunks) {
    std::map<std::pair<int64_t, int32_t>, size_t> newest;
    for (size_t i = 0; i < batch.points.size(); ++i) {
      auto& p = batch.points[i];
      auto k = std::make_pair(p.device_key, ids[i]);
      auto it = newest.find(k);
      if (it == newest.end() || batch.points[it->second].ts_ms <= p.ts_ms)
        newest[k] = i;
    }
    for (size_t c = 0; c < chunks.keys.size(); ++c) {
      auto& d = hours[{chunks.keys[c], static_cast<int32_t>(chunks.metrics[c]),
                       chunks.hours[c]}];
      auto first = static_cast<size_t>(chunks.offsets[c] - 1);
      for (size_t j = first; j < first + static_cast<size_t>(chunks.counts[c]);
           ++j)
        d.add(chunks.values[j]);
    }
    // Each device's batch mark, carried by all of its latest rows.
    std::map<int64_t, int64_t> hwm;
    for (auto& m : batch.marks) {
      auto& h = hwm.emplace(m.device_key, -1).first->second;
      h = std::max(h, m.batch_hwm);
    }
    for (auto& [k, i] : newest) {
      lkeys.push_back(k.first);
      lmetrics.push_back(k.second);
      lts.push_back(batch.points[i].ts_ms);
      lvalues.push_back(float_text(batch.points[i].value));
      auto h = hwm.find(k.first);
      lhwm.push_back(h == hwm.end() ? -1 : h->second);
    }
    set_hours();
    for (auto& m : batch.marks) {
      // lkeys is sorted (newest is keyed by device first).
      if (m.last_seen_ms < 0
          && std::binary_search(lkeys.begin(), lkeys.end(), m.device_key))
        continue; // the mark is on the latest rows, last_seen is recent
      mkeys.push_back(m.device_key);
      mhwm.push_back(m.batch_hwm);
      mseen.push_back(m.last_seen_ms);
    }
  }

  /// Keeps the hour deltas of the chunks `inserted` returned (device_key,
  /// metric_id, hour): a replay counts only the chunks it stored. A batch
  /// has one chunk per (device, metric, hour), the key of its delta.
  void keep_hours(const result& inserted) {
    std::set<hour_key> stored;
    for (int i = 0; i < inserted.rows(); ++i)
      stored.insert({inserted.i64(i, 0),
                     static_cast<int32_t>(inserted.i64(i, 1)),
                     inserted.i64(i, 2)});
    for (auto it = hours.begin(); it != hours.end();)
      it = stored.count(it->first) ? std::next(it) : hours.erase(it);
    set_hours();
  }

  void set_hours() {
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
    // An older point keeps the stored value but may still move the mark.
    std::string sql = "lat AS (INSERT INTO latest (device_key, metric_id, ts,"
                      " value, batch_hwm) SELECT k, m, to_timestamp(t /"
                      " 1000.0), v, nullif(h, -1) FROM unnest(";
    sql += p() + "::bigint[], ";
    sql += p() + "::int[], ";
    sql += p() + "::bigint[], ";
    sql += p() + "::float8[], ";
    sql += p() + "::bigint[]) AS u(k, m, t, v, h)"
                 " ON CONFLICT (device_key, metric_id) DO UPDATE"
                 " SET ts = CASE WHEN latest.ts <= excluded.ts"
                 "  THEN excluded.ts ELSE latest.ts END,"
                 " value = CASE WHEN latest.ts <= excluded.ts"
                 "  THEN excluded.value ELSE latest.value END,"
                 " batch_hwm = greatest(latest.batch_hwm, excluded.batch_hwm)"
                 " WHERE latest.ts <= excluded.ts"
                 "  OR excluded.batch_hwm > coalesce(latest.batch_hwm, -1)),"
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
    out.push_back(array_literal(lhwm));
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

/// Inserts a batch's chunks given as seven arrays ($1..$7, chunk_params()):
/// per chunk its device, metric, hour, first point and point count, then
/// every point's milliseconds and value, sliced per chunk.
const std::string insert_chunks_sql
  = "INSERT INTO telemetry_chunks (device_key, metric_id, hour, ms, vals)"
    " SELECT k, m, h, ($6::bigint[])[o:o + n - 1],"
    " ($7::float8[])[o:o + n - 1] FROM unnest($1::bigint[], $2::int[],"
    " $3::bigint[], $4::int[], $5::int[]) AS u(k, m, h, o, n)";

std::vector<param> chunk_params(const point_chunks& c) {
  std::vector<std::string> values;
  values.reserve(c.values.size());
  for (auto v : c.values)
    values.push_back(float_text(v));
  return {array_literal(c.keys),    array_literal(c.metrics),
          array_literal(c.hours),   array_literal(c.offsets),
          array_literal(c.counts),  array_literal(c.ms),
          array_literal(values)};
}

} // namespace

caf::error ingest_writer::write(const ingest_batch& batch, mode how) {
  std::vector<int32_t> ids;
  if (auto err = resolve_metrics(batch, ids))
    return err;
  auto chunks = chunk_points(batch, ids);
  side_rows side{batch, ids, chunks};
  auto params = chunk_params(chunks);
  if (how == mode::fresh) {
    // One statement, its own transaction: points, latest values, hour
    // deltas and marks commit together in one round trip.
    side.params(params);
    auto res = conn_.exec("WITH ins AS (" + insert_chunks_sql + "), "
                            + side_rows::ctes(8) + " SELECT 1",
                          params, retry::never);
    return res ? confirm() : res.error();
  }
  // Replays: only chunks not stored already, and the hour deltas of those,
  // in one transaction of two statements.
  auto run = [&](const std::string& sql, const std::vector<param>& ps) {
    return conn_.exec(sql, ps, retry::never);
  };
  if (auto res = run("BEGIN", {}); !res)
    return res.error();
  auto fail = [&](caf::error err) {
    if (conn_.ok())
      (void) run("ROLLBACK", {});
    return err;
  };
  auto ins = run(insert_chunks_sql
                   + " WHERE NOT EXISTS (SELECT 1 FROM telemetry_chunks s"
                     " WHERE s.device_key = u.k AND s.metric_id = u.m"
                     " AND s.hour = u.h AND s.ms = ($6::bigint[])[o:o + n - 1]"
                     " AND s.vals = ($7::float8[])[o:o + n - 1])"
                     " RETURNING device_key, metric_id, hour",
                 params);
  if (!ins)
    return fail(ins.error());
  side.keep_hours(*ins);
  params.clear();
  side.params(params);
  if (auto res = run("WITH " + side_rows::ctes(1) + " SELECT 1", params); !res)
    return fail(res.error());
  if (auto res = run("COMMIT", {}); !res)
    return fail(res.error());
  return confirm();
}

} // namespace troupe::storage
