// troupe_ceilings: measures what this machine can do without troupe, in the
// same run as troupe_load, so troupe's figures can be reported as ratios:
//
//   --pg-url URL  raw binary COPY into a telemetry-shaped, indexed table,
//                 batches committed one by one on one connection (rows/s);
//   --http        a bare cpp-httplib server on 127.0.0.1 answering POST /x
//                 with 202, driven by keep-alive clients like troupe_load's
//                 (requests/s, latency);
//   --http-url U  the same client against another server, e.g. nginx with
//                 `return 200` (--http-method, --http-path, --name).
//
// See bench/README.md.

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>

#include <libpq-fe.h>

#include "bench/common.hpp"

namespace {

using namespace troupe::bench;
using std::chrono::milliseconds;

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

// -- PostgreSQL COPY ceiling --------------------------------------------------

/// Settings of the COPY measurement.
struct pg_config {
  std::string url;
  int64_t batches = 10;
  int64_t rows = 10000;
  int64_t devices = 1000;
  int64_t runs = 3;
};

/// Owns one libpq connection; closes it on destruction.
class pg_conn {
public:
  explicit pg_conn(const std::string& url) {
    const char* keys[] = {"dbname", "connect_timeout", "application_name",
                          nullptr};
    const char* vals[] = {url.c_str(), "10", "troupe_ceilings", nullptr};
    conn_ = PQconnectdbParams(keys, vals, 1);
  }

  ~pg_conn() {
    if (conn_ != nullptr)
      PQfinish(conn_);
  }

  pg_conn(const pg_conn&) = delete;
  pg_conn& operator=(const pg_conn&) = delete;

  bool ok() const {
    return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
  }

  std::string error() const {
    std::string msg = conn_ ? PQerrorMessage(conn_) : "out of memory";
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
      msg.pop_back();
    return msg;
  }

  PGconn* get() const {
    return conn_;
  }

  /// Runs a statement; returns an empty string or the error.
  std::string exec(const std::string& sql) {
    auto* res = PQexec(conn_, sql.c_str());
    auto st = PQresultStatus(res);
    std::string err;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
      err = sql.substr(0, 60) + ": " + error();
    PQclear(res);
    return err;
  }

