// troupe_load: drives device telemetry into a running troupe node (or
// several: --url takes a comma-separated list, worker connection i uses
// url[i % n]) over HTTP and reports throughput, latency percentiles, answers
// by status and, with --pid (one pid or a comma-separated list), the CPU time
// of those processes together per 1,000 requests. See bench/README.md.
//
// Phases, each bounded by per-request timeouts and a phase deadline:
//
//   admin login -> tenant -> bulk register -> device logins -> telemetry
//
// Every device id carries a random run suffix, so repeated runs against the
// same database never collide with devices registered before.

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "bench/common.hpp"

namespace {

using namespace troupe::bench;
using json = nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr const char* json_type = "application/json";
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

/// The run's settings, read once from the command line.
struct load_config {
  std::string url;               // the first of `urls`: admin, registration
  std::vector<std::string> urls; // worker connection i uses urls[i % n]
  std::string admin_user;
  std::string admin_password;
  std::string tenant;
  std::string prefix;
  int64_t devices = 0;
  int64_t connections = 0;
  int64_t duration_s = 0;
  int64_t points = 0;
  int64_t metrics = 0;
  int64_t register_chunk = 0;
  int64_t timeout_s = 0;
  int64_t admin_timeout_s = 0;
  int64_t login_timeout_s = 0;
  bool detail = false;   // --mode detail: admin reads of device details
  std::vector<int> pids; // empty: no CPU accounting
};

/// One simulated device: credentials, auth header and the batch and
/// timestamp counters that must grow per device. Owned by one worker thread
/// once the device phases start.
struct device {
  std::string id;
  std::string secret;
  httplib::Headers auth;
  int64_t next_batch = 1;
  int64_t last_ts = 0;
  bool ready = false;
};

/// The first fatal problem any thread hit; later ones are dropped.
struct abort_state {
  std::atomic<bool> set{false};
  std::mutex mtx;
  std::string reason;

  void raise(std::string why) {
    std::lock_guard<std::mutex> guard{mtx};
    if (!set.load()) {
      reason = std::move(why);
      set = true;
    }
  }
};

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "troupe_load: error: " << msg << std::endl;
  std::exit(exit_failure);
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

std::string snippet(const std::string& body) {
  constexpr size_t max_len = 300;
  if (body.size() <= max_len)
    return body;
  return body.substr(0, max_len) + "...";
}

/// Says why a request did not get the expected answer, naming the URL when
/// nothing answered at all.
std::string describe(const httplib::Result& res, const std::string& url,
                     const std::string& what) {
  if (!res)
    return what + ": no answer from " + url + " ("
           + httplib::to_string(res.error())
           + "); is troupe running and listening there?";
  return what + ": HTTP " + std::to_string(res->status) + " "
         + snippet(res->body);
}

bool valid_id_chars(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
           || c == ':' || c == '-';
  });
}

/// Splits `text` at commas; empty items are kept (and rejected by callers).
std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    auto comma = text.find(',', start);
    out.push_back(text.substr(start, comma == std::string::npos
                                       ? std::string::npos
                                       : comma - start));
    if (comma == std::string::npos)
      return out;
    start = comma + 1;
  }
}

