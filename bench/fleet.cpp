// troupe_fleet: an event-driven fleet load generator. Where troupe_load
// keeps a few connections busy, troupe_fleet behaves like a fleet: every
// simulated device holds ONE TCP connection of its own, mostly idle, and
// the whole fleet runs on one thread (one Boost.Asio io_context), so that
// thousands of devices cost the generator little. An https --url gives
// every device its own TLS session (http/tls_socket.hpp, client side).
// See bench/README.md.
//
// Phases, each request bounded by a deadline:
//
//   admin login -> tenant -> bulk register -> device logins (bounded
//   concurrency) -> warmup -> steady state (measured) -> drain -> report
//
// Roles in the steady state:
//   uploader     posts a small telemetry batch every --interval-ms (random
//                phase, +-jitter) on its keep-alive connection;
//   poller       holds GET /api/v1/device/commands?wait=S in a loop;
//   command_link one of the commander's connections: every
//                --command-interval-ms a command goes to a random poller,
//                and the time until that poller's long-poll returns it is
//                the command latency.
//
// Device ids carry a random run suffix, so reruns never collide.

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "bench/common.hpp"
#include "http/tls_socket.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using json = nlohmann::json;
using clock_tp = troupe::bench::bench_clock::time_point;
using troupe::bench::bench_clock;
using std::chrono::milliseconds;

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

/// Largest response body accepted: a bulk registration of 10,000 devices
/// answers about 1 MB.
constexpr uint64_t max_body_bytes = 64ull << 20;

/// File descriptors the generator needs besides one per connection: stdio,
/// epoll, eventfd, timerfd, the signal pipe, the resolver.
constexpr int64_t spare_fds = 64;

/// The run's settings, read once from the command line.
struct fleet_config {
  std::string url;  // http(s)://host:port, no trailing slash
  bool tls = false; // https
  std::string host; // for the Host header and the resolver
  std::string port;
  std::string admin_user;
  std::string admin_password;
  std::string tenant;
  std::string prefix;
  int64_t uploaders = 0;
  int64_t pollers = 0;
  int64_t commanders = 0;
  int64_t duration_s = 0;
  int64_t warmup_s = 0;
  int64_t interval_ms = 0;
  int64_t jitter_pct = 0;
  int64_t points = 0;
  int64_t timeout_ms = 0;
  int64_t wait_s = 0;
  int64_t command_interval_ms = 0;
  int64_t login_concurrency = 0;
  int64_t login_attempts = 0;
  int64_t register_chunk = 0;
  int64_t admin_timeout_ms = 0;
  uint64_t seed = 0;
  int pid = 0; // 0: no server accounting
};

// -- small helpers ------------------------------------------------------------

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "troupe_fleet: error: " << msg << std::endl;
  std::exit(exit_failure);
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

double seconds(bench_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

uint32_t micros(bench_clock::duration d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return static_cast<uint32_t>(std::clamp<int64_t>(us, 0, UINT32_MAX));
}

std::string snippet(const std::string& body) {
  constexpr size_t max_len = 300;
  if (body.size() <= max_len)
    return body;
  return body.substr(0, max_len) + "...";
}

bool valid_id_chars(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'
           || c == ':' || c == '-';
  });
}

double pct(uint64_t part, uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / whole;
}

/// VmRSS of `pid` (or "self") in KiB from /proc/PID/status.
std::optional<int64_t> rss_kib(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) != 0)
      continue;
    try {
      return std::stoll(line.substr(6));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

/// User plus system CPU seconds of this process.
double own_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

/// Raises the soft open-file limit to the hard one; returns the limit now in
/// force.
int64_t raise_fd_limit(int64_t& hard_out) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return hard_out = -1;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0)
      rl = want;
  }
  auto as_int = [](rlim_t v) {
    return v == RLIM_INFINITY ? INT64_MAX : static_cast<int64_t>(v);
  };
  hard_out = as_int(rl.rlim_max);
  return as_int(rl.rlim_cur);
}

// -- command line -------------------------------------------------------------

std::optional<fleet_config> parse_args(int argc, char** argv) {
  using troupe::bench::option_spec;
  troupe::bench::options opts{
    "troupe_fleet",
    "Simulates a device fleet against a running troupe node: every device\n"
    "holds one connection; --uploaders post telemetry every --interval-ms,\n"
    "--pollers hold long-polls, a commander sends commands to random\n"
    "pollers. All on one thread. Reports the share of uploads answered 202,\n"
    "latencies, timeouts, reconnects and command latency.",
    {
      {"url", option_spec::text, "http://127.0.0.1:8080",
       "troupe base URL (http only)"},
      {"admin-user", option_spec::text, "admin", "admin username"},
      {"admin-password", option_spec::text, "", "admin password (required)"},
      {"tenant", option_spec::text, "bench-fleet", "tenant for the devices"},
      {"prefix", option_spec::text, "fleet-", "device id prefix"},
      {"uploaders", option_spec::integer, "1000",
       "devices that upload telemetry", 0, 1'000'000},
      {"pollers", option_spec::integer, "300",
       "devices that hold a long-poll", 0, 1'000'000},
      {"duration", option_spec::integer, "30", "measured seconds", 1, 86400},
      {"warmup", option_spec::integer, "10", "unmeasured seconds first", 0,
       3600},
      {"interval-ms", option_spec::integer, "5000",
       "upload period per uploader, ms", 10, 3'600'000},
      {"jitter-pct", option_spec::integer, "10",
       "random +- share of each period, %", 0, 90},
      {"points", option_spec::integer, "3", "points per upload", 1, 10000},
      {"timeout-ms", option_spec::integer, "10000",
       "deadline of one request (a long-poll: --wait plus this), ms", 100,
       3'600'000},
      {"wait", option_spec::integer, "30", "long-poll wait, s", 1, 60},
      {"command-interval-ms", option_spec::integer, "200",
       "period of the commander, ms (0: no commands)", 0, 3'600'000},
      {"commanders", option_spec::integer, "2",
       "the commander's connections", 1, 64},
      {"login-concurrency", option_spec::integer, "200",
       "device logins in flight", 1, 10000},
      {"login-attempts", option_spec::integer, "3",
       "tries per device login", 1, 100},
      {"register-chunk", option_spec::integer, "1000",
       "devices per bulk register request", 1, 10000},
      {"admin-timeout-ms", option_spec::integer, "600000",
       "deadline of one admin request (bulk register hashes secrets), ms",
       100, 86'400'000},
      {"seed", option_spec::integer, "0", "random seed (0: random)", 0,
       INT64_MAX},
      {"pid", option_spec::text, "",
       "troupe pid: CPU seconds and RSS at start and end of the steady "
       "state"},
    }};
  auto err = opts.parse(argc, argv);
  auto usage_error = [&](const std::string& msg) {
    std::cerr << "troupe_fleet: " << msg << "\n\n" << opts.usage();
    std::exit(exit_usage);
  };
  if (!err.empty())
    usage_error(err);
  if (opts.help_requested()) {
    std::cout << opts.usage();
    return std::nullopt;
  }
  fleet_config cfg;
  cfg.url = opts.get("url");
  while (!cfg.url.empty() && cfg.url.back() == '/')
    cfg.url.pop_back();
  cfg.tls = cfg.url.rfind("https://", 0) == 0;
  if (!troupe::bench::valid_base_url(cfg.url))
    usage_error("--url must look like http(s)://host:port, got '" + cfg.url
                + "'");
  auto authority = cfg.url.substr(cfg.tls ? 8 : 7);
  auto colon = authority.rfind(':');
  bool has_port = colon != std::string::npos
                  && authority.find(']', colon) == std::string::npos;
  if (has_port) {
    cfg.host = authority.substr(0, colon);
    cfg.port = authority.substr(colon + 1);
  } else {
    cfg.host = authority;
    cfg.port = cfg.tls ? "443" : "80";
  }
  if (cfg.host.size() > 2 && cfg.host.front() == '[' && cfg.host.back() == ']')
    cfg.host = cfg.host.substr(1, cfg.host.size() - 2);
  if (cfg.host.empty() || cfg.port.empty()
      || cfg.port.find_first_not_of("0123456789") != std::string::npos)
    usage_error("--url must look like http://host:port, got '" + cfg.url
                + "'");
  cfg.admin_user = opts.get("admin-user");
  cfg.admin_password = opts.get("admin-password");
  cfg.tenant = opts.get("tenant");
  cfg.prefix = opts.get("prefix");
  cfg.uploaders = opts.get_int("uploaders");
  cfg.pollers = opts.get_int("pollers");
  cfg.commanders = opts.get_int("commanders");
  cfg.duration_s = opts.get_int("duration");
  cfg.warmup_s = opts.get_int("warmup");
  cfg.interval_ms = opts.get_int("interval-ms");
  cfg.jitter_pct = opts.get_int("jitter-pct");
  cfg.points = opts.get_int("points");
  cfg.timeout_ms = opts.get_int("timeout-ms");
  cfg.wait_s = opts.get_int("wait");
  cfg.command_interval_ms = opts.get_int("command-interval-ms");
  cfg.login_concurrency = opts.get_int("login-concurrency");
  cfg.login_attempts = opts.get_int("login-attempts");
  cfg.register_chunk = opts.get_int("register-chunk");
  cfg.admin_timeout_ms = opts.get_int("admin-timeout-ms");
  cfg.seed = static_cast<uint64_t>(opts.get_int("seed"));
  if (opts.given("pid")) {
    auto p = opts.get("pid");
    if (p.empty() || p.size() > 10
        || p.find_first_not_of("0123456789") != std::string::npos
        || std::stoll(p) < 1 || std::stoll(p) > INT32_MAX)
      usage_error("--pid needs a process id, got '" + p + "'");
    cfg.pid = static_cast<int>(std::stoll(p));
  }
  if (cfg.admin_password.empty())
    usage_error("--admin-password is required");
  if (cfg.uploaders + cfg.pollers == 0)
    usage_error("--uploaders and --pollers are both 0: no fleet");
  if (cfg.tenant.empty() || cfg.tenant.size() > 64
      || !valid_id_chars(cfg.tenant))
    usage_error("--tenant must match [A-Za-z0-9_.:-]{1,64}");
  // The run suffix adds 7 characters, "-u" and the device number up to 9.
  if (!valid_id_chars(cfg.prefix) || cfg.prefix.size() > 64 - 7 - 9)
    usage_error("--prefix must match [A-Za-z0-9_.:-]{0,48}");
  return cfg;
}

