#include "tests/integration/harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#ifndef TROUPE_BINARY
#  error "TROUPE_BINARY must name the troupe executable (set by CMake)"
#endif

extern char** environ;

namespace troupe::test {

namespace {

// -- live nodes, for log tails on failure --------------------------------------

// Never destroyed: the shared node is a static whose destructor runs at exit
// and must still find these.
std::mutex& registry_mutex() {
  static auto* m = new std::mutex;
  return *m;
}

std::set<node*>& registry() {
  static auto* nodes = new std::set<node*>;
  return *nodes;
}

/// Set once any test case failed: temp dirs are then kept for post-mortems.
std::atomic<bool> any_failure{false};

struct log_tail_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (stats.totals.assertions.failed == 0)
      return;
    any_failure = true;
    std::lock_guard<std::mutex> guard{registry_mutex()};
    for (auto* n : registry()) {
      std::cerr << "\n---- troupe node pid " << n->pid() << " port "
                << n->port() << ", log " << n->log_path()
                << " (tail) ----\n"
                << n->log_tail(80) << "---- end of log tail ----\n";
    }
  }
};

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw std::runtime_error("socket() failed: "
                             + std::string{std::strerror(errno)});
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    throw std::runtime_error("bind() failed: "
                             + std::string{std::strerror(errno)});
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string truncate(const std::string& s, size_t max) {
  if (s.size() <= max)
    return s;
  return s.substr(0, max) + "...(" + std::to_string(s.size()) + " bytes)";
}

bool is_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
}

bool is_snake_case(const std::string& s) {
  static const std::regex re{"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"};
  return std::regex_match(s, re);
}

} // namespace

CATCH_REGISTER_LISTENER(log_tail_listener)

// -- environment ---------------------------------------------------------------

std::string require_env(const char* name) {
  const char* val = std::getenv(name);
  if (val == nullptr || *val == '\0')
    throw std::runtime_error(
      std::string{"environment variable "} + name
      + " is not set: integration tests need a throwaway PostgreSQL; run "
        "scripts/test, or eval \"$(scripts/pg-temp)\" before ctest");
  return val;
}

int free_tcp_port() {
  return free_port();
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

std::string unique_id(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  return prefix + "-" + std::to_string(::getpid()) + "-"
         + std::to_string(++counter);
}

std::string rfc3339(int64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[80];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf,
                static_cast<int>(ms % 1000));
  return out;
}

bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  auto deadline = clock_type::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (clock_type::now() >= deadline)
      return false;
    std::this_thread::sleep_for(interval);
  }
}

std::string gzip(const std::string& data) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY)
      != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = deflate(&zs, Z_FINISH);
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc == Z_OK);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END)
    throw std::runtime_error("gzip failed");
  return out;
}

std::string gunzip(const std::string& data) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK)
    throw std::runtime_error("inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&zs);
  if (rc != Z_STREAM_END)
    throw std::runtime_error("gunzip: corrupt or truncated gzip data");
  return out;
}

// -- PostgreSQL ----------------------------------------------------------------

std::string with_dbname(const std::string& url, const std::string& dbname) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) // key=value conninfo: the last one wins
    return url + " dbname=" + dbname;
  auto start = scheme + 3;
  auto end = url.find_first_of("/?", start);
  if (end == std::string::npos)
    return url + "/" + dbname;
  if (url[end] == '?')
    return url.substr(0, end) + "/" + dbname + url.substr(end);
  auto path_end = url.find('?', end);
  return url.substr(0, end) + "/" + dbname
         + (path_end == std::string::npos ? "" : url.substr(path_end));
}

