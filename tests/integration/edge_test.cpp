// The event-driven edge over real sockets, against a real node: pipelined
// requests answered in order; hundreds of slow-header connections while
// ordinary requests are still answered; a long-poll released when its
// client goes away; bad Content-Length values refused at once; the
// connection cap; HTTPS with a certificate reloaded on SIGHUP.

#include "tests/integration/harness.hpp"
#include "tests/tls_cert.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <regex>

#include <openssl/ssl.h>

using namespace troupe::test;

namespace {

/// A plain TCP client that sends and reads raw bytes.
class raw_socket {
public:
  explicit raw_socket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~raw_socket() { close(); }
  raw_socket(const raw_socket&) = delete;
  raw_socket& operator=(const raw_socket&) = delete;

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }
  bool send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + off, bytes.size() - off,
                      MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  /// Reads until `done(text)` or `timeout`; returns what arrived.
  std::string read_until(const std::function<bool(const std::string&)>& done,
                         std::chrono::milliseconds timeout = 5s) {
    std::string out;
    auto deadline = clock_type::now() + timeout;
    while (!done(out) && clock_type::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - clock_type::now());
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, left.count())))
          <= 0)
        continue;
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

private:
  int fd_ = -1;
};

/// The status codes of the responses in `text`, in order.
std::vector<int> statuses(const std::string& text) {
  std::vector<int> out;
  std::regex line{"HTTP/1\\.1 ([0-9]{3}) "};
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line);
       it != std::sregex_iterator(); ++it)
    out.push_back(std::stoi((*it)[1]));
  return out;
}

} // namespace

TEST_CASE("pipelined requests are answered in order", "[edge]") {
  auto& n = shared_node();
  raw_socket s{n.port()};
  REQUIRE(s.ok());
  // A slow one (an actor round trip) between two quick ones.
  REQUIRE(s.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /api/v1/me HTTP/1.1\r\nHost: t\r\n"
                 "Authorization: Bearer nope\r\n\r\n"
                 "GET /api/v1/nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto text = s.read_until(
    [](const std::string& t) { return statuses(t).size() >= 4; });
  CHECK(statuses(text) == std::vector<int>{200, 401, 404, 200});
}

TEST_CASE("500 slow-header connections do not hold up anyone else",
          "[edge]") {
  auto& n = shared_node();
  std::vector<std::unique_ptr<raw_socket>> slow;
  for (int i = 0; i < 500; ++i) {
    slow.push_back(std::make_unique<raw_socket>(n.port()));
    REQUIRE(slow.back()->ok());
    REQUIRE(slow.back()->send("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow:"));
  }
  // Meanwhile an ordinary client is served at once.
  for (int i = 0; i < 20; ++i) {
    auto r = n.get("/healthz");
    INFO(r.describe());
    REQUIRE(r.status == 200);
    CHECK(r.elapsed_s < 1.0);
  }
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  TROUPE_CHECK_STATUS(post_telemetry(n, dev.token, {{"values", {{"t", 1}}}}),
                      202);
  // And the slow ones still get their answer once they finish.
  REQUIRE(slow[0]->send(" 1\r\n\r\n"));
  CHECK(statuses(slow[0]->read_until([](const std::string& t) {
          return !statuses(t).empty();
        })) == std::vector<int>{200});
}

TEST_CASE("a long-poll whose client goes away is released", "[edge]") {
  auto& n = shared_node();
  auto tenant = make_tenant(n);
  auto op = make_user(n, "operator", tenant);
  auto dev = make_device(n, tenant);
  auto long_polls = [&] {
    return metric(n, "troupe_http_long_polls").value_or(-1);
  };
  auto before = long_polls();
  {
    raw_socket s{n.port()};
    REQUIRE(s.ok());
    REQUIRE(s.send("GET /api/v1/device/commands?wait=30 HTTP/1.1\r\n"
                   "Host: t\r\nAuthorization: Bearer "
                   + dev.token + "\r\n\r\n"));
    REQUIRE(eventually([&] { return long_polls() == before + 1; }, 5s));
  }
  // Gone: its slot is free again well before the 30 s wait.
  CHECK(eventually([&] { return long_polls() == before; }, 3s));
  // A command posted now is not handed to the departed client: it is still
  // pending for the device's next poll.
  auto cmd = n.post("/api/v1/devices/" + dev.id + "/commands",
                    {{"name", "after"}}, op.token);
  TROUPE_REQUIRE_STATUS(cmd, 201);
  auto list = n.get("/api/v1/devices/" + dev.id + "/commands", op.token);
  auto items = list_items(list);
  REQUIRE(items.size() == 1);
  CHECK(items[0]["status"] == "pending");
  auto got = n.get("/api/v1/device/commands", dev.token);
  TROUPE_REQUIRE_STATUS(got, 200);
  CHECK(got.body["commands"].size() == 1);
}

