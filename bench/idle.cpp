// troupe_idle: what an open, idle keep-alive connection costs a server.
// Opens --connections connections to --url, sends one GET --path on each
// (as a device does before it goes quiet), reads the answer, then holds
// them all idle for --hold seconds and reports the growth of the resident
// memory of --pid (one pid or a comma-separated list, summed: nginx's
// workers) per connection. The same tool measures troupe and nginx, so the
// ratio holds on a noisy machine. See bench/README.md.

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/common.hpp"

namespace {

using namespace troupe::bench;

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "troupe_idle: error: " << msg << std::endl;
  std::exit(exit_failure);
}

/// VmRSS in KiB of each pid, summed; -1 when one cannot be read.
int64_t rss_kib(const std::vector<int>& pids) {
  int64_t total = 0;
  for (auto pid : pids) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    bool found = false;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0) {
        total += std::stoll(line.substr(6));
        found = true;
        break;
      }
    if (!found)
      return -1;
  }
  return total;
}

/// Waits until fd is readable, at most timeout_ms.
bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

/// One GET on a fresh connection; the socket stays open on success.
int open_one(const sockaddr_in& addr, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr)
        != 0
      || ::send(fd, request.data(), request.size(), MSG_NOSIGNAL)
           != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  // The answer: headers and a small body; read until the header block ends
  // and the body (Content-Length) is in.
  std::string got;
  char buf[4096];
  for (;;) {
    if (!readable(fd, 10000)) {
      ::close(fd);
      return -1;
    }
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    got.append(buf, static_cast<size_t>(n));
    auto end = got.find("\r\n\r\n");
    if (end == std::string::npos)
      continue;
    auto cl = got.find("Content-Length:");
    if (cl == std::string::npos)
      cl = got.find("content-length:");
    size_t body = cl == std::string::npos
                    ? 0
                    : std::strtoul(got.c_str() + cl + 15, nullptr, 10);
    if (got.size() >= end + 4 + body)
      break;
  }
  if (got.compare(0, 9, "HTTP/1.1 ") != 0 || got[9] != '2') {
    ::close(fd);
    return -1;
  }
  return fd;
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  options opts{
    "troupe_idle",
    "Opens --connections keep-alive connections to --url, one GET --path on\n"
    "each, holds them idle and reports the server's (--pid) resident memory\n"
    "growth per connection.",
    {
      {"url", option_spec::text, "http://127.0.0.1:8080",
       "server base URL (http://127.0.0.1:port)"},
      {"path", option_spec::text, "/healthz", "the one request per connection"},
      {"pid", option_spec::text, "", "server pid(s), comma-separated (required)"},
      {"connections", option_spec::integer, "5000", "connections", 1,
       1'000'000},
      {"hold", option_spec::integer, "3", "idle seconds before measuring", 0,
       3600},
      {"name", option_spec::text, "server", "name in the RESULT line"},
    }};
  auto err = opts.parse(argc, argv);
  if (!err.empty()) {
    std::cerr << "troupe_idle: " << err << "\n\n" << opts.usage();
    return exit_usage;
  }
  if (opts.help_requested()) {
    std::cout << opts.usage();
    return 0;
  }
  std::vector<int> pids;
  {
    std::string text = opts.get("pid");
    size_t at = 0;
    while (at <= text.size() && !text.empty()) {
      auto comma = text.find(',', at);
      auto part = text.substr(at, comma == std::string::npos ? std::string::npos
                                                             : comma - at);
      int pid = std::atoi(part.c_str());
      if (pid <= 0) {
        std::cerr << "troupe_idle: --pid needs pids, got '" << text << "'\n";
        return exit_usage;
      }
      pids.push_back(pid);
      if (comma == std::string::npos)
        break;
      at = comma + 1;
    }
  }
  if (pids.empty()) {
    std::cerr << "troupe_idle: --pid is required\n\n" << opts.usage();
    return exit_usage;
  }
  auto url = opts.get("url");
  auto hostport = url.rfind("http://", 0) == 0 ? url.substr(7) : url;
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos)
    fail("--url must look like http://127.0.0.1:port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(
    std::atoi(hostport.substr(colon + 1).c_str())));
  if (inet_pton(AF_INET, hostport.substr(0, colon).c_str(), &addr.sin_addr)
      != 1)
    fail("--url needs an IPv4 address, got '" + url + "'");
  auto n = static_cast<size_t>(opts.get_int("connections"));
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < n + 64)
    fail("the open-file limit (" + std::to_string(lim.rlim_cur)
         + ") is below --connections + 64");

  std::string request = "GET " + opts.get("path")
                        + " HTTP/1.1\r\nHost: bench\r\n\r\n";
  auto before = rss_kib(pids);
  if (before < 0)
    fail("cannot read /proc/PID/status of --pid");
  std::vector<int> fds;
  fds.reserve(n);
  size_t failed = 0;
  for (size_t i = 0; i < n; ++i) {
    int fd = open_one(addr, request);
    if (fd < 0)
      ++failed;
    else
      fds.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::seconds{opts.get_int("hold")});
  auto after = rss_kib(pids);
  // Still open? A server that closed them early measured nothing.
  size_t still_open = 0;
  for (int fd : fds) {
    char c;
    auto r = ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      ++still_open;
  }
  for (int fd : fds)
    ::close(fd);
  if (after < 0)
    fail("the server (--pid) went away");
  double per_conn = still_open == 0 ? 0.0
                                    : static_cast<double>(after - before)
                                        * 1024.0 / still_open;
  std::cout << opts.get("name") << ": " << fds.size() << " of " << n
            << " connections opened (" << failed << " failed), " << still_open
            << " still open after " << opts.get_int("hold") << " s; RSS "
            << before << " -> " << after << " KiB: "
            << round_to(per_conn / 1024.0, 2) << " KiB per connection"
            << std::endl;
  nlohmann::ordered_json r;
  r["tool"] = "troupe_idle";
  r["name"] = opts.get("name");
  r["url"] = url;
  r["connections"] = n;
  r["opened"] = fds.size();
  r["still_open"] = still_open;
  r["rss_before_kib"] = before;
  r["rss_after_kib"] = after;
  r["bytes_per_connection"] = round_to(per_conn, 0);
  print_result(r);
  return still_open == n ? 0 : exit_failure;
}