rows pg_query(const std::string& url, const std::string& sql) {
  const char* keys[] = {"dbname", "connect_timeout", nullptr};
  const char* vals[] = {url.c_str(), "5", nullptr};
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn{
    PQconnectdbParams(keys, vals, 1), &PQfinish};
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error("cannot connect to PostgreSQL at " + url + ": "
                             + PQerrorMessage(conn.get()));
  PQsetNoticeProcessor(
    conn.get(), [](void*, const char*) {}, nullptr);
  std::unique_ptr<PGresult, decltype(&PQclear)> res{
    PQexec(conn.get(), sql.c_str()), &PQclear};
  auto st = PQresultStatus(res.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
    throw std::runtime_error("query failed: " + truncate(sql, 200) + ": "
                             + PQerrorMessage(conn.get()));
  rows out;
  int n = PQntuples(res.get());
  int m = PQnfields(res.get());
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> row;
    row.reserve(static_cast<size_t>(m));
    for (int j = 0; j < m; ++j)
      row.emplace_back(PQgetvalue(res.get(), i, j));
    out.push_back(std::move(row));
  }
  return out;
}

database::database() {
  static std::atomic<int> counter{0};
  admin_url_ = require_env("TROUPE_TEST_DATABASE_URL");
  name_ = "troupe_it_" + std::to_string(::getpid()) + "_"
          + std::to_string(++counter);
  pg_query(admin_url_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  pg_query(admin_url_, "CREATE DATABASE " + name_);
  url_ = with_dbname(admin_url_, name_);
}

database::~database() {
  try {
    pg_query(admin_url_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::cerr << "warning: cannot drop test database " << name_ << ": "
              << e.what() << "\n";
  }
}

pg_server::pg_server() {
  dir_ = require_env("TROUPE_TEST_PG_DIR");
  bin_ = require_env("TROUPE_TEST_PG_BIN");
}

std::string pg_server::pg_ctl(const std::string& args) const {
  std::string cmd;
  if (::geteuid() == 0)
    cmd = "runuser -u postgres -- ";
  cmd += shell_quote(bin_ + "/pg_ctl") + " " + args;
  return cmd;
}

std::string pg_server::pidfile_line(int n) const {
  auto path = dir_ + "/data/postmaster.pid";
  std::ifstream pidfile{path};
  std::string line;
  for (int i = 0; i < n && std::getline(pidfile, line); ++i)
    ;
  if (!pidfile || !is_digits(line))
    throw std::runtime_error("no number on line " + std::to_string(n) + " of "
                             + path + ": is PostgreSQL running?");
  return line;
}

void pg_server::stop() {
  port_ = pidfile_line(4);
  auto cmd = pg_ctl("stop -w -t 60 -m fast -D " + shell_quote(dir_ + "/data"))
             + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0)
    throw std::runtime_error("pg_ctl stop failed: " + cmd);
  running_ = false;
}

void pg_server::start() {
  if (port_.empty())
    throw std::runtime_error("pg_server::start() before stop()");
  // Same options as scripts/pg-temp.
  auto opts = "-c listen_addresses=127.0.0.1 -c port=" + port_
              + " -c unix_socket_directories='' -c max_connections=300"
                " -c shared_buffers=256MB -c max_wal_size=4GB -c fsync=on";
  auto cmd = pg_ctl("start -w -t 60 -D " + shell_quote(dir_ + "/data")
                    + " -l " + shell_quote(dir_ + "/pg.log") + " -o "
                    + shell_quote(opts))
             + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0)
    throw std::runtime_error("pg_ctl start failed: " + cmd);
  running_ = true;
}

pid_t pg_server::postmaster() const {
  return static_cast<pid_t>(std::stol(pidfile_line(1)));
}

namespace {

/// The processes whose parent is `parent` (from /proc/PID/stat).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (auto& e : std::filesystem::directory_iterator{"/proc"}) {
    auto name = e.path().filename().string();
    if (!is_digits(name))
      continue;
    std::ifstream in{e.path() / "stat"};
    std::string stat;
    if (!std::getline(in, stat))
      continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    auto close = stat.rfind(')');
    if (close == std::string::npos)
      continue;
    std::istringstream rest{stat.substr(close + 1)};
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent)
      out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

} // namespace