/// A pid in [1, INT32_MAX] written in decimal, or nothing.
std::optional<int> parse_pid(const std::string& text) {
  if (text.empty() || text.size() > 10
      || !std::all_of(text.begin(), text.end(),
                      [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  auto v = std::stoll(text);
  if (v < 1 || v > INT32_MAX)
    return std::nullopt;
  return static_cast<int>(v);
}

/// User plus system CPU seconds of every process in `pids`, each and in
/// total; nothing when any of them cannot be read.
struct cpu_sample {
  std::vector<double> each;
  double total = 0;
};

std::optional<cpu_sample> sample_cpu(const std::vector<int>& pids,
                                     int* missing = nullptr) {
  cpu_sample s;
  for (auto pid : pids) {
    auto v = process_cpu_seconds(pid);
    if (!v) {
      if (missing != nullptr)
        *missing = pid;
      return std::nullopt;
    }
    s.each.push_back(*v);
    s.total += *v;
  }
  return s;
}

std::string join_commas(const std::vector<std::string>& items) {
  std::string out;
  for (auto& i : items)
    out += (out.empty() ? "" : ",") + i;
  return out;
}

std::optional<load_config> parse_args(int argc, char** argv) {
  options opts{
    "troupe_load",
    "Registers --devices devices on a running troupe node, logs each in, then\n"
    "sends telemetry from --connections keep-alive connections for --duration\n"
    "seconds and reports requests/s, points/s, latency and status counts.",
    {
      {"url", option_spec::text, "http://127.0.0.1:8080",
       "troupe base URL, or a comma-separated list (connection i uses url[i % "
       "n]; admin and registration use the first)"},
      {"admin-user", option_spec::text, "admin", "admin username"},
      {"admin-password", option_spec::text, "", "admin password (required)"},
      {"tenant", option_spec::text, "bench", "tenant for the devices"},
      {"devices", option_spec::integer, "1000", "devices", 1, 10'000'000},
      {"connections", option_spec::integer, "32", "worker threads", 1, 4096},
      {"duration", option_spec::integer, "20", "telemetry seconds", 1, 86400},
      {"points", option_spec::integer, "10", "points per request", 1, 10000},
      {"metrics", option_spec::integer, "2", "distinct metrics", 1, 10000},
      {"prefix", option_spec::text, "bench-", "device id prefix"},
      {"pid", option_spec::text, "",
       "troupe pid for CPU time, or a comma-separated list (CPU is summed)"},
      {"register-chunk", option_spec::integer, "1000",
       "devices per bulk register request", 1, 10000},
      {"timeout", option_spec::integer, "30", "per-request timeout, s", 1,
       3600},
      {"admin-timeout", option_spec::integer, "600",
       "timeout of one bulk register request, s", 1, 3600},
      {"login-timeout", option_spec::integer, "600",
       "deadline of the device login phase, s", 1, 86400},
      {"mode", option_spec::text, "telemetry",
       "telemetry (devices upload; 202 counts) or detail (the admin reads "
       "GET /api/v1/devices/{id} round robin; 200 counts; no device logins)"},
    }};
  auto err = opts.parse(argc, argv);
  if (!err.empty()) {
    std::cerr << "troupe_load: " << err << "\n\n" << opts.usage();
    std::exit(exit_usage);
  }
  if (opts.help_requested()) {
    std::cout << opts.usage();
    return std::nullopt;
  }
  load_config cfg;
  for (auto u : split_commas(opts.get("url"))) {
    while (!u.empty() && u.back() == '/')
      u.pop_back();
    cfg.urls.push_back(u);
  }
  cfg.url = cfg.urls.front();
  cfg.admin_user = opts.get("admin-user");
  cfg.admin_password = opts.get("admin-password");
  cfg.tenant = opts.get("tenant");
  cfg.prefix = opts.get("prefix");
  cfg.devices = opts.get_int("devices");
  cfg.connections = opts.get_int("connections");
  cfg.duration_s = opts.get_int("duration");
  cfg.points = opts.get_int("points");
  cfg.metrics = opts.get_int("metrics");
  cfg.register_chunk = opts.get_int("register-chunk");
  cfg.timeout_s = opts.get_int("timeout");
  cfg.admin_timeout_s = opts.get_int("admin-timeout");
  cfg.login_timeout_s = opts.get_int("login-timeout");
  cfg.detail = opts.get("mode") == "detail";
  auto usage_error = [&](const std::string& msg) {
    std::cerr << "troupe_load: " << msg << "\n\n" << opts.usage();
    std::exit(exit_usage);
  };
  if (opts.given("pid")) {
    for (auto& p : split_commas(opts.get("pid"))) {
      auto pid = parse_pid(p);
      if (!pid)
        usage_error("--pid needs pids in [1, " + std::to_string(INT32_MAX)
                    + "], comma-separated, got '" + opts.get("pid") + "'");
      cfg.pids.push_back(*pid);
    }
  }
  for (auto& u : cfg.urls)
    if (!valid_base_url(u))
      usage_error("--url must look like http://host:port (or a "
                  "comma-separated list of those), got '"
                  + u + "'");
  if (cfg.admin_password.empty())
    usage_error("--admin-password is required");
  if (cfg.tenant.empty() || cfg.tenant.size() > 64
      || !valid_id_chars(cfg.tenant))
    usage_error("--tenant must match [A-Za-z0-9_.:-]{1,64}");
  // The run suffix adds 7 characters, the device number up to 8.
  if (!valid_id_chars(cfg.prefix) || cfg.prefix.size() > 64 - 7 - 8)
    usage_error("--prefix must match [A-Za-z0-9_.:-]{0,49}");
  if (opts.get("mode") != "telemetry" && !cfg.detail)
    usage_error("--mode must be telemetry or detail");
  if (cfg.metrics > cfg.points)
    cfg.metrics = cfg.points;
  return cfg;
}

// -- admin phases -------------------------------------------------------------

std::string admin_login(httplib::Client& cli, const load_config& cfg) {
  json body{{"username", cfg.admin_user}, {"password", cfg.admin_password}};
  auto res = cli.Post("/api/v1/login", body.dump(), json_type);
  if (!res || res->status != 200)
    fail(describe(res, cfg.url, "admin login as '" + cfg.admin_user + "'"));
  try {
    return json::parse(res->body).at("token").get<std::string>();
  } catch (const std::exception&) {
    fail("admin login: no \"token\" in the answer: " + snippet(res->body));
  }
}

void ensure_tenant(httplib::Client& cli, const load_config& cfg,
                   const httplib::Headers& auth) {
  json body{{"id", cfg.tenant}, {"name", cfg.tenant}};
  auto res = cli.Post("/api/v1/admin/tenants", auth, body.dump(), json_type);
  if (res && (res->status == 200 || res->status == 201 || res->status == 409))
    return;
  fail(describe(res, cfg.url, "creating tenant '" + cfg.tenant + "'"));
}

/// Reads `[{"id", "secret"}, ...]` or `{"items": [...]}` into `out`.
bool collect_secrets(const std::string& body,
                     std::unordered_map<std::string, std::string>& out) {
  try {
    auto j = json::parse(body);
    const json* items = &j;
    if (j.is_object() && j.contains("items"))
      items = &j.at("items");
    if (!items->is_array())
      return false;
    for (auto& d : *items)
      out[d.at("id").get<std::string>()] = d.at("secret").get<std::string>();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

/// Registers every device in chunks. Returns false on a 409 in the first
/// chunk, so the caller can retry with a fresh run prefix.
bool register_devices(httplib::Client& cli, const load_config& cfg,
                      const httplib::Headers& auth, std::vector<device>& devs) {
  std::unordered_map<std::string, std::string> secrets;
  secrets.reserve(devs.size());
  for (size_t first = 0; first < devs.size();
       first += static_cast<size_t>(cfg.register_chunk)) {
    auto last = std::min(devs.size(),
                         first + static_cast<size_t>(cfg.register_chunk));
    auto arr = json::array();
    for (size_t i = first; i < last; ++i)
      arr.push_back(
        {{"id", devs[i].id}, {"name", devs[i].id}, {"tenant", cfg.tenant}});
    auto res = cli.Post("/api/v1/admin/devices", auth, arr.dump(), json_type);
    if (res && res->status == 409 && first == 0)
      return false;
    if (!res || (res->status != 201 && res->status != 200))
      fail(describe(res, cfg.url,
                    "registering devices " + devs[first].id + ".."
                      + devs[last - 1].id));
    if (!collect_secrets(res->body, secrets))
      fail("registering devices: expected a JSON array of {\"id\", "
           "\"secret\"} (or {\"items\": [...]}), got: "
           + snippet(res->body));
  }
  for (auto& d : devs) {
    auto i = secrets.find(d.id);
    if (i == secrets.end())
      fail("registering devices: no secret returned for '" + d.id + "'");
    d.secret = i->second;
  }
  return true;
}

// -- device phases ------------------------------------------------------------

/// The devices worker `w` of `n` owns: w, w + n, w + 2n, ...
std::vector<device*> share_of(std::vector<device>& devs, size_t w, size_t n) {
  std::vector<device*> out;
  for (size_t i = w; i < devs.size(); i += n)
    out.push_back(&devs[i]);
  return out;
}

void login_worker(httplib::Client& cli, const std::string& url,
                  std::vector<device*> mine, bench_clock::time_point deadline,
                  abort_state& abort, loop_stats& stats,
                  std::string& first_error) {
  constexpr int max_attempts = 5;
  for (auto* d : mine) {
    json body{{"device_id", d->id}, {"secret", d->secret}};
    auto text = body.dump();
    for (int attempt = 1; attempt <= max_attempts; ++attempt) {
      if (abort.set || bench_clock::now() >= deadline)
        return;
      auto res = timed_post(cli, "/api/v1/device/login", {}, text, json_type,
                            stats);
      if (!res) {
        if (attempt == max_attempts)
          abort.raise(describe(res, url, "device login"));
        std::this_thread::sleep_for(milliseconds{100});
        continue;
      }
      if (res->status == 429 || res->status == 503) {
        honour_retry_after(*res, std::chrono::seconds{2}, deadline);
        continue;
      }
      if (res->status == 200) {
        try {
          auto token = json::parse(res->body).at("token").get<std::string>();
          d->auth = {{"Authorization", "Bearer " + token}};
          d->ready = true;
        } catch (const std::exception&) {
          if (first_error.empty())
            first_error = "device login: no \"token\" in " + snippet(res->body);
        }
      } else if (first_error.empty()) {
        first_error = describe(res, url, "device login of " + d->id);
      }
      break;
    }
  }
}

/// A small xorshift generator: cheap values, so the load generator spends its
/// CPU on requests rather than on random numbers.
struct xorshift {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

void build_batch(device& d, const load_config& cfg, xorshift& rng,
                 std::string& out) {
  // Timestamps grow per (device, metric), so no two points of a device share
  // a (metric, ts): slot k of metric m gets base + k.
  auto slots = (cfg.points + cfg.metrics - 1) / cfg.metrics;
  auto base = std::max(now_ms(), d.last_ts + 1);
  d.last_ts = base + slots - 1;
  out.clear();
  char buf[128];
  std::snprintf(buf, sizeof(buf), "{\"batch_id\":%lld,\"points\":[",
                static_cast<long long>(d.next_batch++));
  out += buf;
  for (int64_t k = 0; k < cfg.points; ++k) {
    auto value = static_cast<double>(rng.next() % 100000) / 100.0;
    std::snprintf(buf, sizeof(buf),
                  "%s{\"metric\":\"m%lld\",\"value\":%.2f,\"ts\":%lld}",
                  k == 0 ? "" : ",", static_cast<long long>(k % cfg.metrics),
                  value, static_cast<long long>(base + k / cfg.metrics));
    out += buf;
  }
  out += "]}";
}

void telemetry_worker(httplib::Client& cli, std::vector<device*> mine,
                      const load_config& cfg, size_t worker,
                      bench_clock::time_point deadline, loop_stats& stats) {
  mine.erase(std::remove_if(mine.begin(), mine.end(),
                            [](device* d) { return !d->ready; }),
             mine.end());
  if (mine.empty())
    return;
  stats.latency_us.reserve(static_cast<size_t>(cfg.duration_s) * 2000);
  xorshift rng{0x9e3779b97f4a7c15ULL * (worker + 1)};
  std::string body;
  body.reserve(static_cast<size_t>(cfg.points) * 64 + 64);
  size_t next = 0;
  while (bench_clock::now() < deadline) {
    auto& d = *mine[next];
    next = (next + 1) % mine.size();
    build_batch(d, cfg, rng, body);
    auto res = timed_post(cli, "/api/v1/device/telemetry", d.auth, body,
                          json_type, stats);
    if (!res) {
      // The server is gone or overloaded: back off instead of spinning.
      std::this_thread::sleep_for(milliseconds{50});
      continue;
    }
    if (res->status == 429 || res->status == 503)
      honour_retry_after(*res, std::chrono::seconds{1}, deadline);
  }
}

/// --mode detail: one admin session reads device details round robin, each
/// worker over its own share of the devices.
void detail_worker(httplib::Client& cli, std::vector<device*> mine,
                   const httplib::Headers& admin_auth,
                   bench_clock::time_point deadline, loop_stats& stats) {
  if (mine.empty())
    return;
  size_t next = 0;
  while (bench_clock::now() < deadline) {
    auto& d = *mine[next];
    next = (next + 1) % mine.size();
    auto res = timed_get(cli, "/api/v1/devices/" + d.id, admin_auth, stats);
    if (!res) {
      std::this_thread::sleep_for(milliseconds{50});
      continue;
    }
    if (res->status == 429 || res->status == 503)
      honour_retry_after(*res, std::chrono::seconds{1}, deadline);
  }
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  auto parsed = parse_args(argc, argv);
  if (!parsed)
    return 0;
  const auto cfg = *parsed;
  auto workers = static_cast<size_t>(std::min(cfg.connections, cfg.devices));

  std::optional<cpu_sample> cpu_before;
  if (int missing = 0; !cfg.pids.empty() && !sample_cpu(cfg.pids, &missing))
    fail("--pid " + std::to_string(missing)
         + ": cannot read /proc/PID/stat (no such process?)");

  std::cout << "troupe_load: url=" << join_commas(cfg.urls)
            << " tenant=" << cfg.tenant
            << " devices=" << cfg.devices << " connections=" << workers
            << " duration=" << cfg.duration_s << "s points=" << cfg.points
            << " metrics=" << cfg.metrics << std::endl;

  // -- admin: login, tenant, devices --
  auto admin = make_client(cfg.url, static_cast<int>(cfg.timeout_s),
                           static_cast<int>(cfg.timeout_s));
  if (!admin)
    fail("cannot use --url " + cfg.url);
  auto token = admin_login(*admin, cfg);
  httplib::Headers admin_auth{{"Authorization", "Bearer " + token}};
  ensure_tenant(*admin, cfg, admin_auth);

  // Registering hashes every secret (slowly, on purpose): allow it longer.
  admin->set_read_timeout(static_cast<time_t>(cfg.admin_timeout_s), 0);
  std::vector<device> devs(static_cast<size_t>(cfg.devices));
  std::string run_prefix;
  auto t_reg = bench_clock::now();
  constexpr int max_prefix_tries = 3;
  for (int attempt = 1;; ++attempt) {
    run_prefix = cfg.prefix + random_hex(6) + "-";
    for (size_t i = 0; i < devs.size(); ++i)
      devs[i].id = run_prefix + std::to_string(i);
    if (register_devices(*admin, cfg, admin_auth, devs))
      break;
    if (attempt == max_prefix_tries)
      fail("registering devices: 409 for " + std::to_string(max_prefix_tries)
           + " fresh prefixes in a row");
  }
  auto reg_s = seconds_since(t_reg);
  std::cout << "register: " << devs.size() << " devices as " << run_prefix
            << "N in " << round_to(reg_s, 2) << " s" << std::endl;

  // -- devices: login from every connection --
  std::vector<std::unique_ptr<httplib::Client>> clients;
  auto url_of = [&](size_t w) -> const std::string& {
    return cfg.urls[w % cfg.urls.size()];
  };
  for (size_t w = 0; w < workers; ++w) {
    clients.push_back(make_client(url_of(w), static_cast<int>(cfg.timeout_s),
                                  static_cast<int>(cfg.timeout_s)));
    if (!clients.back())
      fail("cannot use --url " + url_of(w));
  }
  abort_state abort;
  std::vector<loop_stats> login_stats(workers);
  std::vector<std::string> login_errors(workers);
  auto t_login = bench_clock::now();
  auto login_deadline = t_login + std::chrono::seconds{cfg.login_timeout_s};
  if (cfg.detail) {
    for (auto& d : devs)
      d.ready = true; // detail reads need no device session
  } else {
    std::vector<std::thread> threads;
    for (size_t w = 0; w < workers; ++w)
      threads.emplace_back(login_worker, std::ref(*clients[w]),
                           std::cref(url_of(w)), share_of(devs, w, workers),
                           login_deadline, std::ref(abort),
                           std::ref(login_stats[w]), std::ref(login_errors[w]));
    for (auto& t : threads)
      t.join();
  }
  auto login_s = seconds_since(t_login);
  if (abort.set)
    fail(abort.reason);
  auto ready = static_cast<size_t>(
    std::count_if(devs.begin(), devs.end(), [](auto& d) { return d.ready; }));
  loop_stats logins;
  for (auto& s : login_stats)
    logins.merge(std::move(s));
  auto login_lat = summarise(logins.latency_us);
  std::cout << "device login: " << ready << " ok, " << devs.size() - ready
            << " failed in " << round_to(login_s, 2) << " s ("
            << round_to(ready / std::max(login_s, 1e-9), 1) << "/s), p50 "
            << login_lat.p50 << " ms, p99 " << login_lat.p99 << " ms"
            << std::endl;
  for (auto& e : login_errors)
    if (!e.empty()) {
      std::cout << "  first failure: " << e << std::endl;
      break;
    }
  if (ready == 0)
    fail("no device could log in; nothing to measure");

  // -- telemetry --
  if (!cfg.pids.empty())
    cpu_before = sample_cpu(cfg.pids);
  std::vector<loop_stats> stats(workers);
  auto t0 = bench_clock::now();
  auto deadline = t0 + std::chrono::seconds{cfg.duration_s};
  {
    std::vector<std::thread> threads;
    for (size_t w = 0; w < workers; ++w)
      if (cfg.detail)
        threads.emplace_back(detail_worker, std::ref(*clients[w]),
                             share_of(devs, w, workers), std::cref(admin_auth),
                             deadline, std::ref(stats[w]));
      else
        threads.emplace_back(telemetry_worker, std::ref(*clients[w]),
                             share_of(devs, w, workers), std::cref(cfg), w,
                             deadline, std::ref(stats[w]));
    for (auto& t : threads)
      t.join();
  }
  auto elapsed = seconds_since(t0);
  std::optional<double> cpu_s;
  std::vector<double> cpu_each;
  if (cpu_before) {
    int missing = 0;
    if (auto after = sample_cpu(cfg.pids, &missing)) {
      cpu_s = after->total - cpu_before->total;
      for (size_t i = 0; i < cfg.pids.size(); ++i)
        cpu_each.push_back(after->each[i] - cpu_before->each[i]);
    } else {
      std::cerr << "troupe_load: warning: pid " << missing
                << " vanished during the run; no CPU figure" << std::endl;
    }
  }

  // Answered requests per base URL (workers are assigned round robin).
  std::vector<uint64_t> per_url(cfg.urls.size(), 0);
  for (size_t w = 0; w < workers; ++w)
    per_url[w % cfg.urls.size()] += stats[w].answered();

  loop_stats all;
  for (auto& s : stats)
    all.merge(std::move(s));
  auto answered = all.answered();
  auto ok = all.count(cfg.detail ? 200 : 202);
  auto rejected = all.count(429) + all.count(503);
  auto other = answered - ok - rejected;
  auto transport = all.transport_error_count();
  auto lat = summarise(all.latency_us);
  auto req_per_s = answered / elapsed;
  auto points_per_s
    = cfg.detail ? 0.0 : static_cast<double>(ok * cfg.points) / elapsed;

  std::cout << (cfg.detail ? "detail reads: " : "telemetry: ") << round_to(elapsed, 2) << " s\n"
            << "  requests      " << answered << " (" << round_to(req_per_s, 1)
            << "/s), " << (cfg.detail ? "200: " : "202: ") << ok << " (" << round_to(ok / elapsed, 1)
            << "/s)\n"
            << "  points        " << ok * cfg.points << " accepted ("
            << round_to(points_per_s, 1) << "/s)\n"
            << "  latency ms    p50 " << lat.p50 << "  p90 " << lat.p90
            << "  p99 " << lat.p99 << "  max " << lat.max << "\n"
            << "  status       ";
  for (auto& [code, n] : all.by_status)
    std::cout << ' ' << code << ": " << n;
  std::cout << "\n  rejected      " << rejected << " (429/503)\n"
            << "  errors        " << other << " other statuses, " << transport
            << " without an answer";
  for (auto& [name, n] : all.transport_errors)
    std::cout << " [" << name << ": " << n << "]";
  std::cout << '\n';
  if (cfg.urls.size() > 1) {
    std::cout << "  by url       ";
    for (size_t i = 0; i < cfg.urls.size(); ++i)
      std::cout << ' ' << cfg.urls[i] << ": " << per_url[i];
    std::cout << '\n';
  }
  if (cpu_s) {
    std::cout << "  troupe cpu    " << round_to(*cpu_s, 2) << " s ("
              << round_to(*cpu_s / elapsed, 2) << " cores), "
              << round_to(answered ? *cpu_s * 1000.0 / answered : 0.0, 4)
              << " s per 1,000 requests\n";
  }
  std::cout.flush();

  nlohmann::ordered_json r;
  r["tool"] = "troupe_load";
  r["mode"] = cfg.detail ? "detail" : "telemetry";
  r["url"] = cfg.url;
  r["urls"] = cfg.urls;
  r["requests_by_url"] = per_url;
  r["pids"] = cfg.pids;
  r["devices"] = cfg.devices;
  r["devices_ready"] = ready;
  r["connections"] = workers;
  r["duration_s"] = round_to(elapsed, 3);
  r["points_per_request"] = cfg.points;
  r["metrics"] = cfg.metrics;
  r["register_s"] = round_to(reg_s, 3);
  r["login_s"] = round_to(login_s, 3);
  r["requests"] = answered;
  r["requests_per_s"] = round_to(req_per_s, 1);
  r["accepted_requests_per_s"] = round_to(ok / elapsed, 1);
  r["points_per_s"] = round_to(points_per_s, 1);
  r["latency_ms"] = to_json(lat);
  r["status"] = to_json(all.by_status);
  r["accepted"] = ok;
  r["rejected"] = rejected;
  r["errors"] = other;
  r["transport_errors"] = transport;
  if (cpu_s) {
    r["cpu_s"] = round_to(*cpu_s, 3);
    auto each = nlohmann::ordered_json::array();
    for (auto c : cpu_each)
      each.push_back(round_to(c, 3));
    r["cpu_s_by_pid"] = each;
    r["cpu_cores"] = round_to(*cpu_s / elapsed, 3);
    r["cpu_s_per_1k_requests"]
      = round_to(answered ? *cpu_s * 1000.0 / answered : 0.0, 5);
  } else {
    r["cpu_s"] = nullptr;
    r["cpu_s_per_1k_requests"] = nullptr;
  }
  print_result(r);
  if (ok == 0) {
    std::cerr << "troupe_load: error: no request succeeded ("
              << (cfg.detail ? 200 : 202) << ")" << std::endl;
    return exit_failure;
  }
  return 0;
}
