#include "cluster-config/config.hpp"

#include <catch2/catch.hpp>

using namespace troupe::config;

namespace {

env_lookup no_env = [](const std::string&) -> std::optional<std::string> {
  return std::nullopt;
};

env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    if (auto it = vars.find(k); it != vars.end())
      return it->second;
    return std::nullopt;
  };
}

} // namespace

TEST_CASE("defaults form a valid configuration") {
  auto cfg = load_from_text("", {}, no_env);
  REQUIRE(cfg);
  CHECK(cfg->http.listen == "127.0.0.1:8080");
  CHECK(cfg->cluster.shards == 1024);
  CHECK(cfg->storage.database_url.empty());
}

TEST_CASE("file, environment and flags apply in order") {
  std::string file = R"(
# a comment
[http]
listen = "0.0.0.0:9000"   # trailing comment
io_threads = 16
[cluster]
listen = "127.0.0.1:9091"
join = ["a:1", 'b:2']
[storage]
data_dir = "/tmp/x"
database_url = "postgresql://h/db"
)";
  auto cfg = load_from_text(file, {}, no_env);
  REQUIRE(cfg);
  CHECK(cfg->http.listen == "0.0.0.0:9000");
  CHECK(cfg->http.io_threads == 16);
  CHECK(cfg->cluster.join == std::vector<std::string>{"a:1", "b:2"});
  auto env = env_of({{"TROUPE_HTTP_IO_THREADS", "32"},
                     {"TROUPE_DATABASE_URL", "postgresql://x/y"}});
  cfg = load_from_text(file, {}, env);
  REQUIRE(cfg);
  CHECK(cfg->http.io_threads == 32);
  CHECK(cfg->storage.database_url == "postgresql://x/y");
  cfg = load_from_text(file, {{"http.io_threads", "64"}}, env);
  REQUIRE(cfg);
  CHECK(cfg->http.io_threads == 64);
}