TEST_CASE("bad Content-Length values are refused at once", "[edge]") {
  auto& n = shared_node();
  for (auto len : {"-1", "abc", "99999999999999999999", "1 2", ""}) {
    INFO("Content-Length: " << len);
    raw_socket s{n.port()};
    REQUIRE(s.ok());
    REQUIRE(s.send(std::string{"POST /api/v1/login HTTP/1.1\r\nHost: t\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: "}
                   + len + "\r\n\r\n"));
    auto t0 = clock_type::now();
    auto text = s.read_until(
      [](const std::string& t) { return !statuses(t).empty(); }, 3s);
    CHECK(statuses(text) == std::vector<int>{400});
    CHECK(text.find("\"error\"") != std::string::npos);
    CHECK(clock_type::now() - t0 < 2s);
  }
  // Over the body limit: 413 without reading the body.
  raw_socket s{n.port()};
  REQUIRE(s.send("POST /api/v1/device/telemetry HTTP/1.1\r\nHost: t\r\n"
                 "Content-Length: 5000000\r\n"
                 "Expect: 100-continue\r\n\r\n"));
  CHECK(statuses(s.read_until([](const std::string& t) {
          return !statuses(t).empty();
        })) == std::vector<int>{413});
}

TEST_CASE("beyond the connection cap new connections get 503", "[edge]") {
  node n{node_options{{{"http.max_connections", "40"}}}};
  std::vector<std::unique_ptr<raw_socket>> held;
  for (int i = 0; i < 40; ++i) {
    held.push_back(std::make_unique<raw_socket>(n.port()));
    REQUIRE(held.back()->ok());
  }
  // Give the server a moment to accept them all.
  REQUIRE(eventually(
    [&] {
      raw_socket probe{n.port()};
      probe.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
      auto st = statuses(probe.read_until(
        [](const std::string& t) { return !statuses(t).empty(); }, 2s));
      return st == std::vector<int>{503};
    },
    10s, 100ms));
  held.clear();
  // Below the cap again: served.
  CHECK(eventually([&] { return n.get("/healthz").status == 200; }, 10s));
  CHECK(metric(n, "troupe_http_refused_total{reason=\"connection_cap\"}")
          .value_or(0)
        >= 1);
}

namespace {

/// The serial of the certificate a TLS handshake with `port` shows; -1 when
/// the handshake fails.
long peer_serial(int port) {
  raw_socket s{port};
  if (!s.ok())
    return -1;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, s.fd());
  long serial = -1;
  if (SSL_connect(ssl) == 1) {
    if (X509* cert = SSL_get1_peer_certificate(ssl)) {
      serial = ASN1_INTEGER_get(X509_get_serialNumber(cert));
      X509_free(cert);
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return serial;
}

} // namespace

TEST_CASE("HTTPS, with the certificate reloaded on SIGHUP", "[edge][tls]") {
  auto dir = std::filesystem::temp_directory_path()
             / ("troupe-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  make_cert(cert, key, 1);
  node_options opts;
  opts.settings = {{"http.tls_cert", cert}, {"http.tls_key", key}};
  opts.tls = true;
  node n{opts};
  // The API over HTTPS.
  TROUPE_CHECK_STATUS(n.get("/readyz"), 200);
  auto tenant = make_tenant(n);
  auto dev = make_device(n, tenant);
  TROUPE_CHECK_STATUS(post_telemetry(n, dev.token, {{"values", {{"t", 1}}}}),
                      202);
  CHECK(peer_serial(n.port()) == 1);
  // Plain HTTP to the HTTPS port is told, in clear text, to use https.
  {
    raw_socket plain{n.port()};
    plain.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    auto told = plain.read_until(
      [](const std::string& t) {
        return t.find("https://") != std::string::npos;
      },
      2s);
    CHECK(statuses(told) == std::vector<int>{400});
    CHECK(told.find("\"invalid_request\"") != std::string::npos);
  }
  // A new certificate, SIGHUP: new connections see it, the node serves on.
  make_cert(cert, key, 2);
  REQUIRE(::kill(n.pid(), SIGHUP) == 0);
  CHECK(eventually([&] { return peer_serial(n.port()) == 2; }, 5s));
  TROUPE_CHECK_STATUS(n.get("/healthz"), 200);
  CHECK(n.running());
  std::filesystem::remove_all(dir);
}
