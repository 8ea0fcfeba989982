#include "runtime/node.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <optional>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include "cluster-config/config.hpp"
#include "runtime/crash.hpp"
#include "runtime/db_pool.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"
#include "storage/crypto.hpp"
#include "storage/embedded.hpp"
#include "storage/migrations.hpp"
#include "storage/pg.hpp"
#include "storage/queries.hpp"

namespace troupe::runtime {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

namespace {

/// Gives CAF's threads an alternate signal stack (see crash.hpp).
class signal_stack_hook : public caf::thread_hook {
public:
  void init(caf::actor_system&) override {
  }
  void thread_started() override {
    ensure_signal_stack();
  }
  void thread_terminates() override {
  }
};

} // namespace

struct node::impl {
  std::unique_ptr<storage::embedded_postgres> embedded;
  std::unique_ptr<caf::actor_system_config> caf_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::thread health;
  std::mutex mtx;
  std::condition_variable cv;
  bool health_stop = false;
};

node::node(config::node_config cfg)
  : cfg_(std::move(cfg)), impl_(std::make_unique<impl>()) {
  id_ = cfg_.cluster.node_id;
  if (id_.empty()) {
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    std::string h;
    uint16_t port = 0;
    config::split_host_port(cfg_.http.listen, h, port);
    id_ = std::string{host} + "-" + std::to_string(port);
  }
}

node::~node() = default;

void node::add_service(std::string name, start_fn start, stop_fn stop) {
  services_.push_back({std::move(name), std::move(start), std::move(stop)});
}

void node::on_reload(std::function<void()> fn) {
  reload_.push_back(std::move(fn));
}

void node::on_configure(std::function<void(caf::actor_system_config&)> fn) {
  configure_.push_back(std::move(fn));
}

cluster_view node::view() const {
  std::lock_guard<std::mutex> guard{view_mtx_};
  return view_;
}

void node::set_cluster_view(cluster_view v) {
  std::lock_guard<std::mutex> guard{view_mtx_};
  view_ = std::move(v);
}

caf::actor_system& node::system() {
  return *impl_->sys;
}

void node::set_membership(caf::actor a) {
  std::lock_guard<std::mutex> guard{actors_mtx_};
  membership_ = std::move(a);
}

caf::actor node::membership() const {
  std::lock_guard<std::mutex> guard{actors_mtx_};
  return membership_;
}

bool node::ready(std::string* why) const {
  auto set = [&](const char* reason) {
    if (why)
      *why = reason;
    return false;
  };
  if (stopping_)
    return set("node is shutting down");
  if (!services_up_)
    return set("node is starting");
  if (!db_ok_)
    return set("PostgreSQL is unreachable");
  if (clustered()) {
    auto v = view();
    if (v.fenced)
      return set("lease not renewed: serving no shard");
    if (!v.joined)
      return set("joining the cluster");
  }
  return true;
}

void node::request_stop() {
  kill(getpid(), SIGTERM);
}

caf::error node::start_storage() {
  if (!storage::crypto::init())
    return storage::make_storage_error(storage::errc::embedded_failed,
                                       "libsodium failed to initialize");
  database_url_ = cfg_.storage.database_url;
  if (!database_url_.empty())
    if (auto err = storage::check_url(database_url_))
      return config::make_config_error(config::errc::invalid_value,
                                       "storage.database_url: "
                                         + config::describe(err));
  if (database_url_.empty()) {
    impl_->embedded
      = std::make_unique<storage::embedded_postgres>(cfg_.storage.data_dir);
    auto url = impl_->embedded->start();
    if (!url)
      return url.error();
    database_url_ = *url;
  }
  shard_urls_ = {database_url_};
  for (auto& url : cfg_.storage.shards)
    shard_urls_.push_back(url);
  shard_ok_ = std::make_unique<std::atomic<bool>[]>(shard_urls_.size());
  shard_ready_.assign(shard_urls_.size(), false);
  storage::connection conn{database_url_, cfg_.storage.connect_timeout_s};
  // A configured database may still be starting: retry for a while.
  caf::error err;
  for (int attempt = 0; attempt < 30; ++attempt) {
    if (!(err = conn.ensure()))
      break;
    if (attempt == 0)
      log().warn("waiting for PostgreSQL: {}", config::describe(err));
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (err)
    return err;
  if (auto err = prepare_database(conn, "catalog"))
    return err;
  auto key = storage::secret_key(conn);
  if (!key)
    return key.error();
  secret_key_ = *key;
  // The catalog is data shard 0: a shard URL that names it is refused, and
  // a data shard named as the catalog too.
  if (auto r = conn.exec("INSERT INTO settings VALUES ('data_shard', '0')"
                         " ON CONFLICT DO NOTHING");
      !r)
    return r.error();
  if (auto r = conn.exec("SELECT value FROM settings WHERE key = 'data_shard'");
      !r)
    return r.error();
  else if (r->rows() != 1 || r->str(0, 0) != "0")
    return config::make_config_error(
      config::errc::contradiction,
      "storage.database_url: this database is data shard "
        + (r->rows() ? r->str(0, 0) : std::string{"?"})
        + ", not a catalog; name the catalog there");
  shard_ok_[0] = true;
  shard_ready_[0] = true;
  for (size_t i = 1; i < shard_urls_.size(); ++i)
    if (auto err = start_shard(conn, i))
      return err;
  // Every shard the catalog placed devices on must be listed.
  auto known = conn.exec("SELECT id, address FROM data_shards WHERE id >= $1"
                         " ORDER BY id",
                         {std::to_string(shard_urls_.size())});
  if (!known)
    return known.error();
  if (known->rows() > 0)
    return config::make_config_error(
      config::errc::contradiction,
      "storage.shards: data shard " + known->str(0, 0) + " ("
        + known->str(0, 1)
        + ") holds devices of this catalog but is not listed; list it as "
          "storage.shards["
        + std::to_string(known->i64(0, 0) - 1) + "] (the list only grows)");
  // Replicas, once every shard says which it is.
  auto system = conn.exec(
    "SELECT (SELECT system_identifier FROM pg_control_system())::text");
  if (!system)
    return system.error();
  replica_shard_.clear();
  for (size_t i = 0; i < cfg_.storage.replicas.size(); ++i) {
    auto s = check_replica(i, system->str(0, 0));
    if (!s)
      return s.error();
    replica_shard_.push_back(*s);
  }
  db_ok_ = true;
  return caf::none;
}

caf::error node::prepare_database(storage::connection& conn,
                                  const std::string& what) {
  if (auto err = check_standby_policy(conn))
    return err;
  int version = 0;
  if (auto err = storage::migrate(conn, version))
    return err;
  log().info("{} schema version={}", what, version);
  if (auto err = storage::maintain_partitions(
        conn, cfg_.ingest.max_age_days + 1, cfg_.storage.partition_days_ahead,
        cfg_.storage.retention_days))
    return err;
  auto shards = cfg_.cluster.shards;
  auto resharded = storage::sync_device_shards(
    conn, shards, [shards](const std::string& id) {
      return static_cast<int32_t>(shard_map::shard_of(id, shards));
    });
  if (!resharded)
    return resharded.error();
  if (*resharded > 0)
    log().info("{}: assigned shards to {} devices (shards={})", what,
               *resharded, shards);
  return caf::none;
}

caf::error node::start_shard(storage::connection& catalog, size_t i) {
  auto key = "storage.shards[" + std::to_string(i - 1) + "]";
  auto& url = shard_urls_[i];
  auto address = storage::url_address(url);
  auto fail = [&](const std::string& why) {
    return config::make_config_error(config::errc::invalid_value,
                                     key + " (" + address + "): " + why);
  };
  if (auto err = storage::check_url(url))
    return config::make_config_error(config::errc::invalid_value,
                                     key + ": " + config::describe(err));
  auto recorded = catalog.exec("SELECT 1 FROM data_shards WHERE id = $1",
                               {std::to_string(i)});
  if (!recorded)
    return recorded.error();
  storage::connection conn{url, cfg_.storage.connect_timeout_s};
  caf::error err;
  // A shard that served before may be down now: its devices answer 503
  // until it is back (the health loop prepares it then); a new one must
  // answer now.
  auto tries = recorded->rows() > 0 ? 1 : 30;
  for (int attempt = 0; attempt < tries; ++attempt) {
    if (!(err = conn.ensure()))
      break;
    if (attempt == 0 && tries > 1)
      log().warn("waiting for {} ({}): {}", key, address,
                 config::describe(err));
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (err) {
    if (tries > 1)
      return fail("does not answer: " + config::describe(err));
    log().warn("{} ({}) does not answer: its devices answer 503 until it is "
               "back: {}",
               key, address, config::describe(err));
    return caf::none;
  }
  if (auto err = prepare_shard(conn, i, recorded->rows() > 0))
    return fail(config::describe(err));
  if (auto r = catalog.exec(
        "INSERT INTO data_shards VALUES ($1, $2, $3) ON CONFLICT (id)"
        " DO UPDATE SET address = excluded.address",
        {std::to_string(i), address, std::to_string(now_ms())});
      !r)
    return r.error();
  return caf::none;
}

caf::error node::prepare_shard(storage::connection& conn, size_t i,
                               bool recorded) {
  auto what = "data shard " + std::to_string(i);
  // A shard the catalog knows must be that database, not a fresh one that
  // would claim its number (its devices' history and marks are elsewhere).
  if (recorded) {
    auto table = conn.exec("SELECT to_regclass('settings') IS NOT NULL");
    if (!table)
      return table.error();
    bool marked = false;
    if (table->boolean(0, 0)) {
      auto have = conn.exec("SELECT 1 FROM settings WHERE key = 'data_shard'");
      if (!have)
        return have.error();
      marked = have->rows() > 0;
    }
    if (!marked)
      return config::make_config_error(
        config::errc::contradiction,
        "this database is not a data shard yet, but the catalog already "
        "placed devices on data shard " + std::to_string(i)
          + "; name the database that holds them");
  }
  if (auto err = prepare_database(conn, what))
    return err;
  // The database knows which shard it is: a reordered list, a shard listed
  // twice or the catalog listed as a shard would mix devices' data.
  if (auto r = conn.exec("INSERT INTO settings VALUES ('data_shard', $1)"
                         " ON CONFLICT DO NOTHING",
                         {std::to_string(i)});
      !r)
    return r.error();
  auto r = conn.exec("SELECT value FROM settings WHERE key = 'data_shard'");
  if (!r)
    return r.error();
  if (r->rows() != 1 || r->str(0, 0) != std::to_string(i))
    return config::make_config_error(
      config::errc::contradiction,
      "this database is data shard " + (r->rows() ? r->str(0, 0) : "?")
        + (r->rows() && r->str(0, 0) == "0" ? " (the catalog)" : "")
        + ", not " + std::to_string(i)
        + "; storage.shards keeps its order and lists each shard once");
  shard_ready_[i] = true;
  shard_ok_[i] = true;
  return caf::none;
}

bool node::shard_up(size_t i) const {
  if (i == 0)
    return db_ok_.load();
  return i < shard_urls_.size() && shard_ok_[i].load();
}

caf::expected<size_t>
node::check_replica(size_t i, const std::string& catalog_system) const {
  auto& url = cfg_.storage.replicas[i];
  auto key = "storage.replicas[" + std::to_string(i) + "]";
  auto invalid = [&](const std::string& why) {
    return config::make_config_error(config::errc::invalid_value,
                                     key + ": " + why);
  };
  if (auto err = storage::check_url(url))
    return invalid(config::describe(err));
  auto address = storage::url_address(url);
  // One look now: a URL that names a primary is a mistake worth refusing;
  // one that does not answer may come later (the router takes it then).
  storage::connection conn{url, std::min<int64_t>(
                                  cfg_.storage.connect_timeout_s, 3)};
  auto r = conn.exec(
    "SELECT pg_is_in_recovery(),"
    " (SELECT system_identifier FROM pg_control_system())::text");
  if (!r) {
    log().warn("{} ({}) does not answer yet, taken for a replica of the "
               "catalog: {}",
               key, address, config::describe(r.error()));
    return size_t{0};
  }
  if (r->rows() != 1 || !r->boolean(0, 0))
    return invalid(address
                   + " is not a replica (pg_is_in_recovery() is false)");
  // Which shard: the one its database says it is (prepare_shard records
  // it on the primary; a new shard's row may take a moment to arrive).
  std::string shard;
  for (int attempt = 0; attempt < 20 && shard.empty(); ++attempt) {
    if (attempt > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto has = conn.exec("SELECT to_regclass('settings') IS NOT NULL");
    if (!has || !has->boolean(0, 0))
      continue;
    if (auto v = conn.exec(
          "SELECT value FROM settings WHERE key = 'data_shard'");
        v && v->rows() == 1)
      shard = v->str(0, 0);
  }
  std::optional<int64_t> n;
  if (!shard.empty()
      && shard.find_first_not_of("0123456789") == std::string::npos
      && shard.size() < 10)
    n = std::stoll(shard);
  if (!n || static_cast<size_t>(*n) >= shard_urls_.size())
    return invalid(address + " replays "
                   + (shard.empty() ? std::string{"no database of this tier"}
                                    : "data shard " + shard
                                        + ", which is not listed")
                   + "; list replicas of storage.database_url or of a "
                     "storage.shards entry");
  // The catalog's replicas are checked now; a data shard's by its monitor
  // against that shard's primary, on every probe.
  if (*n == 0 && r->str(0, 1) != catalog_system)
    return invalid(address
                   + " replays another database than storage.database_url "
                     "(system identifier "
                   + r->str(0, 1) + ", the catalog's " + catalog_system + ")");
  log().info("{} ({}) replays data shard {}", key, address, *n);
  return static_cast<size_t>(*n);
}

caf::error node::check_standby_policy(storage::connection& conn) const {
  auto& policy = cfg_.storage.standby_policy;
  if (policy == "none")
    return caf::none;
  // Without these the check after each commit always says "no standby":
  // every batch would be spooled (or warned about) for ever.
  auto r = conn.exec(
    "SELECT coalesce((SELECT rolsuper FROM pg_roles"
    "  WHERE rolname = current_user), false)"
    " OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),"
    " current_setting('synchronous_commit'), current_user");
  if (!r)
    return r.error();
  auto key = "storage.standby_policy=" + policy;
  if (!r->boolean(0, 0))
    return config::make_config_error(
      config::errc::contradiction,
      key + ": the role " + r->str(0, 2)
        + " cannot see the primary's standbys in pg_stat_replication; GRANT "
          "pg_monitor TO "
        + r->str(0, 2) + " (or set the policy to none)");
  auto sc = r->str(0, 1);
  if (sc != "on" && sc != "remote_apply")
    return config::make_config_error(
      config::errc::contradiction,
      key + ": synchronous_commit is " + sc
        + " for this role, so commits never wait for a standby; set it to "
          "on (or the policy to none)");
  return caf::none;
}

std::vector<replica_status> node::replicas() const {
  std::vector<replica_status> out;
  for (auto& b : boards_)
    for (auto& r : b->snapshot())
      out.push_back(std::move(r));
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return a.name.size() != b.name.size()
                                            ? a.name.size() < b.name.size()
                                            : a.name < b.name; });
  return out;
}

std::vector<standby_status> node::standbys() const {
  std::lock_guard<std::mutex> guard{view_mtx_};
  return standbys_;
}

bool node::pool_serves() {
  caf::scoped_actor self{system()};
  bool ok = false;
  db_job probe{[](storage::connection& c) -> caf::error {
    auto r = c.exec("SELECT 1");
    return r ? caf::none : r.error();
  }};
  self->request(db_, std::chrono::seconds(2), std::move(probe))
    .receive([&](ok_atom) { ok = true; }, [&](caf::error&) { ok = false; });
  return ok;
}

void node::check_shard(storage::connection& conn, size_t i, bool maintain,
                       storage::connection& catalog) {
  auto& up = metrics().get_gauge("troupe_database_up",
                                 "1 while PostgreSQL answers",
                                 "shard=\"" + std::to_string(i) + "\"");
  bool ok = static_cast<bool>(conn.exec("SELECT 1"));
  if (ok && !shard_ready_[i]) {
    // Down when the node started: migrate it now, before it serves.
    if (auto err = prepare_shard(conn, i, true)) {
      log().error("data shard {} ({}) cannot be prepared: {}", i,
                  storage::url_address(shard_urls_[i]),
                  config::describe(err));
      ok = false;
    }
  } else if (ok && maintain) {
    if (auto err = storage::maintain_partitions(
          conn, 2, cfg_.storage.partition_days_ahead,
          cfg_.storage.retention_days))
      log().error("data shard {}: partition maintenance failed: {}", i,
                  config::describe(err));
    // Copies of devices the catalog no longer has (a failed registration's
    // undo, a load that raced a delete) would show in lists: they go, ten
    // minutes after they were made.
    auto swept = storage::sweep_device_copies(
      conn, catalog, now_ms() - 10 * 60 * 1000);
    if (!swept)
      log().error("data shard {}: sweeping device copies failed: {}", i,
                  config::describe(swept.error()));
    else if (*swept > 0) {
      log().warn("data shard {}: deleted {} copies of devices the catalog "
                 "no longer has", i, *swept);
      metrics()
        .get_counter("troupe_device_copies_swept_total",
                     "Copies of deleted devices removed from a data shard",
                     "shard=\"" + std::to_string(i) + "\"")
        .inc(static_cast<uint64_t>(*swept));
    }
  }
  if (ok != shard_ok_[i].load())
    log().warn("data shard {} ({}) {}", i, storage::url_address(shard_urls_[i]),
               ok ? "reachable again" : "unreachable");
  shard_ok_[i] = ok;
  up.set(ok ? 1 : 0);
}

void node::health_loop() {
  ensure_signal_stack();
  storage::connection conn{database_url_, 2};
  auto& up = metrics().get_gauge("troupe_database_up",
                                 "1 while PostgreSQL answers");
  auto last_maintenance = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<storage::connection>> shard_conns;
  for (size_t i = 1; i < shard_urls_.size(); ++i)
    shard_conns.push_back(
      std::make_unique<storage::connection>(shard_urls_[i], 2));
  std::unique_lock<std::mutex> guard{impl_->mtx};
  while (!impl_->health_stop) {
    guard.unlock();
    // Ready means the pool serves, not only that PostgreSQL answers: a job
    // through the pool shows its connections recovered after a restart.
    bool ok = static_cast<bool>(conn.exec("SELECT 1")) && pool_serves();
    if (!ok) {
      std::lock_guard<std::mutex> lock{view_mtx_};
      standbys_.clear();
    } else {
      std::vector<standby_status> sb;
      if (auto r = conn.exec(
            "SELECT coalesce(application_name, ''), coalesce(state, ''),"
            " coalesce(sync_state, ''),"
            " coalesce((extract(epoch FROM replay_lag) * 1000)::bigint, 0)"
            " FROM pg_stat_replication ORDER BY application_name"))
        for (int i = 0; i < r->rows(); ++i)
          sb.push_back({r->str(i, 0), r->str(i, 1), r->str(i, 2),
                        r->i64(i, 3)});
      std::lock_guard<std::mutex> lock{view_mtx_};
      standbys_ = std::move(sb);
    }
    if (ok != db_ok_.load())
      log().warn("PostgreSQL {}", ok ? "reachable again" : "unreachable");
    db_ok_ = ok;
    up.set(ok ? 1 : 0);
    // Hourly, once the catalog answers (a failed turn is retried).
    auto maintain = ok
                    && std::chrono::steady_clock::now() - last_maintenance
                         > std::chrono::hours(1);
    if (maintain)
      last_maintenance = std::chrono::steady_clock::now();
    if (ok && maintain)
      if (auto err = storage::maintain_partitions(
            conn, 2, cfg_.storage.partition_days_ahead,
            cfg_.storage.retention_days))
        log().error("partition maintenance failed: {}",
                    config::describe(err));
    for (size_t i = 1; i < shard_urls_.size(); ++i)
      check_shard(*shard_conns[i - 1], i, maintain, conn);
    guard.lock();
    impl_->cv.wait_for(guard, std::chrono::seconds(1),
                       [&] { return impl_->health_stop; });
  }
}

int node::run() {
  // Signals go to sigwait below, not to arbitrary threads.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  setup_logging(cfg_.log.level, id_);
  install_crash_handler(id_);
  // Every device holds a connection: allow as many files as the system lets
  // this process have.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  started_ms_ = now_ms();
  log().info("starting troupe node id={} http={}", id_, cfg_.http.listen);
  if (auto err = start_storage()) {
    log().error("storage failed: {}", config::describe(err));
    if (impl_->embedded)
      impl_->embedded->stop();
    return 1;
  }
  // -- actor system ------------------------------------------------------------
  impl_->caf_cfg = std::make_unique<caf::actor_system_config>();
  auto& cc = *impl_->caf_cfg;
  auto cores = std::max(2u, std::thread::hardware_concurrency());
  // Work stealing spins idle workers: on a cluster node that tripled the CPU
  // per forwarded request, and on a small machine its sleeps and wake-ups
  // cost a single node ~20 % of its CPU per upload (bench/RESULTS.md), so
  // clusters and machines of up to 4 cores share one queue. The edge's I/O
  // threads (one per core) do a request's HTTP work, the actors the rest,
  // so the shared queue gets one thread per two cores: each handoff between
  // two workers is a lock and a wake-up, and on 2 cores one worker took
  // 17 % less CPU per upload and answered 11 % more (bench/RESULTS.md).
  auto& policy = cfg_.actors.scheduler_policy;
  auto sharing = policy == "sharing"
                 || (policy == "auto" && (clustered() || cores <= 4));
  auto threads = cfg_.actors.scheduler_threads > 0
                   ? cfg_.actors.scheduler_threads
                   : static_cast<size_t>(sharing ? std::max(1u, cores / 2)
                                                 : std::max(4u, cores));
  cc.set("scheduler.max-threads", threads);
  cc.set("scheduler.policy",
         sharing ? caf::atom("sharing") : caf::atom("stealing"));
  cc.set("logger.verbosity", caf::atom("quiet"));
  cc.add_thread_hook<signal_stack_hook>();
  if (clustered()) {
    // CAF 0.17 ships with heartbeats off: a frozen peer would never be
    // noticed and remote_actor could hang. Turn them on, and refuse nodes
    // of other applications.
    cc.load<caf::io::middleman>();
    auto hb = caf::timespan{std::chrono::milliseconds(cfg_.cluster.heartbeat_ms)};
    cc.set("middleman.heartbeat-interval", hb);
    cc.set("middleman.connection-timeout",
           caf::timespan{std::chrono::milliseconds(cfg_.cluster.lease_ms)});
    cc.set("middleman.app-identifiers", std::vector<std::string>{"troupe"});
    for (auto& fn : configure_)
      fn(cc);
  }
  impl_->sys = std::make_unique<caf::actor_system>(cc);
  db_ = spawn_db_pool(*impl_->sys, database_url_, cfg_.actors.db_workers,
                      cfg_.storage.connect_timeout_s);
  shard_dbs_ = {db_};
  for (size_t i = 1; i < shard_urls_.size(); ++i)
    shard_dbs_.push_back(spawn_db_pool(
      *impl_->sys, shard_urls_[i], cfg_.actors.db_workers,
      cfg_.storage.connect_timeout_s, 10000, "shard-" + std::to_string(i)));
  // Each data shard's reads go through a router over its own replicas.
  boards_.clear();
  shard_reads_.clear();
  for (size_t s = 0; s < shard_urls_.size(); ++s) {
    std::vector<replica_target> targets;
    for (size_t i = 0; i < cfg_.storage.replicas.size(); ++i)
      if (replica_shard_[i] == s)
        targets.push_back({"replica-" + std::to_string(i),
                           cfg_.storage.replicas[i]});
    boards_.push_back(std::make_shared<replica_board>());
    shard_reads_.push_back(spawn_read_router(
      *impl_->sys, s, shard_dbs_[s], shard_urls_[s], targets,
      cfg_.actors.db_workers, cfg_.storage.max_replica_lag_ms,
      cfg_.storage.connect_timeout_s, boards_.back()));
  }
  impl_->health = std::thread([this] { health_loop(); });
  // -- services ----------------------------------------------------------------
  size_t started = 0;
  int rc = 0;
  for (auto& s : services_) {
    log().info("starting service {}", s.name);
    if (auto err = s.start(*this)) {
      log().error("service {} failed to start: {}", s.name,
                  config::describe(err));
      rc = 1;
      break;
    }
    ++started;
  }
  if (rc == 0) {
    services_up_ = true;
    log().info("node ready id={} started_in_ms={}", id_,
               now_ms() - started_ms_);
    int sig = 0;
    for (;;) {
      sigwait(&sigs, &sig);
      if (sig != SIGHUP)
        break;
      log().info("received SIGHUP, reloading");
      for (auto& fn : reload_)
        fn();
    }
    log().info("received signal {}, draining", sig);
  }
  // -- shutdown, in reverse ----------------------------------------------------
  stopping_ = true;
  for (size_t i = started; i-- > 0;) {
    log().info("stopping service {}", services_[i].name);
    services_[i].stop(*this);
  }
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    impl_->health_stop = true;
  }
  impl_->cv.notify_all();
  impl_->health.join();
  set_membership(nullptr);
  for (size_t i = 0; i < shard_reads_.size(); ++i)
    if (shard_reads_[i] != shard_dbs_[i])
      caf::anon_send_exit(shard_reads_[i], caf::exit_reason::user_shutdown);
  shard_reads_.clear();
  caf::anon_send_exit(db_, caf::exit_reason::user_shutdown);
  for (size_t i = 1; i < shard_dbs_.size(); ++i)
    caf::anon_send_exit(shard_dbs_[i], caf::exit_reason::user_shutdown);
  shard_dbs_.clear();
  db_ = nullptr;
  impl_->sys->await_all_actors_done();
  impl_->sys.reset();
  if (impl_->embedded)
    impl_->embedded->stop();
  log().info("node stopped id={}", id_);
  spdlog::default_logger()->flush();
  return rc;
}

} // namespace troupe::runtime
