// troupe_idle: what an open, idle keep-alive connection costs a server.
// Opens --connections connections to --url, sends one GET --path on each
// (as a device does before it goes quiet), reads the answer, then holds
// them all idle for --hold seconds and reports the growth of the resident
// memory of --pid (one pid or a comma-separated list, summed: nginx's
// workers) per connection; an https --url does a TLS handshake first. The same tool measures troupe and nginx, so the
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

#include <openssl/ssl.h>

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

/// An open connection: its socket, and its TLS session for https.
struct conn {
  int fd = -1;
  SSL* ssl = nullptr;
};

void close_conn(conn& c) {
  if (c.ssl != nullptr)
    SSL_free(c.ssl);
  if (c.fd >= 0)
    ::close(c.fd);
  c = conn{};
}

/// One client context for every https connection: no verification (the
/// benchmarks use throwaway self-signed certificates), and record buffers
/// given back while idle, so the client's own memory stays small.
SSL_CTX* client_tls() {
  static SSL_CTX* ctx = [] {
    auto c = SSL_CTX_new(TLS_client_method());
    if (c == nullptr)
      fail("SSL_CTX_new failed");
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    return c;
  }();
  return ctx;
}

/// One GET on a fresh connection (a TLS handshake first with `tls`); the
/// connection stays open on success, fd -1 on failure.
conn open_one(const sockaddr_in& addr, const std::string& request, bool tls) {
  conn c;
  c.fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (c.fd < 0)
    return conn{};
  if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr)
      != 0) {
    close_conn(c);
    return c;
  }
  timeval tv{10, 0}; // bounds the blocking TLS handshake and writes
  setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (tls) {
    c.ssl = SSL_new(client_tls());
    if (c.ssl == nullptr || SSL_set_fd(c.ssl, c.fd) != 1
        || SSL_connect(c.ssl) != 1) {
      close_conn(c);
      return c;
    }
  }
  auto sent = tls ? SSL_write(c.ssl, request.data(),
                              static_cast<int>(request.size()))
                  : ::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL);
  if (sent != static_cast<ssize_t>(request.size())) {
    close_conn(c);
    return c;
  }
  // The answer: headers and a small body; read until the header block ends
  // and the body (Content-Length) is in.
  std::string got;
  char buf[4096];
  for (;;) {
    if ((!tls || SSL_pending(c.ssl) == 0) && !readable(c.fd, 10000)) {
      close_conn(c);
      return c;
    }
    auto n = tls ? SSL_read(c.ssl, buf, sizeof buf)
                 : ::recv(c.fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (tls && SSL_get_error(c.ssl, static_cast<int>(n))
                   == SSL_ERROR_WANT_READ)
        continue; // a record without application data (a session ticket)
      close_conn(c);
      return c;
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
  if (got.compare(0, 9, "HTTP/1.1 ") != 0 || got[9] != '2')
    close_conn(c);
  return c;
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
  bool tls = url.rfind("https://", 0) == 0;
  auto hostport = url.rfind("http://", 0) == 0 ? url.substr(7)
                  : tls                        ? url.substr(8)
                                               : url;
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos)
    fail("--url must look like http(s)://127.0.0.1:port");
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
  std::vector<conn> fds;
  fds.reserve(n);
  size_t failed = 0;
  for (size_t i = 0; i < n; ++i) {
    auto c = open_one(addr, request, tls);
    if (c.fd < 0)
      ++failed;
    else
      fds.push_back(c);
  }
  std::this_thread::sleep_for(std::chrono::seconds{opts.get_int("hold")});
  auto after = rss_kib(pids);
  // Still open? A server that closed them early measured nothing.
  size_t still_open = 0;
  for (auto& c : fds) {
    char byte;
    auto r = ::recv(c.fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
    // Bytes waiting (a TLS record the client has not read) are not a close.
    if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
      ++still_open;
  }
  for (auto& c : fds)
    close_conn(c);
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