  /// The first column of the first row of a query, or "?".
  std::string scalar(const std::string& sql) {
    auto* res = PQexec(conn_, sql.c_str());
    std::string out = "?";
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
      out = PQgetvalue(res, 0, 0);
    PQclear(res);
    return out;
  }

private:
  PGconn* conn_ = nullptr;
};

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

/// Encodes batch `b` in PostgreSQL's binary COPY format. Rows spread over
/// `devices` devices and 2 metrics with timestamps that grow per (device,
/// metric), like troupe's own telemetry.
void encode_batch(const pg_config& cfg, int64_t b, int64_t base_us,
                  std::string& out) {
  static const char signature[] = "PGCOPY\n\377\r\n";
  out.clear();
  out.append(signature, 11);
  put_u32(out, 0); // flags
  put_u32(out, 0); // header extension length
  for (int64_t i = 0; i < cfg.rows; ++i) {
    auto g = b * cfg.rows + i;
    auto device_key = g % cfg.devices;
    auto metric_id = (g / cfg.devices) % 2;
    auto ts_us = base_us + (g / (cfg.devices * 2)) * 1000;
    double value = 20.0 + static_cast<double>(g % 1000) / 100.0;
    uint64_t value_bits = 0;
    std::memcpy(&value_bits, &value, sizeof(value));
    put_u16(out, 4);
    put_u32(out, 8);
    put_u64(out, static_cast<uint64_t>(device_key));
    put_u32(out, 4);
    put_u32(out, static_cast<uint32_t>(metric_id));
    put_u32(out, 8);
    put_u64(out, static_cast<uint64_t>(ts_us));
    put_u32(out, 8);
    put_u64(out, value_bits);
  }
  put_u16(out, 0xffff); // trailer
}

/// COPYs one encoded batch in its own transaction; returns an error or "".
std::string copy_batch(pg_conn& db, const std::string& table,
                       const std::string& data) {
  if (auto err = db.exec("BEGIN"); !err.empty())
    return err;
  auto* res = PQexec(db.get(),
                     ("COPY " + table + " FROM STDIN (FORMAT binary)").c_str());
  auto st = PQresultStatus(res);
  PQclear(res);
  if (st != PGRES_COPY_IN)
    return "COPY: " + db.error();
  constexpr size_t chunk = 256 * 1024;
  for (size_t off = 0; off < data.size(); off += chunk) {
    auto n = std::min(chunk, data.size() - off);
    if (PQputCopyData(db.get(), data.data() + off, static_cast<int>(n)) != 1)
      return "COPY data: " + db.error();
  }
  if (PQputCopyEnd(db.get(), nullptr) != 1)
    return "COPY end: " + db.error();
  std::string err;
  while (auto* r = PQgetResult(db.get())) {
    if (PQresultStatus(r) != PGRES_COMMAND_OK && err.empty())
      err = "COPY: " + db.error();
    PQclear(r);
  }
  if (!err.empty()) {
    (void) db.exec("ROLLBACK");
    return err;
  }
  return db.exec("COMMIT");
}

/// One run of the COPY measurement: wall time and each batch's rate.
struct copy_run {
  double seconds = 0;
  std::vector<double> batch_rates;
};

/// Creates a fresh indexed table, COPYs every batch into it, checks the row
/// count and drops the table again, whatever happened.
std::optional<copy_run> copy_once(pg_conn& db, const pg_config& cfg,
                                  std::string& err) {
  auto table = "troupe_ceiling_" + random_hex(10);
  err = db.exec("CREATE TABLE " + table
                + " (device_key bigint NOT NULL, metric_id int NOT NULL, "
                  "ts timestamptz NOT NULL, value float8 NOT NULL)");
  if (!err.empty())
    return std::nullopt;
  struct dropper {
    pg_conn& db;
    std::string table;
    ~dropper() {
      if (PQtransactionStatus(db.get()) != PQTRANS_IDLE)
        (void) db.exec("ROLLBACK");
      if (auto err = db.exec("DROP TABLE IF EXISTS " + table); !err.empty())
        std::cerr << "troupe_ceilings: warning: " << err << std::endl;
    }
  } drop{db, table};
  err = db.exec("CREATE INDEX ON " + table + " (device_key, metric_id, ts)");
  if (!err.empty())
    return std::nullopt;
  // 2026-01-01T00:00:00Z in microseconds since PostgreSQL's 2000-01-01 epoch.
  constexpr int64_t pg_epoch_s = 946684800;
  constexpr int64_t base_s = 1767225600;
  constexpr int64_t base_us = (base_s - pg_epoch_s) * 1000000;
  std::string data;
  data.reserve(static_cast<size_t>(cfg.rows) * 46 + 32);
  copy_run run;
  auto t0 = bench_clock::now();
  for (int64_t b = 0; b < cfg.batches; ++b) {
    // Encoding is timed too: troupe has to encode its batches as well.
    auto tb = bench_clock::now();
    encode_batch(cfg, b, base_us, data);
    err = copy_batch(db, table, data);
    if (!err.empty())
      return std::nullopt;
    run.batch_rates.push_back(cfg.rows / seconds_since(tb));
  }
  run.seconds = seconds_since(t0);
  auto total = std::to_string(cfg.batches * cfg.rows);
  auto count = db.scalar("SELECT count(*) FROM " + table);
  if (count != total) {
    err = "expected " + total + " rows, the table holds " + count;
    return std::nullopt;
  }
  return run;
}

double median_of(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0.0 : xs[xs.size() / 2];
}

bool run_pg_ceiling(const pg_config& cfg) {
  std::cout << "pg copy: " << cfg.runs << " run(s) of " << cfg.batches
            << " batches x " << cfg.rows
            << " rows, binary COPY, a commit per batch, 1 connection, "
               "indexed table"
            << std::endl;
  pg_conn db{cfg.url};
  if (!db.ok()) {
    std::cerr << "troupe_ceilings: error: cannot connect to PostgreSQL: "
              << db.error() << std::endl;
    return false;
  }
  auto version = db.scalar("SHOW server_version");
  auto sync_commit = db.scalar("SHOW synchronous_commit");
  auto fsync = db.scalar("SHOW fsync");
  (void) db.exec("SET statement_timeout = '300s'");
  auto rows = cfg.batches * cfg.rows;
  std::vector<double> run_rates;
  std::vector<double> all_batches;
  for (int64_t i = 0; i < cfg.runs; ++i) {
    std::string err;
    auto run = copy_once(db, cfg, err);
    if (!run) {
      std::cerr << "troupe_ceilings: error: " << err << std::endl;
      return false;
    }
    auto rate = rows / run->seconds;
    run_rates.push_back(rate);
    all_batches.insert(all_batches.end(), run->batch_rates.begin(),
                       run->batch_rates.end());
    std::cout << "  run " << i + 1 << ": " << rows << " rows in "
              << round_to(run->seconds, 3) << " s: " << round_to(rate, 0)
              << " rows/s" << std::endl;
  }
  auto rows_per_s = median_of(run_rates);
  std::sort(all_batches.begin(), all_batches.end());
  std::cout << "  median " << round_to(rows_per_s, 0)
            << " rows/s (single batches: min "
            << round_to(all_batches.front(), 0) << ", median "
            << round_to(median_of(all_batches), 0) << ", max "
            << round_to(all_batches.back(), 0) << " rows/s)\n"
            << "  PostgreSQL " << version
            << ", synchronous_commit=" << sync_commit << ", fsync=" << fsync
            << std::endl;
  nlohmann::ordered_json r;
  r["tool"] = "troupe_ceilings";
  r["ceiling"] = "pg_copy";
  r["runs"] = cfg.runs;
  r["batches"] = cfg.batches;
  r["rows_per_batch"] = cfg.rows;
  r["rows_per_s"] = round_to(rows_per_s, 0);
  auto runs = nlohmann::ordered_json::array();
  for (auto x : run_rates)
    runs.push_back(round_to(x, 0));
  r["run_rows_per_s"] = runs;
  r["batch_rows_per_s"] = {{"min", round_to(all_batches.front(), 0)},
                           {"median", round_to(median_of(all_batches), 0)},
                           {"max", round_to(all_batches.back(), 0)}};
  r["server_version"] = version;
  r["synchronous_commit"] = sync_commit;
  r["fsync"] = fsync;
  print_result(r);
  return true;
}

// -- bare HTTP ceiling --------------------------------------------------------

/// Settings of the bare HTTP measurement.
struct http_config {
  std::string url;         // empty: start the bare cpp-httplib server
  std::string method = "POST";
  std::string path = "/x";
  std::string name = "http"; // the RESULT line's ceiling name
  int64_t connections = 32;
  int64_t duration_s = 10;
  int64_t pool = 32;
  int64_t keep_alive_max = 1000;
  int64_t timeout_s = 30;
};

void http_client_loop(httplib::Client& cli, const http_config& cfg,
                      const std::string& body, bench_clock::time_point deadline,
                      loop_stats& stats) {
  stats.latency_us.reserve(static_cast<size_t>(cfg.duration_s) * 4000);
  while (bench_clock::now() < deadline) {
    auto res = cfg.method == "GET"
                 ? timed_get(cli, cfg.path, {}, stats)
                 : timed_post(cli, cfg.path, {}, body, "application/json",
                              stats);
    if (!res)
      std::this_thread::sleep_for(milliseconds{10});
  }
}

bool is_ok(int status) {
  return status >= 200 && status < 300;
}

bool run_http_ceiling(const http_config& cfg) {
  httplib::Server svr;
  std::thread server;
  auto url = cfg.url;
  auto body = sample_body_1k();
  if (url.empty()) {
    auto pool = static_cast<size_t>(cfg.pool);
    svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
    svr.set_tcp_nodelay(true);
    svr.set_keep_alive_max_count(static_cast<size_t>(cfg.keep_alive_max));
    svr.set_keep_alive_timeout(5);
    svr.Post("/x", [](const httplib::Request&, httplib::Response& res) {
      res.status = 202;
      res.set_content(R"({"accepted":10})", "application/json");
    });
    auto port = svr.bind_to_any_port("127.0.0.1");
    if (port <= 0) {
      std::cerr << "troupe_ceilings: error: cannot bind 127.0.0.1" << std::endl;
      return false;
    }
    server = std::thread{[&] { svr.listen_after_bind(); }};
    for (int i = 0; i < 500 && !svr.is_running(); ++i)
      std::this_thread::sleep_for(milliseconds{10});
    url = "http://127.0.0.1:" + std::to_string(port);
    std::cout << cfg.name << ": bare cpp-httplib " << CPPHTTPLIB_VERSION
              << " on " << url << ", pool " << cfg.pool;
  } else {
    std::cout << cfg.name << ": " << url;
  }
  std::cout << ", " << cfg.connections << " keep-alive connections, "
            << cfg.duration_s << " s, " << cfg.method << ' ' << cfg.path;
  if (cfg.method == "POST")
    std::cout << " with " << body.size() << " bytes";
  std::cout << std::endl;

  // Open every connection first, as troupe_load's device logins do, so the
  // timed loop measures requests rather than connection set-up (the server's
  // short listen backlog makes a burst of connects wait for SYN retries).
  auto n = static_cast<size_t>(cfg.connections);
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (size_t i = 0; i < n; ++i)
    clients.push_back(make_client(url, 5, static_cast<int>(cfg.timeout_s)));
  {
    std::vector<loop_stats> warm(n);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i)
      threads.emplace_back([&, i] {
        if (cfg.method == "GET")
          (void) timed_get(*clients[i], cfg.path, {}, warm[i]);
        else
          (void) timed_post(*clients[i], cfg.path, {}, body,
                            "application/json", warm[i]);
      });
    for (auto& t : threads)
      t.join();
  }
  std::vector<loop_stats> stats(n);
  auto t0 = bench_clock::now();
  auto deadline = t0 + std::chrono::seconds{cfg.duration_s};
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i)
      threads.emplace_back(http_client_loop, std::ref(*clients[i]),
                           std::cref(cfg), std::cref(body), deadline,
                           std::ref(stats[i]));
    for (auto& t : threads)
      t.join();
  }
  auto elapsed = seconds_since(t0);
  clients.clear();
  if (server.joinable()) {
    svr.stop();
    server.join();
  }

  loop_stats all;
  for (auto& s : stats)
    all.merge(std::move(s));
  auto answered = all.answered();
  uint64_t ok = 0;
  for (auto& [status, n] : all.by_status)
    if (is_ok(status))
      ok += n;
  auto lat = summarise(all.latency_us);
  auto req_per_s = answered / elapsed;
  std::cout << "  " << answered << " requests in " << round_to(elapsed, 2)
            << " s: " << round_to(req_per_s, 1)
            << " requests/s, latency ms p50 " << lat.p50 << " p90 " << lat.p90
            << " p99 " << lat.p99 << " max " << lat.max << ", " << answered - ok
            << " not 2xx, " << all.transport_error_count()
            << " without an answer" << std::endl;
  nlohmann::ordered_json r;
  r["tool"] = "troupe_ceilings";
  r["ceiling"] = cfg.name;
  r["url"] = cfg.url.empty() ? "bare cpp-httplib" : cfg.url;
  r["method"] = cfg.method;
  r["path"] = cfg.path;
  r["connections"] = cfg.connections;
  r["pool"] = cfg.pool;
  r["duration_s"] = round_to(elapsed, 3);
  r["body_bytes"] = body.size();
  r["requests"] = answered;
  r["requests_per_s"] = round_to(req_per_s, 1);
  r["latency_ms"] = to_json(lat);
  r["status"] = to_json(all.by_status);
  r["transport_errors"] = all.transport_error_count();
  print_result(r);
  if (ok == 0) {
    std::cerr << "troupe_ceilings: error: " << url
              << " answered no request with 2xx" << std::endl;
    return false;
  }
  return true;
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  options opts{
    "troupe_ceilings",
    "Measures this machine's ceilings for troupe's benchmarks: raw binary "
    "COPY\n"
    "into PostgreSQL (--pg-url) and a bare cpp-httplib server (--http), or\n"
    "another HTTP server such as nginx (--http-url) under the same client.",
    {
      {"pg-url", option_spec::text, "", "PostgreSQL URL; measures binary COPY"},
      {"pg-batches", option_spec::integer, "10", "COPY batches", 1, 100000},
      {"pg-rows", option_spec::integer, "10000", "rows per COPY batch", 1,
       10'000'000},
      {"pg-runs", option_spec::integer, "3",
       "COPY runs, each on a fresh table; the median counts", 1, 101},
      {"http", option_spec::flag, "", "measure a bare cpp-httplib server"},
      {"http-url", option_spec::text, "",
       "measure this HTTP server instead (e.g. nginx), same client"},
      {"http-method", option_spec::text, "POST", "GET or POST"},
      {"http-path", option_spec::text, "/x", "request path"},
      {"name", option_spec::text, "http", "ceiling name in the RESULT line"},
      {"connections", option_spec::integer, "32", "HTTP client connections", 1,
       4096},
      {"duration", option_spec::integer, "10", "HTTP seconds", 1, 86400},
      {"http-pool", option_spec::integer, "32", "server thread pool", 1, 4096},
      {"keep-alive-max", option_spec::integer, "1000",
       "requests per keep-alive connection (troupe's default)", 1, INT32_MAX},
      {"timeout", option_spec::integer, "30", "per-request timeout, s", 1,
       3600},
    }};
  auto err = opts.parse(argc, argv);
  if (!err.empty()) {
    std::cerr << "troupe_ceilings: " << err << "\n\n" << opts.usage();
    return exit_usage;
  }
  if (opts.help_requested()) {
    std::cout << opts.usage();
    return 0;
  }
  auto pg_url = opts.get("pg-url");
  bool http = opts.flag("http") || !opts.get("http-url").empty();
  if (opts.get("http-method") != "GET" && opts.get("http-method") != "POST") {
    std::cerr << "troupe_ceilings: --http-method must be GET or POST\n";
    return exit_usage;
  }
  if (pg_url.empty() && !http) {
    std::cerr << "troupe_ceilings: nothing to measure: give --pg-url URL "
                 "and/or --http\n\n"
              << opts.usage();
    return exit_usage;
  }
  bool ok = true;
  if (!pg_url.empty()) {
    pg_config cfg;
    cfg.url = pg_url;
    cfg.batches = opts.get_int("pg-batches");
    cfg.rows = opts.get_int("pg-rows");
    cfg.runs = opts.get_int("pg-runs");
    ok = run_pg_ceiling(cfg) && ok;
  }
  if (http) {
    http_config cfg;
    cfg.url = opts.get("http-url");
    cfg.method = opts.get("http-method");
    cfg.path = opts.get("http-path");
    cfg.name = opts.get("name");
    cfg.connections = opts.get_int("connections");
    cfg.duration_s = opts.get_int("duration");
    cfg.pool = opts.get_int("http-pool");
    cfg.keep_alive_max = opts.get_int("keep-alive-max");
    cfg.timeout_s = opts.get_int("timeout");
    ok = run_http_ceiling(cfg) && ok;
  }
  return ok ? 0 : exit_failure;
}
