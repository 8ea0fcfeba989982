#include "storage/embedded.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <sodium.h>

#include "storage/errc.hpp"
#include "storage/logger.hpp"
#include "storage/pg.hpp"

namespace fs = std::filesystem;

namespace troupe::storage {

namespace {

/// Runs a program, waits for it, appends its output to `log_file`.
int run(const std::vector<std::string>& argv, const std::string& log_file) {
  auto pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    auto fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    auto null = open("/dev/null", O_RDONLY);
    if (null >= 0)
      dup2(null, 0);
    // Do not hand our sockets (the HTTP listener) to the postmaster.
    for (int i = 3; i < 1024; ++i)
      close(i);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  randombytes_buf(buf.data(), buf.size());
  std::string out(bytes * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), buf.data(), buf.size());
  out.pop_back();
  return out;
}

} // namespace

std::string find_pg_bin_dir() {
  std::string best;
  int best_v = -1;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    auto bin = e.path() / "bin" / "pg_ctl";
    if (!fs::exists(bin))
      continue;
    int v = std::atoi(e.path().filename().c_str());
    if (v > best_v) {
      best_v = v;
      best = (e.path() / "bin").string();
    }
  }
  return best;
}

uint16_t pick_free_port() {
  auto fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

embedded_postgres::embedded_postgres(std::string data_dir)
  : data_dir_(std::move(data_dir)) {
}

embedded_postgres::~embedded_postgres() {
  stop();
}

caf::expected<std::string> embedded_postgres::start() {
  auto fail = [](const std::string& what) {
    return make_storage_error(errc::embedded_failed, what);
  };
  if (sodium_init() < 0)
    return fail("libsodium failed to initialize");
  bin_dir_ = find_pg_bin_dir();
  if (bin_dir_.empty())
    return fail("no PostgreSQL server found under /usr/lib/postgresql "
                "(install Debian's postgresql package, or set "
                "TROUPE_DATABASE_URL)");
  std::error_code ec;
  fs::create_directories(data_dir_, ec);
  if (ec)
    return fail("cannot create data dir " + data_dir_ + ": " + ec.message());
  auto abs = fs::absolute(data_dir_).lexically_normal().string();
  pg_dir_ = abs + "/postgres";
  auto log_file = abs + "/postgres.log";
  auto pw_file = abs + "/postgres.password";
  // PostgreSQL refuses to run as root: run it as the postgres system user.
  std::vector<std::string> prefix;
  struct passwd* pw = nullptr;
  if (geteuid() == 0) {
    pw = getpwnam("postgres");
    if (!pw)
      return fail("running as root and there is no 'postgres' user to run "
                  "the embedded PostgreSQL as");
    run_as_ = "postgres";
    prefix = {"runuser", "-u", "postgres", "--"};
    // The server must be able to reach its directory.
    for (auto p = fs::path(abs); p != p.root_path(); p = p.parent_path()) {
      struct stat st {};
      if (stat(p.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH))
        chmod(p.c_str(), st.st_mode | S_IXOTH);
    }
  }
  auto with_prefix = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), prefix.begin(), prefix.end());
    return argv;
  };
  auto chown_pg = [&](const std::string& path) {
    if (pw && chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0)
      log().warn("cannot chown {} to postgres: {}", path, strerror(errno));
  };
  if (!fs::exists(pg_dir_ + "/PG_VERSION")) {
    log().info("initializing embedded PostgreSQL in {}", pg_dir_);
    auto password = random_hex(24);
    {
      std::ofstream out{pw_file, std::ios::trunc};
      out << password << "\n";
    }
    chmod(pw_file.c_str(), 0600);
    chown_pg(pw_file);
    fs::create_directories(pg_dir_, ec);
    chmod(pg_dir_.c_str(), 0700);
    chown_pg(pg_dir_);
    std::ofstream{log_file, std::ios::app};
    chown_pg(log_file);
    auto rc = run(with_prefix({bin_dir_ + "/initdb", "-D", pg_dir_, "-U",
                               "troupe", "--pwfile", pw_file, "-A",
                               "scram-sha-256", "-E", "UTF8", "--no-locale"}),
                  log_file);
    if (rc != 0)
      return fail("initdb failed (exit " + std::to_string(rc) + "), see "
                  + log_file);
  }
  auto password = read_file(pw_file);
  while (!password.empty() && std::isspace(password.back()))
    password.pop_back();
  if (password.empty())
    return fail("cannot read " + pw_file);
  uint16_t port = 0;
  // A server left running by a troupe that died: adopt it.
  auto status = run(with_prefix({bin_dir_ + "/pg_ctl", "status", "-D",
                                 pg_dir_}),
                    "/dev/null");
  if (status == 0) {
    std::istringstream pid_file{read_file(pg_dir_ + "/postmaster.pid")};
    std::string line;
    for (int i = 0; i < 4 && std::getline(pid_file, line); ++i)
      ;
    port = static_cast<uint16_t>(std::atoi(line.c_str()));
    log().info("adopting running embedded PostgreSQL port={}", port);
  } else {
    port = pick_free_port();
    auto opts = "-c listen_addresses=127.0.0.1 -c port=" + std::to_string(port)
                + " -c unix_socket_directories='' -c shared_buffers=256MB"
                  " -c max_wal_size=4GB -c wal_compression=on"
                  " -c max_connections=200";
    auto rc = run(with_prefix({bin_dir_ + "/pg_ctl", "start", "-w", "-t",
                               "60", "-D", pg_dir_, "-l", log_file, "-o",
                               opts}),
                  log_file);
    if (rc != 0)
      return fail("pg_ctl start failed (exit " + std::to_string(rc)
                  + "), see " + log_file);
    log().info("embedded PostgreSQL started dir={} port={}", pg_dir_, port);
  }
  started_ = true;
  auto base = "postgresql://troupe:" + password + "@127.0.0.1:"
              + std::to_string(port) + "/";
  // Create the troupe database once.
  connection admin{base + "postgres", 10};
  auto exists = admin.exec("SELECT 1 FROM pg_database WHERE datname='troupe'");
  if (!exists)
    return exists.error();
  if (exists->rows() == 0)
    if (auto res = admin.exec("CREATE DATABASE troupe"); !res)
      return res.error();
  return base + "troupe";
}

void embedded_postgres::stop() {
  if (!started_)
    return;
  started_ = false;
  std::vector<std::string> argv = {bin_dir_ + "/pg_ctl", "stop", "-w", "-t",
                                   "60", "-m", "fast", "-D", pg_dir_};
  if (!run_as_.empty())
    argv.insert(argv.begin(), {"runuser", "-u", run_as_, "--"});
  auto rc = run(argv, data_dir_ + "/postgres.log");
  log().info("embedded PostgreSQL stopped rc={}", rc);
}

} // namespace troupe::storage