// -- connections --------------------------------------------------------------

/// Why a connection's socket was closed. The next connect of the same
/// device_conn counts as a reconnect for that reason.
enum class close_reason : uint8_t {
  none,           // never opened, or closed by our own choice
  idle_closed,    // the server closed it while idle; seen before sending
  closed_on_send, // EOF or reset right after sending on a reused one
  conn_close,     // the server answered `Connection: close`
  timeout,        // our deadline passed: we dropped it
  error,          // connect, write or read failed
};

constexpr size_t close_reason_count = 6;

constexpr const char* close_reason_names[close_reason_count] = {
  "none",        "idle_closed",   "closed_on_send",
  "conn_close",  "after_timeout", "after_error"};

/// Connection counters of one role. Monotonic except `open`; the report
/// takes differences of copies made at the start and end of the window.
struct conn_counters {
  uint64_t connects = 0;
  uint64_t connect_failures = 0;
  std::array<uint64_t, close_reason_count> reconnects{};
  int64_t open = 0;

  uint64_t reconnect_total() const {
    uint64_t n = 0;
    for (auto v : reconnects)
      n += v;
    return n;
  }

  conn_counters minus(const conn_counters& before) const {
    conn_counters d = *this;
    d.connects -= before.connects;
    d.connect_failures -= before.connect_failures;
    for (size_t i = 0; i < close_reason_count; ++i)
      d.reconnects[i] -= before.reconnects[i];
    return d;
  }
};

/// What every connection shares: the io_context (run by the one thread),
/// the server's address and the Host header. Owned by the fleet; outlives
/// every device_conn.
struct net_context {
  asio::io_context io{1};
  tcp::endpoint endpoint;
  std::string host;
  /// https: the client side of every device's TLS session (no
  /// verification: the benchmarks use throwaway certificates).
  std::unique_ptr<asio::ssl::context> tls;
  int64_t open = 0;
  int64_t peak_open = 0;
};

/// How one request ended, handed to the connection's owner.
struct exchange {
  enum kind_t : uint8_t { answered, timed_out, failed };
  kind_t kind = failed;
  int status = 0;
  int retry_after_s = -1; // the Retry-After header, when present
  std::string body;
  std::string error; // failed: what broke, e.g. "connect: Connection refused"
  bench_clock::duration latency{};
};

/// Receives the completions of a device_conn. Implemented by each role.
class conn_owner {
public:
  virtual ~conn_owner() = default;

  /// The request sent last has ended (answered, timed out or failed).
  virtual void on_exchange(exchange& x) = 0;

  /// The time given to `device_conn::sleep_until` has come.
  virtual void on_wake() = 0;
};

/// One simulated device's TCP connection and the HTTP/1.1 exchange on it,
/// driven by the fleet's single thread:
///
///   closed     --send-->       connecting
///   connecting --connected-->  writing
///   writing    --written-->    reading
///   reading    --answer-->     idle (keep-alive) or closed
///   idle       --send-->       writing, or connecting when the server has
///                              closed it meanwhile (peek)
///   busy       --deadline, error-->  closed, reported to the owner; or,
///                              once, connecting to resend when a reused
///                              connection was closed under the request
///
/// One request at a time: the owner calls `send` only when not `busy()`,
/// and exactly one `on_exchange` follows, no later than the deadline. While
/// busy exactly one socket operation is pending; the deadline closes the
/// socket and that operation's completion reports the timeout, so nothing
/// ever touches a freed parser. A reused connection that the server closed
/// while idle is noticed before sending (a non-blocking peek) or by EOF or
/// reset right after sending; then it is reopened and the request resent
/// once, as HTTP clients do. Between requests the owner may park on the
/// connection's timer (`sleep_until`): a device costs one socket and one
/// timer. The parser and the request text exist only while a request is in
/// flight, so an idle connection holds a few hundred bytes.
class device_conn {
public:
  device_conn(net_context& net, conn_owner& owner, conn_counters& counters)
    : net_(net),
      owner_(owner),
      counters_(counters),
      sock_(net.io),
      timer_(net.io) {
  }

  device_conn(const device_conn&) = delete;
  device_conn& operator=(const device_conn&) = delete;

  /// Starts one request. `token` (may be empty) goes out as a bearer token;
  /// a non-empty `body` as JSON. With `close_after` the request asks the
  /// server to close the connection after answering.
  void send(std::string_view method, std::string_view target,
            std::string_view token, std::string_view body, bool close_after,
            clock_tp deadline) {
    out_.clear();
    out_.reserve(160 + target.size() + token.size() + body.size());
    out_.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
    out_.append("Host: ").append(net_.host).append("\r\n");
    if (!token.empty())
      out_.append("Authorization: Bearer ").append(token).append("\r\n");
    if (!body.empty() || method == "POST") {
      out_.append("Content-Type: application/json\r\nContent-Length: ");
      out_.append(std::to_string(body.size())).append("\r\n");
    }
    if (close_after)
      out_.append("Connection: close\r\n");
    out_.append("\r\n").append(body);
    close_after_ = close_after;
    resent_ = false;
    timed_out_ = false;
    started_ = bench_clock::now();
    ++gen_;
    timer_.expires_at(deadline);
    timer_.async_wait([this, g = gen_](const error_code& ec) {
      if (!ec && g == gen_)
        on_deadline();
    });
    if (state_ == state::idle && peer_closed())
      drop(close_reason::idle_closed);
    if (state_ == state::closed)
      start_connect();
    else
      start_write();
  }

  /// Calls the owner's `on_wake` at `t`; only while not busy.
  void sleep_until(clock_tp t) {
    ++gen_;
    timer_.expires_at(t);
    timer_.async_wait([this, g = gen_](const error_code& ec) {
      if (!ec && g == gen_)
        owner_.on_wake();
    });
  }

  /// Closes the socket and forgets any wait; no callback follows. For the
  /// end of the run.
  void shut() {
    // A pending operation may still refer to the parser and the buffer
    // until the io_context drops it: close the socket, free nothing.
    ++gen_;
    shut_ = true;
    error_code ignored;
    timer_.cancel(ignored);
    lowest().close(ignored);
    if (connected_) {
      --counters_.open;
      --net_.open;
      connected_ = false;
    }
    state_ = state::closed;
  }

