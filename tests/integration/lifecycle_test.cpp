// Virtual-actor lifecycle and the embedded default: device and session
// actors passivate when idle and come back from PostgreSQL with the same
// state (batch marks, and the last sighting written on the way out);
// `troupe serve` with no database URL manages its own PostgreSQL.

#include "tests/integration/harness.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <catch2/catch.hpp>

using namespace troupe::test;

namespace {

/// Starts the troupe binary with `args`, stdout and stderr into `log`;
/// `in_child` adjusts the child's environment before the exec.
pid_t spawn_troupe(std::vector<std::string> args, const std::string& log,
                   const std::function<void()>& in_child = nullptr) {
  auto pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (in_child)
      in_child();
    args.insert(args.begin(), TROUPE_BINARY);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(TROUPE_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

std::string read_text(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

TEST_CASE("idle actors passivate and reload their state from PostgreSQL",
          "[lifecycle]") {
  node_options opts;
  opts.settings = {{"actors.passivate_after_s", "1"}};
  node n{opts};
  auto admin = n.admin_token();
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto ts = now_ms() - 5000;
  auto r = post_telemetry(n, dev.token,
                          {{"batch_id", 7},
                           {"points", {{{"metric", "temp"},
                                        {"value", 21.5},
                                        {"ts", ts}}}}});
  REQUIRE(r.status == 202);
  auto passivated = [&] {
    return metric(n, "troupe_actor_passivations_total{kind=\"device\"}")
             .value_or(0)
           >= 1;
  };
  REQUIRE(eventually(passivated, 20s));
  // A fresh actor answers from the state it loaded.
  auto d = n.get("/api/v1/devices/" + dev.id, admin);
  REQUIRE(d.status == 200);
  CHECK(d.body["latest"]["temp"]["value"] == 21.5);
  CHECK(d.body["latest"]["temp"]["ts"] == ts);
  // The batch-id mark came back too: the retry is still a duplicate...
  r = post_telemetry(n, dev.token,
                     {{"batch_id", 7}, {"values", {{"temp", 1.0}}}});
  CHECK(r.status == 200);
  CHECK(r.body["duplicate"] == true);
  // ...and the token is still valid, so the next batch is accepted.
  r = post_telemetry(n, dev.token,
                     {{"batch_id", 8}, {"values", {{"temp", 2.0}}}});
  CHECK(r.status == 202);
  // The admin session passivated as well and still authenticates.
  REQUIRE(eventually(
    [&] {
      return metric(n, "troupe_actor_passivations_total{kind=\"session\"}")
               .value_or(0)
             >= 1;
    },
    20s));
  CHECK(n.get("/api/v1/me", admin).status == 200);
}

TEST_CASE("a device's last sighting is stored when it passivates",
          "[lifecycle][ingest]") {
  // Uploads refresh devices.last_seen_ms only every few seconds; what the
  // actor saw since is written when it stops, so lists, the online filter
  // and silence alerts do not fall behind an idle device.
  node_options opts;
  opts.settings = {{"actors.passivate_after_s", "1"}};
  node n{opts};
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto stored = [&] {
    auto rows = n.db()->query("SELECT coalesce(last_seen_ms, -1) FROM devices"
                              " WHERE id = '" + dev.id + "'");
    REQUIRE(rows.size() == 1);
    return std::stoll(rows[0][0]);
  };
  auto upload = [&](int batch) {
    return post_telemetry(n, dev.token,
                          {{"batch_id", batch}, {"values", {{"temp", 1.0}}}});
  };
  // The login stored a sighting; the first upload is not due to refresh it.
  std::this_thread::sleep_for(50ms);
  auto before_upload = now_ms();
  TROUPE_REQUIRE_STATUS(upload(1), 202);
  CHECK(stored() < before_upload);
  REQUIRE(eventually(
    [&] {
      return metric(n, "troupe_actor_passivations_total{kind=\"device\"}")
               .value_or(0)
             >= 1;
    },
    20s));
  CHECK(eventually([&] { return stored() >= before_upload; }, 5s));
  auto d = n.get("/api/v1/devices/" + dev.id, n.admin_token());
  REQUIRE(d.status == 200);
  CHECK(d.body["last_seen_ms"].get<int64_t>() >= before_upload);
}

TEST_CASE("batch marks reload from the latest values, not only the devices "
          "row",
          "[lifecycle][ingest]") {
  // An upload refreshes its devices row (last_seen_ms) only every few
  // seconds; its batch mark rides on the latest values it writes. A device
  // reloaded from PostgreSQL must still know every batch it committed,
  // also one whose points were older than the stored latest value.
  node n;
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  auto ts = now_ms() - 60'000;
  auto upload = [&](int batch, const std::string& metric, int64_t at,
                    double value) {
    return post_telemetry(n, dev.token,
                          {{"batch_id", batch},
                           {"points", {{{"metric", metric},
                                        {"value", value},
                                        {"ts", at}}}}});
  };
  TROUPE_REQUIRE_STATUS(upload(1, "temp", ts, 21.5), 202);
  TROUPE_REQUIRE_STATUS(upload(2, "hum", ts, 40.0), 202);
  // Older than the stored latest temp: the value stays, the mark moves.
  TROUPE_REQUIRE_STATUS(upload(3, "temp", ts - 30'000, 19.0), 202);
  // The devices row was refreshed by the first upload only: the later
  // marks are on the latest rows alone.
  auto stored = n.db()->query("SELECT coalesce(batch_hwm, -1) FROM devices"
                              " WHERE id = '" + dev.id + "'");
  REQUIRE(stored.size() == 1);
  CHECK(std::stoll(stored[0][0]) < 3);
  // A restart: the device comes back from PostgreSQL alone.
  n.restart();
  for (int batch : {1, 2, 3}) {
    INFO("batch " << batch);
    auto r = upload(batch, "temp", now_ms(), 1.0);
    CHECK(r.status == 200);
    CHECK(r.body["duplicate"] == true);
  }
  TROUPE_CHECK_STATUS(upload(4, "temp", now_ms(), 2.0), 202);
  auto d = n.get("/api/v1/devices/" + dev.id, n.admin_token());
  REQUIRE(d.status == 200);
  CHECK(d.body["latest"]["hum"]["value"] == 40.0);
  CHECK(d.body["latest"]["temp"]["value"] == 2.0);
}

TEST_CASE("troupe serve without a database URL runs its own PostgreSQL",
          "[lifecycle][embedded]") {
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/troupe-embedded.XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::string dir = tmpl;
  // The server runs as the postgres user when we are root: let it in.
  fs::permissions(dir, fs::perms::all, fs::perm_options::replace);
  auto port = free_tcp_port();
  auto log = dir + "/node.log";
  auto pid = spawn_troupe({"serve", "--listen",
                           "127.0.0.1:" + std::to_string(port), "--data-dir",
                           dir + "/data"},
                          log, [] {
                            unsetenv("TROUPE_DATABASE_URL");
                            setenv("TROUPE_ADMIN_USER", "root-admin", 1);
                            setenv("TROUPE_ADMIN_PASSWORD", "embedded-Pw-1", 1);
                          });
  // Whatever fails below, the node (and its PostgreSQL) must not outlive
  // the test.
  struct reaper {
    pid_t pid;
    ~reaper() {
      if (pid <= 0 || waitpid(pid, nullptr, WNOHANG) == pid)
        return;
      kill(pid, SIGTERM);
      for (int i = 0; i < 300; ++i) {
        if (waitpid(pid, nullptr, WNOHANG) == pid)
          return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } guard{pid};
  httplib::Client c{"127.0.0.1", port};
  c.set_connection_timeout(2);
  c.set_read_timeout(30);
  auto ready = eventually(
    [&] {
      auto r = c.Get("/readyz");
      return r && r->status == 200;
    },
    90s);
  auto dump_log = [&] { return read_text(log); };
  INFO(dump_log());
  REQUIRE(ready);
  auto login = c.Post("/api/v1/login",
                      R"({"username":"root-admin","password":"embedded-Pw-1"})",
                      "application/json");
  INFO("login: " << (login ? std::to_string(login->status)
                            : httplib::to_string(login.error())));
  REQUIRE(login);
  CHECK(login->status == 200);
  CHECK(fs::exists(dir + "/data/postgres/PG_VERSION"));
  kill(pid, SIGTERM);
  int status = 0;
  bool exited = eventually(
    [&] { return waitpid(pid, &status, WNOHANG) == pid; }, 60s);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  guard.pid = -1;
  REQUIRE(exited);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The embedded server was stopped with the node.
  CHECK(!fs::exists(dir + "/data/postgres/postmaster.pid"));
  fs::remove_all(dir);
}

namespace {

/// Runs `troupe serve` with extra flags against a fresh database (or `on`)
/// and returns its exit code and output; it must exit on its own within
/// 60 s.
std::pair<int, std::string>
serve_until_exit(std::vector<std::string> flags,
                 const std::function<std::string(const std::string&)>& url_of
                 = nullptr,
                 const database* on = nullptr) {
  database fresh;
  auto& db = on ? *on : fresh;
  char tmpl[] = "/tmp/troupe-badcfg.XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::string dir = tmpl;
  auto log = dir + "/node.log";
  auto listen = "127.0.0.1:" + std::to_string(free_tcp_port());
  std::vector<std::string> args{"serve",          "--listen",
                                listen,           "--data-dir",
                                dir + "/data",    "--database-url",
                                url_of ? url_of(db.url()) : db.url()};
  args.insert(args.end(), flags.begin(), flags.end());
  auto pid = spawn_troupe(args, log);
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 600 && !exited; ++i) {
    exited = waitpid(pid, &status, WNOHANG) == pid;
    if (!exited)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  auto out = read_text(log);
  std::filesystem::remove_all(dir);
  return {exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

} // namespace

TEST_CASE("bad database-tier settings stop the node at start, named",
          "[lifecycle][config]") {
  // A replica URL that names a primary (here the node's own database).
  {
    database other;
    auto [rc, out] = serve_until_exit({"--set", "storage.replicas="
                                                  + other.url()});
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("storage.replicas[0]") != std::string::npos);
    CHECK(out.find("is not a replica") != std::string::npos);
  }
  // One libpq cannot parse.
  {
    auto [rc, out] = serve_until_exit(
      {"--set", "storage.replicas=postgresql://h:notaport:/x"});
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("storage.replicas[0]") != std::string::npos);
    CHECK(out.find("not a PostgreSQL connection string") != std::string::npos);
  }
  // The standby check needs to see pg_stat_replication's standbys: a role
  // without pg_monitor is refused at start, not left spooling for ever.
  {
    auto role = "nomon_" + std::to_string(getpid());
    database admin;
    admin.query("DROP ROLE IF EXISTS " + role);
    admin.query("CREATE ROLE " + role + " LOGIN");
    auto [rc, out] = serve_until_exit(
      {"--set", "storage.standby_policy=spool"}, [&](const std::string& url) {
        auto at = url.find("troupe@");
        REQUIRE(at != std::string::npos);
        return url.substr(0, at) + role + "@" + url.substr(at + 7);
      });
    admin.query("DROP ROLE IF EXISTS " + role);
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("GRANT pg_monitor TO " + role) != std::string::npos);
  }
  // A policy the node does not know.
  {
    auto [rc, out] = serve_until_exit({"--set", "storage.standby_policy=maybe"});
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("storage.standby_policy") != std::string::npos);
  }
  // Write shards: each database knows which shard it is, so listing the
  // catalog (or a shard twice, or out of order) as a shard is refused.
  {
    database catalog;
    auto [rc, out] = serve_until_exit(
      {"--set", "storage.shards=" + catalog.url()}, nullptr, &catalog);
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("storage.shards[0]") != std::string::npos);
    CHECK(out.find("(the catalog)") != std::string::npos);
  }
  // A shard the catalog placed devices on but the settings leave out.
  {
    auto catalog = std::make_shared<database>();
    database shard;
    {
      node_options opts;
      opts.settings.emplace_back("storage.shards", shard.url());
      node sharded{catalog, opts};
      sharded.stop();
    }
    auto [rc, out] = serve_until_exit({}, nullptr, catalog.get());
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("data shard 1") != std::string::npos);
    CHECK(out.find("storage.shards[0]") != std::string::npos);    // A fresh database may not take the number of the shard that holds
    // its devices.
    database empty;
    auto [rc2, out2] = serve_until_exit(
      {"--set", "storage.shards=" + empty.url()}, nullptr, catalog.get());
    INFO(out2);
    CHECK(rc2 != 0);
    CHECK(out2.find("not a data shard yet") != std::string::npos);
  }
}
