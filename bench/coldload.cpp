// troupe_coldload: how fast devices come back into memory from PostgreSQL
// after a restart or a failover. The device loader (actors/device_loader)
// gathers the ids of devices asked for while it loads and fetches them with
// storage::load_devices, four queries per batch; before, each device actor
// loaded devices one by one. This tool runs both on the same
// seeded database, one connection each, as the loader does:
//
//   seed    --devices devices with --metrics latest values and one token
//           each (what a device that has uploaded and logged in has);
//   single  load_devices of one id for --single of them, one after another;
//   batched load_devices for all of them in batches of --batch (the
//           loader's largest batch).
//
// It links troupe_storage, the code under test; the other benchmarks talk
// HTTP only. The database should be a scratch one: it is migrated and
// filled, never cleaned. See bench/README.md.

#include <chrono>
#include <csignal>
#include <iostream>

#include "bench/common.hpp"
#include "storage/migrations.hpp"
#include "storage/pg.hpp"
#include "storage/queries.hpp"

namespace {

using namespace troupe::bench;
namespace st = troupe::storage;

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "troupe_coldload: error: " << msg << std::endl;
  std::exit(exit_failure);
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

void must(const caf::error& err, const std::string& what) {
  if (err)
    fail(what + ": " + caf::to_string(err));
}

template <class T>
void must(const caf::expected<T>& r, const std::string& what) {
  if (!r)
    fail(what + ": " + caf::to_string(r.error()));
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  options opts{
    "troupe_coldload",
    "Seeds a scratch PostgreSQL database with devices, then loads them as\n"
    "troupe does after a restart: one by one (load_devices of one id) and in batches\n"
    "(load_devices). Reports devices loaded per second for both.",
    {
      {"pg-url", option_spec::text, "", "scratch database URL (required)"},
      {"devices", option_spec::integer, "20000", "devices to seed and load", 1,
       10'000'000},
      {"metrics", option_spec::integer, "2", "latest values per device", 0,
       100},
      {"batch", option_spec::integer, "1000", "devices per batched load", 1,
       100000},
      {"single", option_spec::integer, "2000", "devices loaded one by one", 0,
       10'000'000},
    }};
  auto err = opts.parse(argc, argv);
  if (!err.empty()) {
    std::cerr << "troupe_coldload: " << err << "\n\n" << opts.usage();
    return exit_usage;
  }
  if (opts.help_requested()) {
    std::cout << opts.usage();
    return 0;
  }
  if (opts.get("pg-url").empty()) {
    std::cerr << "troupe_coldload: --pg-url is required\n\n" << opts.usage();
    return exit_usage;
  }
  auto n = opts.get_int("devices");
  auto metrics = opts.get_int("metrics");
  auto batch = static_cast<size_t>(opts.get_int("batch"));
  auto single = std::min(opts.get_int("single"), n);

  st::connection c{opts.get("pg-url")};
  must(c.ensure(), "connecting");
  int version = 0;
  must(st::migrate(c, version), "migrating");

  // -- seed --
  auto prefix = "cold-" + random_hex(6) + "-";
  auto t_seed = bench_clock::now();
  must(st::insert_tenant(c, {"coldload-" + prefix, "coldload", now_ms()}),
       "tenant");
  std::vector<std::string> ids;
  ids.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids.push_back(prefix + std::to_string(i));
  constexpr size_t chunk = 5000;
  for (size_t at = 0; at < ids.size(); at += chunk) {
    auto end = std::min(ids.size(), at + chunk);
    auto keys = st::reserve_device_keys(c, end - at);
    must(keys, "reserving device keys");
    std::vector<st::new_device> ds;
    for (size_t i = at; i < end; ++i)
      ds.push_back({ids[i], ids[i], "coldload-" + prefix, "x", 0, 0,
                    (*keys)[i - at], {}});
    must(st::insert_devices(c, ds), "inserting devices");
  }
  // Latest values and a token per device, in SQL: the fastest way to make
  // the rows load_device(s) reads.
  for (int64_t m = 0; m < metrics; ++m) {
    auto name = "cold_m" + std::to_string(m);
    must(c.exec("INSERT INTO metrics (name) VALUES ($1) ON CONFLICT DO NOTHING",
                {name}),
         "metric");
    must(c.exec("INSERT INTO latest SELECT d.key, m.id, now(), 1.5 FROM "
                "devices d, metrics m WHERE d.id LIKE $1 AND m.name = $2",
                {prefix + "%", name}),
         "latest values");
  }
  must(c.exec("INSERT INTO device_tokens SELECT 'tok-' || id, id, $2 FROM "
              "devices WHERE id LIKE $1",
              {prefix + "%", std::to_string(now_ms() + 86'400'000)}),
       "tokens");
  must(c.exec("ANALYZE"), "analyze");
  auto seed_s = seconds_since(t_seed);
  std::cout << "seed: " << n << " devices, " << metrics
            << " latest values and a token each, in " << round_to(seed_s, 2)
            << " s" << std::endl;

  // -- one by one (the ids in another order than the batched pass) --
  double single_per_s = 0;
  if (single > 0) {
    auto t0 = bench_clock::now();
    for (int64_t i = 0; i < single; ++i) {
      auto& id = ids[static_cast<size_t>(n - 1 - i)];
      auto r = st::load_devices(c, {id}, now_ms());
      must(r, "load_devices (one)");
      if (r->empty())
        fail("load_devices: " + id + " not found");
    }
    single_per_s = single / seconds_since(t0);
    std::cout << "single: " << single << " devices, "
              << round_to(single_per_s, 0) << " per second" << std::endl;
  }

  // -- batched --
  auto t0 = bench_clock::now();
  size_t loaded = 0;
  size_t latest_rows = 0;
  for (size_t at = 0; at < ids.size(); at += batch) {
    std::vector<std::string> part(
      ids.begin() + static_cast<std::ptrdiff_t>(at),
      ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), at + batch)));
    auto r = st::load_devices(c, part, now_ms());
    must(r, "load_devices");
    loaded += r->size();
    for (auto& [id, row] : *r)
      latest_rows += row.latest.size();
  }
  auto batched_s = seconds_since(t0);
  if (loaded != ids.size())
    fail("load_devices found " + std::to_string(loaded) + " of "
         + std::to_string(ids.size()) + " devices");
  if (latest_rows != ids.size() * static_cast<size_t>(metrics))
    fail("load_devices returned " + std::to_string(latest_rows)
         + " latest values, expected "
         + std::to_string(ids.size() * static_cast<size_t>(metrics)));
  auto batched_per_s = loaded / batched_s;
  std::cout << "batched: " << loaded << " devices in batches of " << batch
            << ", " << round_to(batched_per_s, 0) << " per second ("
            << round_to(batched_s, 2) << " s)" << std::endl;

  nlohmann::ordered_json r;
  r["tool"] = "troupe_coldload";
  r["devices"] = n;
  r["metrics"] = metrics;
  r["batch"] = batch;
  r["single_devices"] = single;
  r["single_per_s"] = round_to(single_per_s, 0);
  r["batched_per_s"] = round_to(batched_per_s, 0);
  r["batched_s"] = round_to(batched_s, 3);
  print_result(r);
  return 0;
}