  bool busy() const {
    return state_ == state::connecting || state_ == state::writing
           || state_ == state::reading;
  }

  bool connected() const {
    return connected_;
  }

private:
  enum class state : uint8_t { closed, connecting, writing, reading, idle };

  using parser_t = http::response_parser<http::string_body>;

  /// True when the server has closed (or broken) the idle connection: a
  /// readable EOF, an error, or bytes nobody asked for.
  bool peer_closed() {
    char c;
    auto n = ::recv(lowest().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
      return errno != EAGAIN && errno != EWOULDBLOCK;
    return true;
  }

  static bool peer_gone(const error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof
           || ec == asio::error::connection_reset
           || ec == asio::error::broken_pipe
           || ec == asio::error::connection_aborted;
  }

  void start_connect() {
    ++counters_.connects;
    if (last_close_ != close_reason::none)
      ++counters_.reconnects[static_cast<size_t>(last_close_)];
    last_close_ = close_reason::none;
    state_ = state::connecting;
    tls_.reset(); // the earlier connection's socket and session
    sock_.async_connect(net_.endpoint, [this](const error_code& ec) {
      if (interrupted())
        return;
      if (ec) {
        ++counters_.connect_failures;
        return finish_failed("connect", ec);
      }
      error_code ignored;
      sock_.set_option(tcp::no_delay{true}, ignored);
      connected_ = true;
      ++counters_.open;
      net_.peak_open = std::max(net_.peak_open, ++net_.open);
      reused_ = false;
      if (!net_.tls)
        return start_write();
      tls_.emplace(std::move(sock_), *net_.tls,
                   asio::ssl::stream_base::client);
      tls_->async_handshake(asio::ssl::stream_base::client,
                            [this](const error_code& ec) {
                              if (interrupted())
                                return;
                              if (ec)
                                return finish_failed("tls handshake", ec);
                              start_write();
                            });
    });
  }

  /// At the end of each step: true (and nothing more to do) once the run
  /// has shut the connection, or once the deadline closed it, whose
  /// timeout this reports.
  bool interrupted() {
    if (shut_)
      return true;
    if (!timed_out_)
      return false;
    finish_timeout();
    return true;
  }

  /// The connection's byte stream: the socket, or its TLS session.
  template <class F>
  void with_stream(F f) {
    if (tls_)
      f(*tls_);
    else
      f(sock_);
  }

  tcp::socket& lowest() {
    return tls_ ? tls_->next_layer() : sock_;
  }

  void start_write() {
    state_ = state::writing;
    with_stream([this](auto& s) {
      asio::async_write(s, asio::buffer(out_),
                        [this](const error_code& ec, size_t) {
                          if (interrupted())
                            return;
                          if (ec)
                            return retry_or_fail("write", ec);
                          start_read();
                        });
    });
  }

  void start_read() {
    state_ = state::reading;
    parser_ = std::make_unique<parser_t>();
    parser_->body_limit(max_body_bytes);
    with_stream([this](auto& s) {
      http::async_read(s, buf_, *parser_,
                       [this](const error_code& ec, size_t) {
                         if (interrupted())
                           return;
                         if (ec)
                           return retry_or_fail("read", ec);
                         on_response();
                       });
    });
  }

  /// A reused connection that turns out closed by the server before any
  /// byte of an answer came back: reopen and resend once (the request was
  /// not processed, or is safe to repeat: telemetry carries a batch_id).
  void retry_or_fail(const char* what, const error_code& ec) {
    bool nothing_back = !parser_ || !parser_->got_some();
    if (reused_ && !resent_ && nothing_back && peer_gone(ec)) {
      resent_ = true;
      drop(close_reason::closed_on_send);
      start_connect();
      return;
    }
    finish_failed(what, ec);
  }

  void on_response() {
    exchange x;
    x.kind = exchange::answered;
    auto& res = parser_->get();
    x.status = static_cast<int>(res.result_int());
    auto ra = res[http::field::retry_after];
    if (!ra.empty() && ra.size() < 6
        && std::all_of(ra.begin(), ra.end(),
                       [](char c) { return c >= '0' && c <= '9'; }))
      x.retry_after_s = std::stoi(std::string(ra));
    x.body = std::move(res.body());
    bool keep = parser_->keep_alive();
    parser_.reset();
    reused_ = true;
    if (keep) {
      state_ = state::idle;
      if (buf_.size() == 0)
        buf_.shrink_to_fit();
    } else {
      drop(close_after_ ? close_reason::none : close_reason::conn_close);
    }
    finish(x);
  }

  void on_deadline() {
    // Closing cancels the one pending operation; its completion, run soon
    // after, sees timed_out_ and reports the timeout.
    timed_out_ = true;
    error_code ignored;
    lowest().close(ignored);
  }

  void finish_timeout() {
    drop(close_reason::timeout);
    exchange x;
    x.kind = exchange::timed_out;
    finish(x);
  }

  void finish_failed(const char* what, const error_code& ec) {
    drop(close_reason::error);
    exchange x;
    x.kind = exchange::failed;
    x.error = std::string(what) + ": " + ec.message();
    finish(x);
  }

  void finish(exchange& x) {
    x.latency = bench_clock::now() - started_;
    ++gen_;
    error_code ignored;
    timer_.cancel(ignored);
    timed_out_ = false;
    std::string{}.swap(out_);
    owner_.on_exchange(x);
  }

  void drop(close_reason why) {
    if (connected_) {
      --counters_.open;
      --net_.open;
      connected_ = false;
    }
    error_code ignored;
    lowest().close(ignored);
    parser_.reset();
    buf_.clear();
    buf_.shrink_to_fit();
    reused_ = false;
    state_ = state::closed;
    last_close_ = why;
  }

  net_context& net_;
  conn_owner& owner_;
  conn_counters& counters_;
  tcp::socket sock_;
  /// https: the session, holding the socket once connected.
  std::optional<troupe::http::tls_socket<tcp::socket>> tls_;
  asio::steady_timer timer_;
  beast::flat_buffer buf_;
  std::unique_ptr<parser_t> parser_;
  std::string out_;
  clock_tp started_;
  uint32_t gen_ = 0; // tells stale timer completions from the current one
  state state_ = state::closed;
  close_reason last_close_ = close_reason::none;
  bool connected_ = false;
  bool reused_ = false; // one exchange done on this socket already
  bool resent_ = false;
  bool close_after_ = false;
  bool timed_out_ = false;
  bool shut_ = false;
};

// -- statistics ---------------------------------------------------------------

/// Outcomes of requests of one kind, each counted once. Uploads count when
/// offered inside the window, everything else when it ends there.
struct request_stats {
  uint64_t answered = 0;
  uint64_t timeouts = 0;
  std::map<int, uint64_t> by_status;
  std::map<std::string, uint64_t> errors;
  std::vector<uint32_t> latency_us; // of answered requests

  uint64_t error_total() const {
    uint64_t n = 0;
    for (auto& [_, v] : errors)
      n += v;
    return n;
  }

  uint64_t count(int status) const {
    auto i = by_status.find(status);
    return i == by_status.end() ? 0 : i->second;
  }

  void record(const exchange& x) {
    switch (x.kind) {
      case exchange::answered:
        ++answered;
        ++by_status[x.status];
        latency_us.push_back(micros(x.latency));
        break;
      case exchange::timed_out:
        ++timeouts;
        break;
      case exchange::failed:
        ++errors[x.error];
        break;
    }
  }
};

/// Uploads offered in the window: one per uploader tick. A tick that comes
/// while the previous upload is still in flight is offered but not sent.
struct upload_stats : request_stats {
  uint64_t offered = 0;
  uint64_t sent = 0;
  uint64_t skipped_busy = 0;
  uint64_t in_flight = 0; // sent, not yet ended
};

/// One command the commander sent, until its poller receives it.
struct command_record {
  clock_tp sent;
  uint32_t poller = 0;
  bool in_window = false;
  bool posted = false; // the POST ended (answer, timeout or error)
  bool delivered = false;
};

struct command_stats {
  uint64_t sent = 0;
  uint64_t skipped_busy = 0; // ticks with every commander connection busy
  uint64_t delivered = 0;
  uint64_t duplicates = 0;
  uint64_t misrouted = 0;
  uint64_t unknown = 0;
  request_stats post;
  std::vector<uint32_t> latency_us;
};

// -- the fleet ----------------------------------------------------------------

class sim_device;
class uploader;
class poller;
class command_link;

/// The whole run: configuration, the shared network context, every
/// simulated device and the commander, the phases and their statistics.
/// Created by main(); `run` drives the phases on the calling thread and
/// returns the exit code. The simulated devices call back into it from the
/// same thread, so nothing here is synchronised.
class fleet {
public:
  explicit fleet(fleet_config cfg);