void pg_server::freeze() {
  auto pm = postmaster();
  // The postmaster first, so it starts no process we would miss; then its
  // children until a look finds none that is not stopped yet.
  if (::kill(pm, SIGSTOP) != 0)
    throw std::runtime_error("cannot SIGSTOP the postmaster " +
                             std::to_string(pm) + ": " + std::strerror(errno));
  frozen_.push_back(pm);
  for (bool more = true; more;) {
    more = false;
    for (auto child : children_of(pm)) {
      if (std::find(frozen_.begin(), frozen_.end(), child) != frozen_.end())
        continue;
      if (::kill(child, SIGSTOP) == 0) {
        frozen_.push_back(child);
        more = true;
      }
    }
  }
}

void pg_server::thaw() {
  for (auto it = frozen_.rbegin(); it != frozen_.rend(); ++it)
    ::kill(*it, SIGCONT);
  frozen_.clear();
}

// -- HTTP ----------------------------------------------------------------------

bool response::has_header(const std::string& name) const {
  return headers.find(name) != headers.end();
}

std::string response::header(const std::string& name) const {
  auto i = headers.find(name);
  return i == headers.end() ? std::string{} : i->second;
}

std::string response::describe() const {
  if (status == 0)
    return "no response (" + transport_error + ")";
  return "status " + std::to_string(status) + ", body " + truncate(raw, 600);
}

std::string error_body_problem(const response& r) {
  if (!r.body.is_object())
    return "body is not a JSON object: " + truncate(r.raw, 300);
  auto i = r.body.find("error");
  if (i == r.body.end() || !i->is_object())
    return "body has no \"error\" object: " + truncate(r.raw, 300);
  auto code = i->find("code");
  if (code == i->end() || !code->is_string())
    return "error.code is missing or not a string";
  if (!is_snake_case(code->get<std::string>()))
    return "error.code is not snake_case: " + code->get<std::string>();
  auto msg = i->find("message");
  if (msg == i->end() || !msg->is_string() || msg->get<std::string>().empty())
    return "error.message is missing, empty or not a string";
  return "";
}

json list_items(const response& r) {
  if (!r.body.is_object() || !r.body.contains("items")
      || !r.body["items"].is_array())
    throw std::runtime_error("not a list response {\"items\": [...]}: "
                             + r.describe());
  if (!r.body.contains("next_cursor"))
    throw std::runtime_error("list response without next_cursor: "
                             + r.describe());
  return r.body["items"];
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// -- node ------------------------------------------------------------------------

node::node(node_options opts)
  : node(std::make_shared<database>(), std::move(opts)) {
  // nop
}

node::node(std::shared_ptr<database> db, node_options opts)
  : opts_(std::move(opts)), db_(std::move(db)) {
  init_dir();
  port_ = opts_.http_port;
  {
    std::lock_guard<std::mutex> guard{registry_mutex()};
    registry().insert(this);
  }
  try {
    start();
  } catch (...) {
    stop(5s);
    std::lock_guard<std::mutex> guard{registry_mutex()};
    registry().erase(this);
    throw;
  }
}

node::~node() {
  try {
    stop();
  } catch (...) {
    // Destructors do not throw.
  }
  {
    std::lock_guard<std::mutex> guard{registry_mutex()};
    registry().erase(this);
  }
  if (!any_failure && !dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  } else if (!dir_.empty()) {
    std::cerr << "note: kept troupe test dir " << dir_ << "\n";
  }
}

void node::init_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "troupe-it.XXXXXX")
                       .string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed: "
                             + std::string{std::strerror(errno)});
  dir_ = tmpl;
  data_dir_ = dir_ + "/data";
  log_path_ = dir_ + "/node.log";
  std::filesystem::create_directories(data_dir_);
}

std::string node::log_tail(size_t lines) const {
  std::ifstream in{log_path_};
  if (!in)
    return "(no log at " + log_path_ + ")\n";
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(std::move(line));
    if (tail.size() > lines)
      tail.pop_front();
  }
  std::string out;
  for (auto& l : tail)
    out += l + "\n";
  return out;
}