TEST_CASE("bad values are rejected naming the field") {
  auto cfg = load_from_text("[http]\nio_threads = \"many\"\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("http.io_threads") != std::string::npos);
  cfg = load_from_text("[http]\nlisten = \"nohost\"\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("http.listen") != std::string::npos);
  cfg = load_from_text("[http]\nmax_pipelined = 0\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("between") != std::string::npos);
  cfg = load_from_text("[bogus]\nx = 1\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("bogus.x") != std::string::npos);
  cfg = load_from_text("[http\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("line 1") != std::string::npos);
  cfg = load_from_text("", {}, env_of({{"TROUPE_LOG_LEVEL", "loud"}}));
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("log.level") != std::string::npos);
}

TEST_CASE("contradictions are rejected") {
  auto cfg = load_from_text("", {}, env_of({{"TROUPE_ADMIN_USER", "root"}}));
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("TROUPE_ADMIN_PASSWORD")
        != std::string::npos);
  cfg = load_from_text("[cluster]\nheartbeat_ms = 1000\nlease_ms = 1500\n",
                       {}, no_env);
  REQUIRE(!cfg);
  cfg = load_from_text("[cluster]\njoin = [\"a:1\"]\n", {}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("cluster.join") != std::string::npos);
  cfg = load_from_text("[cluster]\nlisten = \"127.0.0.1:9091\"\n", {},
                       no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("database_url") != std::string::npos);
  cfg = load_from_text("[cluster]\nlisten = \"127.0.0.1:9091\"\n", {},
                       env_of({{"TROUPE_DATABASE_URL", "postgresql://x/y"}}));
  CHECK(cfg);
}

TEST_CASE("the standby policy is one of three, and needs a database URL") {
  auto url = env_of({{"TROUPE_DATABASE_URL", "postgresql://x/y"}});
  for (auto p : {"none", "spool", "warn"}) {
    auto cfg = load_from_text("", {{"storage.standby_policy", p}}, url);
    REQUIRE(cfg);
    CHECK(cfg->storage.standby_policy == p);
  }
  auto cfg = load_from_text("", {{"storage.standby_policy", "always"}}, url);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("storage.standby_policy")
        != std::string::npos);
  // The embedded PostgreSQL has no standby to wait for.
  cfg = load_from_text("", {{"storage.standby_policy", "spool"}}, no_env);
  REQUIRE(!cfg);
  CHECK(describe(cfg.error()).find("embedded") != std::string::npos);
}

TEST_CASE("command line flags map to settings") {
  const char* argv[] = {"troupe", "serve", "--listen", "127.0.0.1:1",
                        "--data-dir=/tmp/d", "--set", "ingest.importers=3"};
  auto cl = parse_args(7, const_cast<char**>(argv));
  REQUIRE(cl);
  CHECK(cl->command == "serve");
  CHECK(cl->overrides.at("http.listen") == "127.0.0.1:1");
  CHECK(cl->overrides.at("storage.data_dir") == "/tmp/d");
  auto cfg = load(*cl, no_env);
  REQUIRE(cfg);
  CHECK(cfg->ingest.importers == 3);
  const char* bad[] = {"troupe", "--frobnicate"};
  CHECK(!parse_args(2, const_cast<char**>(bad)));
  const char* missing[] = {"troupe", "--listen"};
  CHECK(!parse_args(2, const_cast<char**>(missing)));
}

TEST_CASE("render round-trips through the parser") {
  auto cfg = load_from_text("[http]\nio_threads = 77\n", {}, no_env);
  REQUIRE(cfg);
  auto text = render(*cfg);
  auto again = load_from_text(text, {}, no_env);
  REQUIRE(again);
  CHECK(again->http.io_threads == 77);
}

TEST_CASE("render shows the database tier without passwords") {
  auto cfg = load_from_text(
    "[storage]\ndatabase_url = \"postgresql://troupe:s3cret@db1,db2/t"
    "?target_session_attrs=read-write\"\n"
    "replicas = [\"host=r1 password=hush dbname=t\", "
    "\"postgresql://u@r2/t?password=quiet&sslmode=require\"]\n"
    "max_replica_lag_ms = 250\n",
    {}, no_env);
  REQUIRE(cfg);
  CHECK(cfg->storage.replicas.size() == 2);
  auto text = render(*cfg);
  for (auto secret : {"s3cret", "hush", "quiet"})
    CHECK(text.find(secret) == std::string::npos);
  CHECK(text.find("postgresql://troupe:***@db1,db2/t") != std::string::npos);
  CHECK(text.find("host=r1 password=*** dbname=t") != std::string::npos);
  CHECK(text.find("password=***&sslmode=require") != std::string::npos);
  CHECK(redact_credentials("host=a password = 'two words' user=u")
        == "host=a password = *** user=u");
  CHECK(redact_credentials("password='it\\'s' x=1") == "password=*** x=1");
  CHECK(text.find("max_replica_lag_ms = 250") != std::string::npos);
  auto again = load_from_text(text, {}, no_env);
  REQUIRE(again);
  CHECK(again->storage.replicas.size() == 2);
}

TEST_CASE("TLS needs both files, and readable ones") {
  auto only_cert = load_from_text("[http]\ntls_cert = \"/etc/hostname\"\n", {},
                                  no_env);
  REQUIRE(!only_cert);
  CHECK(describe(only_cert.error()).find("http.tls_key") != std::string::npos);
  auto missing = load_from_text("[http]\ntls_cert = \"/nonexistent/c.pem\"\n"
                                "tls_key = \"/nonexistent/k.pem\"\n",
                                {}, no_env);
  REQUIRE(!missing);
  CHECK(describe(missing.error()).find("http.tls_cert") != std::string::npos);
}

TEST_CASE("the example configurations load") {
  for (auto file : {"single-node.toml", "db-tier.toml",
                    "three-node/node1.toml"}) {
    INFO(file);
    command_line cl;
    cl.config_file = std::string{TROUPE_CONFIG_DIR} + "/" + file;
    auto env = env_of({{"TROUPE_DATABASE_URL", "postgresql://x/y"}});
    auto cfg = load(cl, env);
    REQUIRE(cfg);
  }
  command_line cl;
  cl.config_file = std::string{TROUPE_CONFIG_DIR} + "/db-tier.toml";
  auto cfg = load(cl, no_env);
  REQUIRE(cfg);
  CHECK(cfg->storage.standby_policy == "spool");
  CHECK(cfg->storage.replicas.size() == 2);
}

TEST_CASE("a database list from the environment keeps multi-host entries whole") {
  CHECK(split_database_list("") == std::vector<std::string>{});
  CHECK(split_database_list("postgresql://a/t, postgresql://b/t")
        == std::vector<std::string>{"postgresql://a/t", "postgresql://b/t"});
  CHECK(split_database_list(
          "postgresql://u@h1:5432,h2:5433/t?target_session_attrs=read-write,"
          "postgres://[::1]:5432,[::2]:5432/t,host=r1,r2 port=1,2 dbname=t,"
          "host=r3 dbname=t")
        == std::vector<std::string>{
          "postgresql://u@h1:5432,h2:5433/t?target_session_attrs=read-write",
          "postgres://[::1]:5432,[::2]:5432/t", "host=r1,r2 port=1,2 dbname=t",
          "host=r3 dbname=t"});
  auto env = env_of(
    {{"TROUPE_DATABASE_URL", "postgresql://c1,c2/t"},
     {"TROUPE_STORAGE_SHARDS",
      "postgresql://s1:5432,s1b:5432/t?target_session_attrs=read-write"},
     {"TROUPE_STORAGE_REPLICAS", "postgresql://r1/t,postgresql://r2/t"}});
  auto cfg = load_from_text("", {}, env);
  REQUIRE(cfg);
  CHECK(cfg->storage.shards
        == std::vector<std::string>{
          "postgresql://s1:5432,s1b:5432/t?target_session_attrs=read-write"});
  CHECK(cfg->storage.replicas.size() == 2);
  // Other lists still split at every comma.
  cfg = load_from_text("", {{"http.trusted_proxies", "10.0.0.1,127.0.0.1"}},
                       no_env);
  REQUIRE(cfg);
  CHECK(cfg->http.trusted_proxies.size() == 2);
}