  ~fleet();

  int run();

  // -- called by the simulated devices --

  const fleet_config& cfg() const {
    return cfg_;
  }

  net_context& net() {
    return net_;
  }

  bool in_window(clock_tp t) const {
    return t >= window_start_ && t < window_end_;
  }

  clock_tp window_end() const {
    return window_end_;
  }

  /// True once the run is over: no new requests.
  bool done() const {
    return phase_ == phase::done;
  }

  /// One upload period with its jitter.
  bench_clock::duration next_interval();

  /// A uniform random share in [0, 1).
  double uniform() {
    return std::uniform_real_distribution<double>{0.0, 1.0}(rng_);
  }

  std::string& scratch() {
    return scratch_;
  }

  const std::string& poll_target() const {
    return poll_target_;
  }

  upload_stats& uploads() {
    return uploads_;
  }

  request_stats& polls() {
    return polls_;
  }

  conn_counters& upload_conns() {
    return upload_conns_;
  }

  conn_counters& poll_conns() {
    return poll_conns_;
  }

  conn_counters& command_conns() {
    return command_conns_;
  }

  /// A device's login ended: `ok`, or failed for good with `why`.
  void login_finished(const exchange& x, bool ok, const std::string& why);

  /// A window upload ended, or a command was delivered: maybe the drain is
  /// over.
  void check_drain();

  /// Poller `index` received a poll answer's body.
  void commands_received(uint32_t index, const std::string& body,
                         clock_tp now);

  /// The commander's POST of command `seq` ended.
  void command_posted(uint64_t seq, const exchange& x);

private:
  enum class phase { setup, running, draining, done };

  /// One request on the admin connection; runs the io_context until it
  /// ends. Exits (1) when interrupted.
  exchange admin_call(std::string_view method, std::string_view target,
                      std::string_view body, int64_t timeout_ms);

  void resolve();
  void admin_login();
  void ensure_tenant();
  void register_devices();
  void login_devices();
  void start_next_login();
  void steady_state();
  void on_window_start();
  void on_window_end();
  void finish();
  void command_tick();
  void on_signal();
  int report();

  /// Says why an admin call did not give `want`, naming the URL when no
  /// answer came at all.
  std::string describe(const exchange& x, const std::string& what) const;

  fleet_config cfg_;
  net_context net_;
  std::mt19937_64 rng_;
  asio::signal_set signals_;
  asio::steady_timer phase_timer_;
  asio::steady_timer command_timer_;
  phase phase_ = phase::setup;
  bool interrupted_ = false;
  std::string run_prefix_;
  std::string admin_token_;
  std::string scratch_;
  std::string poll_target_;

  // the admin connection, used for setup only
  struct admin_owner final : conn_owner {
    std::optional<exchange> last;
    void on_exchange(exchange& x) override {
      last = std::move(x);
    }
    void on_wake() override {
    }
  };
  conn_counters admin_conns_;
  admin_owner admin_owner_;
  std::unique_ptr<device_conn> admin_;

  std::vector<std::unique_ptr<uploader>> uploaders_;
  std::vector<std::unique_ptr<poller>> pollers_;
  std::vector<std::unique_ptr<command_link>> links_;
  std::vector<sim_device*> all_devices_;
  std::vector<uint32_t> ready_pollers_;

  // logins
  size_t next_login_ = 0;
  size_t logins_in_flight_ = 0;
  uint64_t logins_ok_ = 0;
  std::map<std::string, uint64_t> login_failures_;
  std::string first_login_failure_;
  std::vector<uint32_t> login_latency_us_;
  double register_s_ = 0;
  double login_s_ = 0;

  // steady state
  clock_tp t0_;
  clock_tp window_start_ = clock_tp::max();
  clock_tp window_end_ = clock_tp::max();
  clock_tp drain_deadline_;
  clock_tp command_next_;
  bool window_ended_ = false;
  upload_stats uploads_;
  request_stats polls_;
  command_stats commands_;
  std::unordered_map<uint64_t, command_record> sent_commands_;
  uint64_t command_seq_ = 0;
  uint64_t commands_pending_ = 0; // window commands not delivered, not failed
  conn_counters upload_conns_, poll_conns_, command_conns_;
  conn_counters upload_start_, poll_start_, command_start_;
  conn_counters upload_end_, poll_end_, command_end_;
  int64_t open_at_end_ = 0;          // device connections
  int64_t command_open_at_end_ = 0;  // the commander's
  std::optional<double> server_cpu_start_, server_cpu_end_;
  std::optional<int64_t> server_rss_start_, server_rss_end_;
  double own_cpu_start_ = 0;
  double own_cpu_end_ = 0;
  double window_s_ = 0;
};

// -- simulated devices --------------------------------------------------------

/// What uploaders and pollers share: an id, the secret until login, the
/// token after it, and the one connection. Logs in on that connection with
/// `Connection: close` (login verifies a slow hash; a thread-per-connection
/// server should not also hold a thread for the idle socket after it), then
/// the steady role takes over.
class sim_device : public conn_owner {
public:
  sim_device(fleet& f, conn_counters& counters, std::string id)
    : f_(f), conn_(f.net(), *this, counters), id_(std::move(id)) {
  }

  const std::string& id() const {
    return id_;
  }

  void set_secret(std::string s) {
    secret_ = std::move(s);
  }

  bool ready() const {
    return !token_.empty();
  }

  /// Starts (or retries) the login; ends with `fleet::login_finished`.
  void login() {
    logging_in_ = true;
    ++attempts_;
    json body{{"device_id", id_}, {"secret", secret_}};
    conn_.send("POST", "/api/v1/device/login", {}, body.dump(), true,
               bench_clock::now() + milliseconds{f_.cfg().timeout_ms});
  }

  /// Starts the steady-state role at `first`.
  virtual void start(clock_tp first) = 0;

  void shut() {
    conn_.shut();
  }

protected:
  void on_exchange(exchange& x) final {
    if (logging_in_)
      on_login(x);
    else
      on_answer(x);
  }

  void on_wake() final {
    if (logging_in_)
      login();
    else
      on_tick();
  }

  virtual void on_answer(exchange& x) = 0;

  virtual void on_tick() = 0;

  fleet& f_;
  device_conn conn_;
  std::string id_;
  std::string token_;

private:
  void on_login(exchange& x) {
    std::string why;
    bool retry = false;
    int backoff_ms = 200 * attempts_;
    if (x.kind == exchange::answered && x.status == 200) {
      try {
        token_ = json::parse(x.body).at("token").get<std::string>();
      } catch (const std::exception&) {
        why = "no \"token\" in " + snippet(x.body);
      }
    } else if (x.kind == exchange::answered) {
      why = "HTTP " + std::to_string(x.status);
      retry = x.status == 429 || x.status >= 500;
      if (x.retry_after_s >= 0)
        backoff_ms = std::min(x.retry_after_s, 5) * 1000;
    } else {
      why = x.kind == exchange::timed_out ? "timeout" : x.error;
      retry = true;
    }
    if (why.empty() || !retry || attempts_ >= f_.cfg().login_attempts) {
      logging_in_ = false;
      if (!token_.empty())
        std::string{}.swap(secret_);
      f_.login_finished(x, !token_.empty(), why);
      return;
    }
    conn_.sleep_until(bench_clock::now() + milliseconds{backoff_ms});
  }

  std::string secret_;
  int attempts_ = 0;
  bool logging_in_ = false;
};

/// A device that posts a telemetry batch every interval on its keep-alive
/// connection. Ticks follow a fixed schedule from a random phase; a tick
/// that comes while the previous upload is still in flight is skipped (and
/// reported), as one connection carries one request at a time.
class uploader final : public sim_device {
public:
  using sim_device::sim_device;

