#include "storage/ingest.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "storage/logger.hpp"

namespace troupe::storage {

namespace {

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

ingest_writer::ingest_writer(std::string url, int64_t connect_timeout_s)
  : conn_(std::move(url), connect_timeout_s) {
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
/// costs three more round trips but far less CPU per point. Replays always
/// take the statement (COPY cannot skip what is stored already).
constexpr size_t single_statement_points = 2000;

/// The shortest text that reads back as exactly v (std::to_chars: several
/// times cheaper than printf's %.17g, which showed in profiles).
std::string float_text(double v) {
  char buf[40];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

/// What a batch changes besides the raw points, as array parameters: the
/// newest point per (device, metric) for `latest`, the hours it touches for
/// the rollup pass, and the devices' batch marks.
struct side_rows {
  std::vector<int64_t> lkeys, lmetrics, lts;
  std::vector<std::string> lvalues;
  std::vector<int64_t> hkeys, hmetrics, hstarts;
  std::vector<int64_t> mkeys, mhwm, mseen;

  side_rows(const ingest_batch& batch, const std::vector<int32_t>& ids) {
    std::map<std::pair<int64_t, int32_t>, size_t> newest;
    std::set<std::tuple<int64_t, int32_t, int64_t>> hours;
    for (size_t i = 0; i < batch.points.size(); ++i) {
      auto& p = batch.points[i];
      auto k = std::make_pair(p.device_key, ids[i]);
      auto it = newest.find(k);
      if (it == newest.end() || batch.points[it->second].ts_ms <= p.ts_ms)
        newest[k] = i;
      auto hour = (p.ts_ms >= 0 ? p.ts_ms : p.ts_ms - 3'599'999) / 3'600'000;
      hours.emplace(p.device_key, ids[i], hour);
    }
    for (auto& [k, i] : newest) {
      lkeys.push_back(k.first);
      lmetrics.push_back(k.second);
      lts.push_back(batch.points[i].ts_ms);
      lvalues.push_back(float_text(batch.points[i].value));
    }
    for (auto& [k, m, h] : hours) {
      hkeys.push_back(k);
      hmetrics.push_back(m);
      hstarts.push_back(h * 3600);
    }
    for (auto& m : batch.marks) {
      mkeys.push_back(m.device_key);
      mhwm.push_back(m.batch_hwm);
      mseen.push_back(m.last_seen_ms);
    }
  }

  /// The CTEs applying them, numbering parameters from $first; params()
  /// gives the values in that order. A committed point always has its
  /// latest value, its hour marked and its device's batch mark. The marks
  /// also filter devices by `key = ANY(keys)`: joined to unnest() alone, the
  /// planner chose a sequential scan of all devices for batches of ~30
  /// devices (every flush read the whole table on a 1,000-device fleet).
  static std::string ctes(int first) {
    auto p = [first](int i) { return "$" + std::to_string(first + i); };
    return "lat AS (INSERT INTO latest (device_key, metric_id, ts, value)"
           " SELECT k, m, to_timestamp(t / 1000.0), v FROM unnest("
           + p(0) + "::bigint[], " + p(1) + "::int[], " + p(2)
           + "::bigint[], " + p(3)
           + "::float8[]) AS u(k, m, t, v)"
             " ON CONFLICT (device_key, metric_id) DO UPDATE"
             " SET ts = excluded.ts, value = excluded.value"
             " WHERE latest.ts <= excluded.ts),"
             " dirty AS (INSERT INTO rollup_dirty (device_key, metric_id, hour)"
             " SELECT k, m, to_timestamp(h) FROM unnest("
           + p(4) + "::bigint[], " + p(5) + "::int[], " + p(6)
           + "::bigint[]) AS u(k, m, h)),"
             " marks AS (UPDATE devices d SET"
             " batch_hwm = CASE WHEN u.h < 0 THEN d.batch_hwm"
             "  ELSE greatest(coalesce(d.batch_hwm, -1), u.h) END,"
             " last_seen_ms = greatest(coalesce(d.last_seen_ms, 0), u.s)"
             " FROM unnest("
           + p(7) + "::bigint[], " + p(8) + "::bigint[], " + p(9)
           + "::bigint[]) AS u(k, h, s) WHERE d.key = u.k AND d.key = ANY("
           + p(7) + "::bigint[]))";
  }

  void params(std::vector<param>& out) const {
    for (auto* v : {&lkeys, &lmetrics, &lts})
      out.push_back(array_literal(*v));
    out.push_back(array_literal(lvalues));
    for (auto* v : {&hkeys, &hmetrics, &hstarts, &mkeys, &mhwm, &mseen})
      out.push_back(array_literal(*v));
  }
};

} // namespace

caf::error ingest_writer::write(const ingest_batch& batch, mode how) {
  std::vector<int32_t> ids;
  if (auto err = resolve_metrics(batch, ids))
    return err;
  side_rows side{batch, ids};
  std::vector<param> params;
  if (batch.points.size() <= single_statement_points || how == mode::replay) {
    // One statement, its own transaction: points, latest values, hours and
    // marks commit together in one round trip.
    std::vector<int64_t> keys, metrics, ts;
    std::vector<std::string> values;
    for (size_t i = 0; i < batch.points.size(); ++i) {
      keys.push_back(batch.points[i].device_key);
      metrics.push_back(ids[i]);
      ts.push_back(batch.points[i].ts_ms);
      values.push_back(float_text(batch.points[i].value));
    }
    params = {array_literal(keys), array_literal(metrics), array_literal(ts),
              array_literal(values)};
    side.params(params);
    // Latest values, hour marks and batch marks are idempotent: a replay
    // applies them again unchanged.
    const char* dedupe
      = how == mode::replay
          ? " WHERE NOT EXISTS (SELECT 1 FROM telemetry s WHERE"
            " s.device_key = u.k AND s.metric_id = u.m"
            " AND s.ts = to_timestamp(u.t / 1000.0) AND s.value = u.v)"
          : "";
    auto res = conn_.exec(
      std::string{"WITH ins AS (INSERT INTO telemetry (device_key, metric_id,"
                  " ts, value) SELECT k, m, to_timestamp(t / 1000.0), v FROM"
                  " unnest($1::bigint[], $2::int[], $3::bigint[],"
                  " $4::float8[]) AS u(k, m, t, v)"}
        + dedupe + "), " + side_rows::ctes(5) + " SELECT 1",
      params, retry::never);
    return res ? caf::none : res.error();
  }
  auto run = [&](const std::string& sql,
                 const std::vector<param>& ps = {}) -> caf::error {
    auto res = conn_.exec(sql, ps, retry::never);
    return res ? caf::none : res.error();
  };
  if (auto err = run("BEGIN"))
    return err;
  auto fail = [&](caf::error err) {
    if (conn_.ok())
      (void) run("ROLLBACK");
    return err;
  };
  if (auto err = conn_.copy_in("COPY telemetry (device_key, metric_id, ts, "
                               "value) FROM STDIN (FORMAT binary)",
                               encode_copy_binary(batch.points, ids)))
    return fail(std::move(err));
  side.params(params);
  if (auto err = run("WITH " + side_rows::ctes(1) + " SELECT 1", params))
    return fail(std::move(err));
  if (auto err = run("COMMIT"))
    return fail(std::move(err));
  return caf::none;
}

} // namespace troupe::storage