void node::spawn() {
  const std::string binary = TROUPE_BINARY;
  if (::access(binary.c_str(), X_OK) != 0)
    throw std::runtime_error(
      "the troupe executable is missing at " + binary
      + " (build it first: cmake --build build --target troupe)");
  if (port_ == 0)
    port_ = free_port();
  std::vector<std::string> args{binary,        "serve",
                                "--listen",    "127.0.0.1:" + std::to_string(port_),
                                "--data-dir",  data_dir_};
  for (auto& [key, val] : opts_.settings) {
    args.emplace_back("--set");
    args.emplace_back(key + "=" + val);
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv{*e};
    if (kv.rfind("TROUPE_DATABASE_URL=", 0) == 0
        || kv.rfind("TROUPE_ADMIN_USER=", 0) == 0
        || kv.rfind("TROUPE_ADMIN_PASSWORD=", 0) == 0)
      continue;
    env.emplace_back(kv);
  }
  env.push_back("TROUPE_DATABASE_URL=" + db_->url());
  env.push_back("TROUPE_ADMIN_USER=" + opts_.admin_user);
  env.push_back("TROUPE_ADMIN_PASSWORD=" + opts_.admin_password);
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  int log_fd = ::open(log_path_.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    throw std::runtime_error("cannot open " + log_path_ + ": "
                             + std::strerror(errno));
  std::string banner = "==== harness: starting";
  for (auto& a : args)
    banner += " " + a;
  banner += " ====\n";
  [[maybe_unused]] auto n = ::write(log_fd, banner.data(), banner.size());
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    throw std::runtime_error("fork failed: "
                             + std::string{std::strerror(errno)});
  }
  if (pid == 0) {
    // The node must not outlive a crashed test.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0)
      ::dup2(null_fd, STDIN_FILENO);
    for (int fd = 3; fd < 4096; ++fd)
      ::close(fd);
    ::execve(argv[0], argv.data(), envp.data());
    const char msg[] = "harness: execve failed\n";
    [[maybe_unused]] auto k = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  pid_ = pid;
}

void node::start() {
  if (pid_ > 0)
    throw std::runtime_error("node::start(): already running");
  for (int attempt = 0;; ++attempt) {
    spawn();
    auto deadline = clock_type::now() + opts_.ready_timeout;
    std::string last = "no answer yet";
    auto cli = http();
    cli.set_connection_timeout(1, 0);
    cli.set_read_timeout(2, 0);
    cli.set_tcp_nodelay(true);
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        auto tail = log_tail(40);
        // Someone took the port between free_port() and bind: try another.
        if (attempt < 2 && tail.find("in use") != std::string::npos) {
          port_ = 0;
          break;
        }
        throw std::runtime_error(
          "troupe exited during startup ("
          + (WIFEXITED(status)
               ? "exit status " + std::to_string(WEXITSTATUS(status))
               : "signal " + std::to_string(WTERMSIG(status)))
          + "); log " + log_path_ + " ends with:\n" + tail);
      }
      if (auto res = cli.Get("/readyz")) {
        if (res->status == 200) {
          admin_token_.clear();
          return;
        }
        last = "status " + std::to_string(res->status) + " "
               + truncate(res->body, 200);
      } else {
        last = httplib::to_string(res.error());
      }
      if (clock_type::now() >= deadline) {
        kill();
        throw std::runtime_error(
          "troupe not ready within "
          + std::to_string(opts_.ready_timeout.count())
          + " s (last /readyz: " + last + "); log " + log_path_
          + " ends with:\n" + log_tail(40));
      }
      std::this_thread::sleep_for(50ms);
    }
  }
}