  void start(clock_tp first) override {
    tick_ = first;
    conn_.sleep_until(first);
  }

private:
  void on_tick() override {
    if (f_.done() || tick_ >= f_.window_end())
      return;
    auto& st = f_.uploads();
    counted_ = f_.in_window(tick_);
    if (counted_) {
      ++st.offered;
      ++st.sent;
      ++st.in_flight;
    }
    auto& body = f_.scratch();
    build_batch(body);
    conn_.send("POST", "/api/v1/device/telemetry", token_, body, false,
               bench_clock::now() + milliseconds{f_.cfg().timeout_ms});
  }

  void on_answer(exchange& x) override {
    auto& st = f_.uploads();
    auto now = bench_clock::now();
    if (counted_) {
      --st.in_flight;
      st.record(x);
    }
    tick_ += f_.next_interval();
    while (tick_ <= now) {
      if (f_.in_window(tick_)) {
        ++st.offered;
        ++st.skipped_busy;
      }
      tick_ += f_.next_interval();
    }
    if (!f_.done() && tick_ < f_.window_end())
      conn_.sleep_until(tick_);
    if (counted_) {
      counted_ = false;
      f_.check_drain();
    }
  }

  void build_batch(std::string& out) {
    // Every point of a batch carries its own metric and the batch's ts,
    // which grows per device, so no (metric, ts) repeats.
    last_ts_ = std::max(now_ms(), last_ts_ + 1);
    char buf[128];
    out.clear();
    std::snprintf(buf, sizeof(buf), "{\"batch_id\":%lld,\"points\":[",
                  static_cast<long long>(++batch_));
    out += buf;
    for (int64_t k = 0; k < f_.cfg().points; ++k) {
      std::snprintf(buf, sizeof(buf),
                    "%s{\"metric\":\"m%lld\",\"value\":%.2f,\"ts\":%lld}",
                    k == 0 ? "" : ",", static_cast<long long>(k),
                    f_.uniform() * 100.0, static_cast<long long>(last_ts_));
      out += buf;
    }
    out += "]}";
  }

  clock_tp tick_;
  int64_t batch_ = 0;
  int64_t last_ts_ = 0;
  bool counted_ = false; // the upload in flight was offered in the window
};

/// A device that holds a long-poll for commands, re-issued at once after
/// each answer (or timeout). 429/503 wait out Retry-After (at most 60 s,
/// 1 s without one); other failures wait 1 s so a dead server is not
/// hammered.
class poller final : public sim_device {
public:
  poller(fleet& f, conn_counters& counters, std::string id, uint32_t index)
    : sim_device(f, counters, std::move(id)), index_(index) {
  }

  void start(clock_tp first) override {
    conn_.sleep_until(first);
  }

private:
  void on_tick() override {
    if (f_.done())
      return;
    auto deadline = bench_clock::now() + std::chrono::seconds{f_.cfg().wait_s}
                    + milliseconds{f_.cfg().timeout_ms};
    conn_.send("GET", f_.poll_target(), token_, {}, false, deadline);
  }

  void on_answer(exchange& x) override {
    auto now = bench_clock::now();
    if (f_.in_window(now))
      f_.polls().record(x);
    if (x.kind == exchange::answered && x.status == 200)
      f_.commands_received(index_, x.body, now);
    if (f_.done())
      return;
    if ((x.kind == exchange::answered && x.status == 200)
        || x.kind == exchange::timed_out)
      return on_tick();
    auto pause = milliseconds{1000};
    if (x.kind == exchange::answered && (x.status == 429 || x.status == 503)
        && x.retry_after_s >= 0)
      pause = milliseconds{std::min(x.retry_after_s, 60) * 1000};
    conn_.sleep_until(now + pause);
  }

  uint32_t index_;
};

/// One of the commander's connections (admin token): posts one command at
/// a time, {"name": "ping", "args": {"seq": N}}, to a poller.
class command_link final : public conn_owner {
public:
  explicit command_link(fleet& f)
    : f_(f), conn_(f.net(), *this, f.command_conns()) {
  }

  bool busy() const {
    return conn_.busy();
  }

  void post(uint64_t seq, const std::string& device_id,
            const std::string& token) {
    seq_ = seq;
    auto target = "/api/v1/devices/" + device_id + "/commands";
    auto body = R"({"name":"ping","args":{"seq":)" + std::to_string(seq)
                + R"(},"ttl_s":600})";
    conn_.send("POST", target, token, body, false,
               bench_clock::now() + milliseconds{f_.cfg().timeout_ms});
  }

  void shut() {
    conn_.shut();
  }

private:
  void on_exchange(exchange& x) override {
    f_.command_posted(seq_, x);
  }

  void on_wake() override {
  }

  fleet& f_;
  device_conn conn_;
  uint64_t seq_ = 0;
};

// -- fleet: setup -------------------------------------------------------------

fleet::fleet(fleet_config cfg)
  : cfg_(std::move(cfg)),
    rng_(cfg_.seed != 0 ? cfg_.seed : std::random_device{}()),
    signals_(net_.io, SIGINT, SIGTERM),
    phase_timer_(net_.io),
    command_timer_(net_.io) {
  net_.host = cfg_.port == "80" ? cfg_.host : cfg_.host + ":" + cfg_.port;
  poll_target_ = "/api/v1/device/commands?wait=" + std::to_string(cfg_.wait_s);
  admin_ = std::make_unique<device_conn>(net_, admin_owner_, admin_conns_);
  signals_.async_wait([this](const error_code& ec, int) {
    if (!ec)
      on_signal();
  });
}

fleet::~fleet() = default;

bench_clock::duration fleet::next_interval() {
  auto base = static_cast<double>(cfg_.interval_ms);
  auto j = static_cast<double>(cfg_.jitter_pct) / 100.0;
  auto ms = base * (1.0 - j + 2.0 * j * uniform());
  return std::chrono::duration_cast<bench_clock::duration>(
    std::chrono::duration<double, std::milli>{ms});
}

std::string fleet::describe(const exchange& x, const std::string& what) const {
  if (x.kind == exchange::timed_out)
    return what + ": no answer from " + cfg_.url + " in time";
  if (x.kind == exchange::failed)
    return what + ": no answer from " + cfg_.url + " (" + x.error
           + "); is troupe running and listening there?";
  return what + ": HTTP " + std::to_string(x.status) + " " + snippet(x.body);
}

exchange fleet::admin_call(std::string_view method, std::string_view target,
                           std::string_view body, int64_t timeout_ms) {
  admin_owner_.last.reset();
  admin_->send(method, target, admin_token_, body, false,
               bench_clock::now() + milliseconds{timeout_ms});
  while (!admin_owner_.last && !interrupted_)
    if (net_.io.run_one() == 0)
      fail("internal: the event loop ran dry during " + std::string(target));
  if (interrupted_)
    fail("interrupted during setup");
  return std::move(*admin_owner_.last);
}

void fleet::resolve() {
  tcp::resolver resolver{net_.io};
  error_code ec;
  auto results = resolver.resolve(cfg_.host, cfg_.port, ec);
  if (ec || results.empty())
    fail("cannot resolve " + cfg_.url + " (" + ec.message() + ")");
  net_.endpoint = results.begin()->endpoint();
  if (cfg_.tls) {
    net_.tls = std::make_unique<asio::ssl::context>(
      asio::ssl::context::tls_client);
    net_.tls->set_verify_mode(asio::ssl::verify_none);
    // Record buffers given back while idle: the generator's own memory.
    SSL_CTX_set_mode(net_.tls->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  }
}

void fleet::admin_login() {
  json body{{"username", cfg_.admin_user}, {"password", cfg_.admin_password}};
  auto x = admin_call("POST", "/api/v1/login", body.dump(), cfg_.timeout_ms);
  if (x.kind != exchange::answered || x.status != 200)
    fail(describe(x, "admin login as '" + cfg_.admin_user + "'"));
  try {
    admin_token_ = json::parse(x.body).at("token").get<std::string>();
  } catch (const std::exception&) {
    fail("admin login: no \"token\" in the answer: " + snippet(x.body));
  }
}

void fleet::ensure_tenant() {
  json body{{"id", cfg_.tenant}, {"name", cfg_.tenant}};
  auto x = admin_call("POST", "/api/v1/admin/tenants", body.dump(),
                      cfg_.timeout_ms);
  if (x.kind == exchange::answered
      && (x.status == 200 || x.status == 201 || x.status == 409))
    return;
  fail(describe(x, "creating tenant '" + cfg_.tenant + "'"));
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

void fleet::register_devices() {
  auto t = bench_clock::now();
  auto chunk = static_cast<size_t>(cfg_.register_chunk);
  constexpr int max_prefix_tries = 3;
  std::unordered_map<std::string, std::string> secrets;
  for (int attempt = 1;; ++attempt) {
    run_prefix_ = cfg_.prefix + troupe::bench::random_hex(6) + "-";
    uploaders_.clear();
    pollers_.clear();
    all_devices_.clear();
    secrets.clear();
    for (int64_t i = 0; i < cfg_.uploaders; ++i)
      uploaders_.push_back(std::make_unique<uploader>(
        *this, upload_conns_, run_prefix_ + "u" + std::to_string(i)));
    for (int64_t i = 0; i < cfg_.pollers; ++i)
      pollers_.push_back(std::make_unique<poller>(
        *this, poll_conns_, run_prefix_ + "p" + std::to_string(i),
        static_cast<uint32_t>(i)));
    for (auto& u : uploaders_)
      all_devices_.push_back(u.get());
    for (auto& p : pollers_)
      all_devices_.push_back(p.get());
    bool collided = false;
    for (size_t first = 0; first < all_devices_.size(); first += chunk) {
      auto last = std::min(all_devices_.size(), first + chunk);
      auto arr = json::array();
      for (size_t i = first; i < last; ++i)
        arr.push_back({{"id", all_devices_[i]->id()},
                       {"name", all_devices_[i]->id()},
                       {"tenant", cfg_.tenant}});
      auto x = admin_call("POST", "/api/v1/admin/devices", arr.dump(),
                          cfg_.admin_timeout_ms);
      if (x.kind == exchange::answered && x.status == 409 && first == 0) {
        collided = true;
        break;
      }
      if (x.kind != exchange::answered
          || (x.status != 201 && x.status != 200))
        fail(describe(x, "registering devices " + all_devices_[first]->id()
                           + ".." + all_devices_[last - 1]->id()));
      if (!collect_secrets(x.body, secrets))
        fail("registering devices: expected a JSON array of {\"id\", "
             "\"secret\"} (or {\"items\": [...]}), got: "
             + snippet(x.body));
    }
    if (!collided)
      break;
    if (attempt == max_prefix_tries)
      fail("registering devices: 409 for " + std::to_string(max_prefix_tries)
           + " fresh prefixes in a row");
  }
  for (auto* d : all_devices_) {
    auto i = secrets.find(d->id());
    if (i == secrets.end())
      fail("registering devices: no secret returned for '" + d->id() + "'");
    d->set_secret(std::move(i->second));
  }
  register_s_ = seconds(bench_clock::now() - t);
  std::cout << "register: " << all_devices_.size() << " devices as "
            << run_prefix_ << "{u,p}N in "
            << troupe::bench::round_to(register_s_, 2) << " s" << std::endl;
}

void fleet::login_finished(const exchange& x, bool ok, const std::string& why) {
  --logins_in_flight_;
  if (x.kind == exchange::answered)
    login_latency_us_.push_back(micros(x.latency));
  if (ok) {
    ++logins_ok_;
  } else {
    auto cause = why.rfind("HTTP ", 0) == 0 || why == "timeout"
                   ? why
                   : why.substr(0, why.find(':'));
    ++login_failures_[cause.empty() ? "unknown" : cause];
    if (first_login_failure_.empty())
      first_login_failure_ = why;
  }
  start_next_login();
}

void fleet::start_next_login() {
  while (next_login_ < all_devices_.size()
         && logins_in_flight_ < static_cast<size_t>(cfg_.login_concurrency)) {
    ++logins_in_flight_;
    all_devices_[next_login_++]->login();
  }
}

void fleet::login_devices() {
  auto t = bench_clock::now();
  start_next_login();
  while ((logins_in_flight_ > 0 || next_login_ < all_devices_.size())
         && !interrupted_)
    if (net_.io.run_one() == 0)
      fail("internal: the event loop ran dry during device logins");
  if (interrupted_)
    fail("interrupted during device logins");
  login_s_ = seconds(bench_clock::now() - t);
  auto lat = troupe::bench::summarise(login_latency_us_);
  uint64_t failed = all_devices_.size() - logins_ok_;
  std::cout << "device login: " << logins_ok_ << " ok, " << failed
            << " failed in " << troupe::bench::round_to(login_s_, 2) << " s ("
            << troupe::bench::round_to(logins_ok_ / std::max(login_s_, 1e-9),
                                       1)
            << "/s), p50 " << lat.p50 << " ms, p99 " << lat.p99 << " ms"
            << std::endl;
  if (!first_login_failure_.empty())
    std::cout << "  first failure: " << first_login_failure_ << std::endl;
  if (logins_ok_ == 0)
    fail("no device could log in at " + cfg_.url + "; nothing to measure");
  for (size_t i = 0; i < pollers_.size(); ++i)
    if (pollers_[i]->ready())
      ready_pollers_.push_back(static_cast<uint32_t>(i));
}

// -- fleet: steady state ------------------------------------------------------

void fleet::steady_state() {
  phase_ = phase::running;
  // The admin connection has served its purpose; it is not part of the
  // fleet's connection count.
  admin_->shut();
  t0_ = bench_clock::now();
  window_start_ = t0_ + std::chrono::seconds{cfg_.warmup_s};
  window_end_ = window_start_ + std::chrono::seconds{cfg_.duration_s};
  auto period = milliseconds{cfg_.interval_ms};
  for (auto& u : uploaders_)
    if (u->ready())
      u->start(t0_ + std::chrono::duration_cast<bench_clock::duration>(
                       period * uniform()));
  // Pollers open their connections over the first second (or period).
  auto spread = std::min(period, milliseconds{1000});
  for (auto& p : pollers_)
    if (p->ready())
      p->start(t0_ + std::chrono::duration_cast<bench_clock::duration>(
                       spread * uniform()));
  if (cfg_.command_interval_ms > 0 && !ready_pollers_.empty()) {
    for (int64_t i = 0; i < cfg_.commanders; ++i)
      links_.push_back(std::make_unique<command_link>(*this));
    command_next_ = t0_ + milliseconds{cfg_.command_interval_ms};
    command_timer_.expires_at(command_next_);
    command_timer_.async_wait([this](const error_code& ec) {
      if (!ec)
        command_tick();
    });
  }
  phase_timer_.expires_at(window_start_);
  phase_timer_.async_wait([this](const error_code& ec) {
    if (!ec)
      on_window_start();
  });
  std::cout << "steady state: warmup " << cfg_.warmup_s << " s, then "
            << cfg_.duration_s << " s measured" << std::endl;
  while (phase_ != phase::done)
    if (net_.io.run_one() == 0)
      fail("internal: the event loop ran dry in the steady state");
}

void fleet::on_window_start() {
  if (phase_ != phase::running)
    return;
  upload_start_ = upload_conns_;
  poll_start_ = poll_conns_;
  command_start_ = command_conns_;
  own_cpu_start_ = own_cpu_seconds();
  if (cfg_.pid != 0) {
    server_cpu_start_ = troupe::bench::process_cpu_seconds(cfg_.pid);
    server_rss_start_ = rss_kib(std::to_string(cfg_.pid));
  }
  phase_timer_.expires_at(window_end_);
  phase_timer_.async_wait([this](const error_code& ec) {
    if (!ec)
      on_window_end();
  });
}

void fleet::on_window_end() {
  if (window_ended_)
    return;
  window_ended_ = true;
  auto now = bench_clock::now();
  if (now < window_start_) {
    // Interrupted during the warmup: an empty window.
    window_start_ = now;
    on_window_start();
  }
  window_end_ = std::min(window_end_, now);
  window_s_ = seconds(window_end_ - window_start_);
  upload_end_ = upload_conns_;
  poll_end_ = poll_conns_;
  command_end_ = command_conns_;
  open_at_end_ = upload_conns_.open + poll_conns_.open;
  command_open_at_end_ = command_conns_.open;
  own_cpu_end_ = own_cpu_seconds();
  if (cfg_.pid != 0) {
    server_cpu_end_ = troupe::bench::process_cpu_seconds(cfg_.pid);
    server_rss_end_ = rss_kib(std::to_string(cfg_.pid));
  }
  if (interrupted_) {
    finish();
    return;
  }
  // Drain: uploads offered in the window get their full deadline, commands
  // sent in it a chance to arrive; the pollers keep polling meanwhile.
  phase_ = phase::draining;
  // Every window upload ends by its deadline, at most timeout-ms from now;
  // the margin lets that last timeout be reported before the drain ends.
  drain_deadline_ = now + milliseconds{cfg_.timeout_ms + 500};
  phase_timer_.expires_at(drain_deadline_);
  phase_timer_.async_wait([this](const error_code& ec) {
    if (!ec)
      finish();
  });
  check_drain();
}

void fleet::check_drain() {
  if (phase_ == phase::draining && uploads_.in_flight == 0
      && commands_pending_ == 0)
    finish();
}

void fleet::finish() {
  if (phase_ == phase::done)
    return;
  phase_ = phase::done;
  error_code ignored;
  phase_timer_.cancel(ignored);
  command_timer_.cancel(ignored);
  signals_.cancel(ignored);
  for (auto& u : uploaders_)
    u->shut();
  for (auto& p : pollers_)
    p->shut();
  for (auto& l : links_)
    l->shut();
}

void fleet::on_signal() {
  interrupted_ = true;
  std::cerr << "troupe_fleet: interrupted" << std::endl;
  if (phase_ == phase::running)
    on_window_end();
  else if (phase_ == phase::draining)
    finish();
  // In setup the loops see interrupted_ and exit.
}

void fleet::command_tick() {
  if (phase_ != phase::running)
    return;
  auto now = bench_clock::now();
  command_link* free_link = nullptr;
  for (auto& l : links_)
    if (!l->busy()) {
      free_link = l.get();
      break;
    }
  bool counted = in_window(command_next_);
  if (free_link == nullptr) {
    if (counted)
      ++commands_.skipped_busy;
  } else {
    auto pick = std::uniform_int_distribution<size_t>{
      0, ready_pollers_.size() - 1}(rng_);
    auto index = ready_pollers_[pick];
    auto seq = ++command_seq_;
    auto& rec = sent_commands_[seq];
    rec.sent = now;
    rec.poller = index;
    rec.in_window = counted;
    if (counted) {
      ++commands_.sent;
      ++commands_pending_;
    }
    free_link->post(seq, pollers_[index]->id(), admin_token_);
  }
  // A fixed rate: a late tick does not shift the ones after it.
  command_next_ += milliseconds{cfg_.command_interval_ms};
  if (command_next_ < now)
    command_next_ = now;
  command_timer_.expires_at(command_next_);
  command_timer_.async_wait([this](const error_code& ec) {
    if (!ec)
      command_tick();
  });
}

void fleet::command_posted(uint64_t seq, const exchange& x) {
  auto i = sent_commands_.find(seq);
  if (i == sent_commands_.end())
    return;
  auto& rec = i->second;
  rec.posted = true;
  if (rec.in_window) {
    commands_.post.record(x);
    bool created = x.kind == exchange::answered
                   && (x.status == 201 || x.status == 200);
    // A command that was not created will never arrive: stop waiting for
    // it. One that timed out may still have been created.
    if (!created && x.kind != exchange::timed_out && !rec.delivered)
      --commands_pending_;
  }
  if (rec.delivered)
    sent_commands_.erase(i);
  check_drain();
}

void fleet::commands_received(uint32_t index, const std::string& body,
                              clock_tp now) {
  json j;
  try {
    j = json::parse(body);
  } catch (const std::exception&) {
    ++polls_.errors["poll answer is not JSON"];
    return;
  }
  auto cmds = j.find("commands");
  if (cmds == j.end() || !cmds->is_array())
    return;
  for (auto& c : *cmds) {
    uint64_t seq = 0;
    try {
      seq = c.at("args").at("seq").get<uint64_t>();
    } catch (const std::exception&) {
      ++commands_.unknown;
      continue;
    }
    auto i = sent_commands_.find(seq);
    if (i == sent_commands_.end()) {
      // Erased after delivery and POST: delivered again.
      ++commands_.duplicates;
      continue;
    }
    auto& rec = i->second;
    if (rec.delivered) {
      ++commands_.duplicates;
      continue;
    }
    rec.delivered = true;
    if (rec.poller != index)
      ++commands_.misrouted;
    if (rec.in_window) {
      ++commands_.delivered;
      commands_.latency_us.push_back(micros(now - rec.sent));
      --commands_pending_;
    }
    if (rec.posted)
      sent_commands_.erase(i);
  }
  check_drain();
}

// -- fleet: run and report ----------------------------------------------------

int fleet::run() {
  std::signal(SIGPIPE, SIG_IGN);
  int64_t hard = 0;
  auto limit = raise_fd_limit(hard);
  auto need = cfg_.uploaders + cfg_.pollers + cfg_.commanders + spare_fds;
  std::cout << "troupe_fleet: url=" << cfg_.url << " tenant=" << cfg_.tenant
            << " uploaders=" << cfg_.uploaders << " pollers=" << cfg_.pollers
            << " interval=" << cfg_.interval_ms << "ms points=" << cfg_.points
            << " wait=" << cfg_.wait_s << "s warmup=" << cfg_.warmup_s
            << "s duration=" << cfg_.duration_s << "s" << std::endl;
  std::cout << "open files: limit " << limit << " (hard " << hard
            << "), the fleet needs " << need << std::endl;
  if (need > limit) {
    std::cerr << "troupe_fleet: " << cfg_.uploaders + cfg_.pollers
              << " devices need " << need << " open files, but the limit is "
              << limit << " (hard " << hard
              << "); run fewer devices or raise the hard limit (ulimit -Hn)"
              << std::endl;
    return exit_usage;
  }
  if (cfg_.pid != 0 && !troupe::bench::process_cpu_seconds(cfg_.pid))
    fail("--pid " + std::to_string(cfg_.pid)
         + ": cannot read /proc/PID/stat (no such process?)");
  resolve();
  admin_login();
  ensure_tenant();
  register_devices();
  login_devices();
  steady_state();
  return report();
}

/// `{"idle_closed": n, ...}` without the `none` slot.
nlohmann::ordered_json reconnects_json(const conn_counters& c) {
  nlohmann::ordered_json j;
  j["total"] = c.reconnect_total();
  for (size_t i = 1; i < close_reason_count; ++i)
    j[close_reason_names[i]] = c.reconnects[i];
  return j;
}

std::string reconnects_text(const conn_counters& c) {
  std::string out = std::to_string(c.reconnect_total()) + " [";
  bool first = true;
  for (size_t i = 1; i < close_reason_count; ++i) {
    if (c.reconnects[i] == 0)
      continue;
    out += (first ? "" : ", ") + std::string(close_reason_names[i]) + ": "
           + std::to_string(c.reconnects[i]);
    first = false;
  }
  return out + "]";
}

std::string statuses_text(const request_stats& s) {
  std::string out;
  for (auto& [code, n] : s.by_status)
    out += " " + std::to_string(code) + ": " + std::to_string(n);
  return out.empty() ? " none" : out;
}

std::string errors_text(const request_stats& s) {
  std::string out;
  for (auto& [what, n] : s.errors)
    out += " [" + what + ": " + std::to_string(n) + "]";
  return out;
}

nlohmann::ordered_json errors_json(const request_stats& s) {
  auto j = nlohmann::ordered_json::object();
  for (auto& [what, n] : s.errors)
    j[what] = n;
  return j;
}

int fleet::report() {
  using troupe::bench::round_to;
  using troupe::bench::summarise;
  using troupe::bench::to_json;
  auto up_c = upload_end_.minus(upload_start_);
  auto poll_c = poll_end_.minus(poll_start_);
  auto cmd_c = command_end_.minus(command_start_);
  auto ul = summarise(uploads_.latency_us);
  auto cl = summarise(commands_.latency_us);
  auto w = std::max(window_s_, 1e-9);
  uint64_t accepted = uploads_.count(202);
  uint64_t uploaders_ready = 0;
  uint64_t pollers_ready = 0;
  for (auto& u : uploaders_)
    uploaders_ready += u->ready() ? 1 : 0;
  for (auto& p : pollers_)
    pollers_ready += p->ready() ? 1 : 0;
  auto expected_open = static_cast<int64_t>(uploaders_ready + pollers_ready);
  auto rss_self = rss_kib("self");
  std::optional<double> server_cpu;
  if (server_cpu_start_ && server_cpu_end_)
    server_cpu = *server_cpu_end_ - *server_cpu_start_;
  auto own_cpu = own_cpu_end_ - own_cpu_start_;
  auto mib = [](std::optional<int64_t> kib) {
    if (!kib)
      return std::string("?");
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", *kib / 1024.0);
    return std::string(buf);
  };

  std::cout << "window: " << round_to(window_s_, 2) << " s"
            << (interrupted_ ? " (interrupted)" : "") << "\n"
            << "  uploads       offered " << uploads_.offered << " ("
            << round_to(uploads_.offered / w, 1) << "/s), sent "
            << uploads_.sent << ", skipped " << uploads_.skipped_busy
            << " (previous upload still in flight)\n"
            << "  answered 202  " << accepted << " ("
            << round_to(pct(accepted, uploads_.offered), 1)
            << "% of offered, " << round_to(accepted / w, 1) << "/s)\n"
            << "  statuses     " << statuses_text(uploads_) << "\n"
            << "  no answer     " << uploads_.timeouts << " timeouts, "
            << uploads_.error_total() << " errors" << errors_text(uploads_)
            << ", " << uploads_.in_flight << " unfinished\n"
            << "  latency ms    p50 " << ul.p50 << "  p90 " << ul.p90
            << "  p99 " << ul.p99 << "  max " << ul.max << "\n"
            << "  reconnects    uploaders " << reconnects_text(up_c)
            << ", pollers " << reconnects_text(poll_c) << "\n"
            << "  long-polls    answered 200: " << polls_.count(200)
            << ", statuses" << statuses_text(polls_) << ", "
            << polls_.timeouts << " timeouts, " << polls_.error_total()
            << " errors" << errors_text(polls_) << "\n";
  if (!links_.empty()) {
    std::cout << "  commands      sent " << commands_.sent << ", created "
              << commands_.post.count(201) << " (POST statuses"
              << statuses_text(commands_.post) << ", "
              << commands_.post.timeouts << " timeouts, "
              << commands_.post.error_total() << " errors), delivered "
              << commands_.delivered << " ("
              << round_to(pct(commands_.delivered, commands_.sent), 1)
              << "%), skipped " << commands_.skipped_busy
              << " (commander busy)\n"
              << "  command ms    p50 " << cl.p50 << "  p99 " << cl.p99
              << "  max " << cl.max << " (POST sent -> long-poll answer)\n";
  }
  std::cout << "  connections   open at the end " << open_at_end_ << " of "
            << expected_open << " devices (+" << command_open_at_end_
            << " commander), peak " << net_.peak_open
            << "; connects: uploaders " << up_c.connects << " ("
            << up_c.connect_failures << " failed), pollers "
            << poll_c.connects << " (" << poll_c.connect_failures
            << " failed)\n";
  if (cfg_.pid != 0) {
    std::cout << "  troupe        pid " << cfg_.pid << ", cpu ";
    if (server_cpu)
      std::cout << round_to(*server_cpu, 2) << " s ("
                << round_to(*server_cpu / w, 2) << " cores)";
    else
      std::cout << "unknown (process gone?)";
    std::cout << ", rss " << mib(server_rss_start_) << " -> "
              << mib(server_rss_end_) << " MiB\n";
  }
  std::cout << "  generator     cpu " << round_to(own_cpu, 2) << " s ("
            << round_to(own_cpu / w, 3) << " cores), rss " << mib(rss_self)
            << " MiB\n";
  std::cout.flush();

  nlohmann::ordered_json r;
  r["tool"] = "troupe_fleet";
  r["url"] = cfg_.url;
  r["tenant"] = cfg_.tenant;
  r["uploaders"] = cfg_.uploaders;
  r["pollers"] = cfg_.pollers;
  r["uploaders_ready"] = uploaders_ready;
  r["pollers_ready"] = pollers_ready;
  r["interval_ms"] = cfg_.interval_ms;
  r["points"] = cfg_.points;
  r["wait_s"] = cfg_.wait_s;
  r["timeout_ms"] = cfg_.timeout_ms;
  r["warmup_s"] = cfg_.warmup_s;
  r["duration_s"] = round_to(window_s_, 3);
  r["interrupted"] = interrupted_;
  r["register_s"] = round_to(register_s_, 3);
  r["login_s"] = round_to(login_s_, 3);
  r["logins_ok"] = logins_ok_;
  nlohmann::ordered_json lf = nlohmann::ordered_json::object();
  for (auto& [k, v] : login_failures_)
    lf[k] = v;
  r["login_failures"] = lf;
  nlohmann::ordered_json up;
  up["offered"] = uploads_.offered;
  up["offered_per_s"] = round_to(uploads_.offered / w, 1);
  up["sent"] = uploads_.sent;
  up["skipped_busy"] = uploads_.skipped_busy;
  up["answered"] = uploads_.answered;
  up["accepted"] = accepted;
  up["accepted_pct"] = round_to(pct(accepted, uploads_.offered), 2);
  up["accepted_per_s"] = round_to(accepted / w, 1);
  up["status"] = to_json(uploads_.by_status);
  up["timeouts"] = uploads_.timeouts;
  up["errors"] = errors_json(uploads_);
  up["unfinished"] = uploads_.in_flight;
  up["latency_ms"] = to_json(ul);
  up["reconnects"] = reconnects_json(up_c);
  up["connects"] = up_c.connects;
  up["connect_failures"] = up_c.connect_failures;
  r["uploads"] = up;
  nlohmann::ordered_json lp;
  lp["answered"] = polls_.count(200);
  lp["status"] = to_json(polls_.by_status);
  lp["timeouts"] = polls_.timeouts;
  lp["errors"] = errors_json(polls_);
  lp["reconnects"] = reconnects_json(poll_c);
  lp["connects"] = poll_c.connects;
  lp["connect_failures"] = poll_c.connect_failures;
  r["polls"] = lp;
  nlohmann::ordered_json cm;
  cm["sent"] = commands_.sent;
  cm["created"] = commands_.post.count(201);
  cm["post_status"] = to_json(commands_.post.by_status);
  cm["post_timeouts"] = commands_.post.timeouts;
  cm["post_errors"] = errors_json(commands_.post);
  cm["delivered"] = commands_.delivered;
  cm["delivered_pct"] = round_to(pct(commands_.delivered, commands_.sent), 2);
  cm["skipped_busy"] = commands_.skipped_busy;
  cm["duplicates"] = commands_.duplicates;
  cm["misrouted"] = commands_.misrouted;
  cm["latency_ms"] = to_json(cl);
  cm["reconnects"] = reconnects_json(cmd_c);
  r["commands"] = cm;
  nlohmann::ordered_json cn;
  cn["open_at_end"] = open_at_end_;
  cn["commander_open_at_end"] = command_open_at_end_;
  cn["devices_ready"] = expected_open;
  cn["peak_open"] = net_.peak_open;
  r["connections"] = cn;
  // Absent figures are null, not 0.
  auto or_null = [](auto v) -> nlohmann::ordered_json {
    if (!v)
      return nullptr;
    return *v;
  };
  auto pid = cfg_.pid == 0 ? std::nullopt : std::optional<int>{cfg_.pid};
  auto cores = server_cpu
                 ? std::optional<double>{round_to(*server_cpu / w, 3)}
                 : std::nullopt;
  if (server_cpu)
    server_cpu = round_to(*server_cpu, 3);
  nlohmann::ordered_json sv;
  sv["pid"] = or_null(pid);
  sv["cpu_s"] = or_null(server_cpu);
  sv["cpu_cores"] = or_null(cores);
  sv["rss_kib_start"] = or_null(server_rss_start_);
  sv["rss_kib_end"] = or_null(server_rss_end_);
  r["server"] = sv;
  nlohmann::ordered_json gen;
  gen["cpu_s"] = round_to(own_cpu, 3);
  gen["cpu_cores"] = round_to(own_cpu / w, 4);
  gen["rss_kib"] = rss_self ? *rss_self : 0;
  r["generator"] = gen;
  troupe::bench::print_result(r);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto cfg = parse_args(argc, argv);
  if (!cfg)
    return 0;
  fleet f{std::move(*cfg)};
  return f.run();
}