namespace {

/// Prints where every thread of `pid` is (gdb, where installed): what a
/// node stuck in its shutdown waits for, in the test's output.
void dump_stacks(pid_t pid) {
  if (std::system("command -v gdb >/dev/null 2>&1") != 0) {
    std::cerr << "(no gdb: no stacks)\n";
    return;
  }
  auto cmd = "timeout 60 gdb -p " + std::to_string(pid)
             + " -batch -ex 'thread apply all bt 12' 2>/dev/null"
               " | grep -E '^(Thread|#)' | head -n 400 1>&2";
  (void) std::system(cmd.c_str());
}

} // namespace

int node::stop(std::chrono::seconds timeout) {
  if (pid_ <= 0)
    return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  auto deadline = clock_type::now() + timeout;
  bool exited = false;
  while (clock_type::now() < deadline) {
    auto rc = ::waitpid(pid_, &status, WNOHANG);
    if (rc == pid_ || (rc < 0 && errno == ECHILD)) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  if (!exited) {
    std::cerr << "warning: troupe (pid " << pid_ << ") ignored SIGTERM for "
              << timeout.count() << " s; its threads, then SIGKILL\n";
    dump_stacks(pid_);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

void node::kill() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void node::restart() {
  stop();
  start();
}

bool node::running() {
  if (pid_ <= 0)
    return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

httplib::Client node::http() const {
  httplib::Client cli{(opts_.tls ? "https://127.0.0.1:" : "http://127.0.0.1:")
                      + std::to_string(port_)};
  // The tests' certificates are self-signed.
  cli.enable_server_certificate_verification(false);
  cli.set_tcp_nodelay(true);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(30, 0);
  cli.set_write_timeout(30, 0);
  return cli;
}

response node::request(const std::string& method, const std::string& path,
                       const std::string& body, const std::string& content_type,
                       const headers& extra, const std::string& token,
                       std::chrono::seconds read_timeout) const {
  auto cli = http();
  cli.set_read_timeout(static_cast<time_t>(read_timeout.count()), 0);
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers = extra;
  if (!token.empty() && req.headers.find("Authorization") == req.headers.end())
    req.headers.emplace("Authorization", "Bearer " + token);
  bool has_body = !body.empty() || method == "POST" || method == "PUT"
                  || method == "PATCH";
  if (has_body) {
    req.body = body;
    if (!content_type.empty()
        && req.headers.find("Content-Type") == req.headers.end())
      req.headers.emplace("Content-Type", content_type);
  }
  auto t0 = clock_type::now();
  auto res = cli.send(req);
  response r;
  r.elapsed_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (!res) {
    r.transport_error = httplib::to_string(res.error());
    return r;
  }
  r.status = res->status;
  r.raw = res->body;
  r.headers = res->headers;
  r.body = json::parse(r.raw, nullptr, false);
  if (r.body.is_discarded())
    r.body = nullptr;
  return r;
}

response node::get(const std::string& path, const std::string& token,
                   const headers& extra,
                   std::chrono::seconds read_timeout) const {
  return request("GET", path, "", "", extra, token, read_timeout);
}

response node::post(const std::string& path, const json& body,
                    const std::string& token, const headers& extra) const {
  return request("POST", path, body.dump(), "application/json", extra, token);
}

response node::patch(const std::string& path, const json& body,
                     const std::string& token) const {
  return request("PATCH", path, body.dump(), "application/json", {}, token);
}

response node::del(const std::string& path, const std::string& token) const {
  return request("DELETE", path, "", "", {}, token);
}

void node::fail(const std::string& what, const response& r) const {
  throw std::runtime_error(what + ": " + r.describe() + "\nlog " + log_path_
                           + " ends with:\n" + log_tail(30));
}

std::string node::login(const std::string& username,
                        const std::string& password) const {
  auto r = post("/api/v1/login",
                {{"username", username}, {"password", password}});
  if (r.status != 200 || !r.body.is_object() || !r.body.contains("token")
      || !r.body["token"].is_string())
    fail("login of " + username + " failed", r);
  return r.body["token"].get<std::string>();
}

std::string node::login_admin() const {
  return login(opts_.admin_user, opts_.admin_password);
}

const std::string& node::admin_token() {
  if (admin_token_.empty())
    admin_token_ = login_admin();
  return admin_token_;
}

void node::create_tenant(const std::string& admin_token, const std::string& id,
                         const std::string& name) const {
  auto r = post("/api/v1/admin/tenants",
                {{"id", id}, {"name", name.empty() ? "Tenant " + id : name}},
                admin_token);
  if (r.status != 201 && r.status != 200)
    fail("creating tenant " + id + " failed", r);
}

void node::create_user(const std::string& admin_token,
                       const std::string& username, const std::string& password,
                       const std::string& role,
                       const std::string& tenant) const {
  json body{{"username", username},
            {"password", password},
            {"role", role},
            {"tenant", tenant}};
  auto r = post("/api/v1/admin/users", body, admin_token);
  if (r.status != 201 && r.status != 200)
    fail("creating user " + username + " failed", r);
}

namespace {

/// The per-device entries of a registration response: a plain array, or an
/// object holding one under "items" or "devices", or a single object.
json registration_entries(const json& body) {
  if (body.is_array())
    return body;
  if (body.is_object()) {
    for (auto key : {"items", "devices"})
      if (body.contains(key) && body[key].is_array())
        return body[key];
    return json::array({body});
  }
  return json::array();
}

} // namespace

std::string node::register_device(const std::string& admin_token,
                                  const std::string& id,
                                  const std::string& tenant,
                                  const std::string& name) const {
  json body{{"id", id},
            {"name", name.empty() ? "Device " + id : name},
            {"tenant", tenant}};
  auto r = post("/api/v1/admin/devices", body, admin_token);
  if (r.status != 201)
    fail("registering device " + id + " failed", r);
  auto entries = registration_entries(r.body);
  for (auto& e : entries)
    if (e.is_object() && e.value("id", id) == id && e.contains("secret")
        && e["secret"].is_string())
      return e["secret"].get<std::string>();
  fail("registering device " + id + ": no secret in the answer", r);
}

std::vector<device_credentials>
node::register_devices(const std::string& admin_token,
                       const std::vector<std::string>& ids,
                       const std::string& tenant) const {
  json body = json::array();
  for (auto& id : ids)
    body.push_back({{"id", id}, {"name", "Device " + id}, {"tenant", tenant}});
  auto r = post("/api/v1/admin/devices", body, admin_token);
  if (r.status != 201)
    fail("bulk registration failed", r);
  auto entries = registration_entries(r.body);
  std::vector<device_credentials> out;
  for (auto& id : ids) {
    auto i = std::find_if(entries.begin(), entries.end(), [&](const json& e) {
      return e.is_object() && e.contains("id") && e["id"] == id
             && e.contains("secret") && e["secret"].is_string();
    });
    if (i == entries.end())
      fail("bulk registration: no secret for " + id, r);
    out.push_back({id, (*i)["secret"].get<std::string>()});
  }
  return out;
}

std::string node::device_login(const std::string& id,
                               const std::string& secret) const {
  auto r = post("/api/v1/device/login", {{"device_id", id}, {"secret", secret}});
  if (r.status != 200 || !r.body.is_object() || !r.body.contains("token")
      || !r.body["token"].is_string())
    fail("device login of " + id + " failed", r);
  return r.body["token"].get<std::string>();
}

node& shared_node() {
  static std::unique_ptr<node> instance;
  static std::string failure;
  if (instance)
    return *instance;
  if (!failure.empty())
    throw std::runtime_error("(the shared node failed to start earlier) "
                             + failure);
  try {
    instance = std::make_unique<node>();
  } catch (const std::exception& e) {
    failure = e.what();
    throw;
  }
  return *instance;
}

std::string make_tenant(node& n) {
  auto id = unique_id("tenant");
  n.create_tenant(n.admin_token(), id);
  return id;
}

user_login make_user(node& n, const std::string& role,
                     const std::string& tenant) {
  user_login u;
  u.username = unique_id(role);
  u.password = "Pw-" + u.username + "-x9!";
  n.create_user(n.admin_token(), u.username, u.password, role, tenant);
  u.token = n.login(u.username, u.password);
  return u;
}

device_login_info make_device(node& n, const std::string& tenant) {
  device_login_info d;
  d.id = unique_id("dev");
  d.secret = n.register_device(n.admin_token(), d.id, tenant);
  d.token = n.device_login(d.id, d.secret);
  return d;
}

response post_telemetry(const node& n, const std::string& device_token,
                        const json& body) {
  return n.post("/api/v1/device/telemetry", body, device_token);
}

json history(const node& n, const std::string& token,
             const std::string& device, const std::string& metric,
             const std::string& extra_query) {
  auto r = n.get("/api/v1/devices/" + device + "/telemetry?metric="
                   + url_encode(metric) + extra_query,
                 token);
  if (r.status != 200 || !r.body.is_object() || !r.body.contains("points")
      || !r.body["points"].is_array())
    n.fail("history of " + device + "/" + metric + " failed", r);
  return r.body["points"];
}

json wait_history(const node& n, const std::string& token,
                  const std::string& device, const std::string& metric,
                  size_t min_points, const std::string& extra_query,
                  std::chrono::milliseconds timeout) {
  json pts = json::array();
  eventually(
    [&] {
      pts = history(n, token, device, metric, extra_query);
      return pts.size() >= min_points;
    },
    timeout);
  return pts;
}

bool has_point(const json& points, int64_t ts, double value) {
  for (auto& p : points) {
    if (!p.is_array() || p.size() < 2 || !p[0].is_number()
        || !p[1].is_number())
      continue;
    if ((ts < 0 || p[0].get<int64_t>() == ts)
        && std::fabs(p[1].get<double>() - value) < 1e-9)
      return true;
  }
  return false;
}

std::vector<std::string> ids_of(const json& items) {
  std::vector<std::string> out;
  for (auto& i : items)
    if (i.is_object() && i.contains("id") && i["id"].is_string())
      out.push_back(i["id"].get<std::string>());
  return out;
}

// -- /metrics -------------------------------------------------------------------

namespace {

/// Calls `on(line)` for each sample line of Prometheus text (not comments).
template <class F>
void each_sample(const std::string& text, F on) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#')
      on(line);
}

/// The sample's value: what follows the last space.
std::optional<double> sample_value(const std::string& line) {
  auto at = line.rfind(' ');
  if (at == std::string::npos)
    return std::nullopt;
  try {
    return std::stod(line.substr(at + 1));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

} // namespace

std::optional<double> metric_value(const std::string& text,
                                   const std::string& series) {
  std::optional<double> out;
  each_sample(text, [&](const std::string& line) {
    if (!out && line.size() > series.size()
        && line.compare(0, series.size(), series) == 0
        && line[series.size()] == ' ')
      out = sample_value(line);
  });
  return out;
}

std::optional<double> metric(const node& n, const std::string& series) {
  auto r = n.get("/metrics", "", {}, 10s);
  if (r.status != 200)
    return std::nullopt;
  return metric_value(r.raw, series);
}

double metric_sum(const std::string& text, const std::string& prefix) {
  auto bare = prefix.find('{') == std::string::npos;
  double sum = 0;
  each_sample(text, [&](const std::string& line) {
    if (line.size() <= prefix.size()
        || line.compare(0, prefix.size(), prefix) != 0)
      return;
    auto next = line[prefix.size()];
    if (bare && next != ' ' && next != '{')
      return;
    sum += sample_value(line).value_or(0);
  });
  return sum;
}

double metric_sum(const node& n, const std::string& prefix) {
  auto r = n.get("/metrics", "", {}, 10s);
  return r.status == 200 ? metric_sum(r.raw, prefix) : -1;
}

} // namespace troupe::test
