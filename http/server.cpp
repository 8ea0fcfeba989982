#include "http/server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

#include <pthread.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <zlib.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>

#include "http/tls_socket.hpp"

namespace troupe::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using clock_type = std::chrono::steady_clock;

// Concrete executors instead of any_io_executor: smaller objects and no
// type erasure on every operation. A connection never changes io_context.
using executor = asio::io_context::executor_type;
using tcp_socket = tcp::socket::rebind_executor<executor>::other;
using tls_stream = tls_socket<tcp_socket>;
using timer
  = asio::basic_waitable_timer<clock_type, asio::wait_traits<clock_type>,
                               executor>;
using parser_type = bhttp::request_parser<bhttp::string_body>;

/// Read-side wait for a TLS connection at rest; SSL buffers anyway, so a
/// readability wait would miss decrypted bytes held inside the engine.
constexpr size_t tls_idle_read = 1024;
/// The most plaintext one TLS record carries.
constexpr size_t tls_record = 16 * 1024;
/// How long and how much we read and discard after a final response, so the
/// peer gets it before our close instead of a reset. A client refused with
/// 413 on its Content-Length still sends the whole body before it reads the
/// answer (curl, cpp-httplib), so the byte bound is well above the default
/// body limit; the time bound keeps a slow sender from holding the slot.
constexpr std::chrono::milliseconds linger_time{2000};
constexpr size_t linger_bytes = 8u << 20;
/// Accept errors such as EMFILE: wait, then try again.
constexpr std::chrono::milliseconds accept_backoff{100};
/// Connections answered with 503 at once; beyond, they are just closed.
constexpr size_t max_refusing = 256;
/// Level 1 gets most of the size gain on JSON for a fraction of the CPU;
/// the edge runs on two cores.
constexpr int gzip_level = 1;

// -- text helpers -------------------------------------------------------------

std::string_view sv(beast::string_view s) {
  return {s.data(), s.size()};
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

// Malformed escapes stay as they are: a path is data, not a reason to fail.
std::string percent_decode(std::string_view s, bool plus_as_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += plus_as_space && s[i] == '+' ? ' ' : s[i];
  }
  return out;
}

/// Calls fn for each comma-separated, trimmed, non-empty element.
template <class F>
void for_each_element(std::string_view list, F fn) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view{}
                                           : list.substr(comma + 1);
    if (!item.empty())
      fn(item);
  }
}

bool accepts_gzip(std::string_view accept_encoding) {
  bool ok = false;
  for_each_element(accept_encoding, [&](std::string_view item) {
    auto semi = item.find(';');
    auto name = trim(item.substr(0, semi));
    if (!iequals(name, "gzip") && !iequals(name, "x-gzip") && name != "*")
      return;
    double q = 1.0;
    if (semi != std::string_view::npos) {
      auto params = trim(item.substr(semi + 1));
      if (params.size() > 2 && lower(params[0]) == 'q' && params[1] == '=')
        q = std::strtod(std::string{params.substr(2)}.c_str(), nullptr);
    }
    if (q > 0.0)
      ok = true;
  });
  return ok;
}

enum class coding { identity, gzip, unsupported };

coding request_coding(const bhttp::fields& fields) {
  int gzips = 0;
  bool unsupported = false;
  auto range = fields.equal_range(bhttp::field::content_encoding);
  for (auto i = range.first; i != range.second; ++i)
    for_each_element(sv(i->value()), [&](std::string_view item) {
      if (iequals(item, "gzip") || iequals(item, "x-gzip"))
        ++gzips;
      else if (!iequals(item, "identity"))
        unsupported = true;
    });
  // gzip twice over is legal but nobody sends it; refusing keeps the
  // decoded-size bound simple.
  if (unsupported || gzips > 1)
    return coding::unsupported;
  return gzips == 1 ? coding::gzip : coding::identity;
}

enum class inflate_result { ok, too_large, corrupt };

/// Decodes gzip (all members) into out, stopping as soon as the output
/// would pass limit: a small bomb never costs more than limit bytes.
inflate_result gunzip(std::string_view in, size_t limit, std::string& out) {
  out.clear();
  if (in.empty())
    return inflate_result::ok;
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK)
    return inflate_result::corrupt;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  std::array<char, 16 * 1024> chunk;
  auto result = inflate_result::corrupt;
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(chunk.data());
    z.avail_out = static_cast<uInt>(chunk.size());
    int rc = inflate(&z, Z_NO_FLUSH);
    size_t got = chunk.size() - z.avail_out;
    if (out.size() + got > limit) {
      result = inflate_result::too_large;
      break;
    }
    out.append(chunk.data(), got);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) {
        result = inflate_result::ok;
        break;
      }
      inflateReset(&z); // another gzip member follows
      continue;
    }
    if (rc == Z_OK || (rc == Z_BUF_ERROR && z.avail_in > 0))
      continue;
    break; // data error, or input ended inside the stream
  }
  inflateEnd(&z);
  return result;
}

/// Empty on failure (the caller then sends the body as it is).
std::string gzip(std::string_view in) {
  z_stream z{};
  if (deflateInit2(&z, gzip_level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY)
      != Z_OK)
    return {};
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(in.size())) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return rc == Z_STREAM_END ? out : std::string{};
}

/// RFC 7231 IMF-fixdate, formatted at most once a second per thread.
std::string_view http_date() {
  thread_local std::time_t cached = 0;
  thread_local char text[40] = {};
  auto now = std::time(nullptr);
  if (now != cached) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached = now;
  }
  return text;
}

bool header_safe(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos;
}

// -- exchange -----------------------------------------------------------------

/// Where replies go: the io_context of a shard while the server runs, null
/// after stop(), so an exchange that outlives the server posts nowhere.
struct post_gate {
  std::mutex mutex;
  asio::io_context* ctx = nullptr;
};

class connection_base;

/// The exchange handed to handlers. Its request is immutable; replied_,
/// cancelled_ and the callbacks are guarded by mutex_ since handlers use it
/// from any thread. The connection owns it through a slot until written.
class exchange_impl final : public exchange,
                            public std::enable_shared_from_this<exchange_impl> {
public:
  exchange_impl(std::shared_ptr<post_gate> gate,
                std::weak_ptr<connection_base> conn)
    : gate_(std::move(gate)), conn_(std::move(conn)) {
  }

  const request& req() const override {
    return req_;
  }

  void reply(response r) override;

  void on_cancel(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> guard{mutex_};
      if (!cancelled_) {
        // After a reply the exchange can no longer be cancelled.
        if (!replied_)
          on_cancel_.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }

  bool cancelled() const override {
    std::lock_guard<std::mutex> guard{mutex_};
    return cancelled_;
  }

  /// On the connection's I/O thread: the client went away or the server
  /// force-closed. Returns how many callbacks threw.
  size_t cancel() {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      if (replied_ || cancelled_)
        return 0;
      cancelled_ = true;
      fns.swap(on_cancel_);
    }
    size_t threw = 0;
    for (auto& fn : fns) {
      try {
        fn();
      } catch (...) {
        ++threw;
      }
    }
    return threw;
  }

  request req_;

private:
  std::shared_ptr<post_gate> gate_;
  std::weak_ptr<connection_base> conn_;
  mutable std::mutex mutex_;
  bool replied_ = false;
  bool cancelled_ = false;
  std::vector<std::function<void()>> on_cancel_;
};

// -- connections and shards ---------------------------------------------------

struct shard;

/// What the server and exchanges need from a connection, whatever its
/// stream. All calls happen on the connection's I/O thread.
class connection_base : public std::enable_shared_from_this<connection_base> {
public:
  virtual ~connection_base() = default;
  virtual void start() = 0;
  virtual void on_reply(exchange_impl* ex, response&& r) = 0;
  /// stop(): no new requests; close when nothing is outstanding.
  virtual void drain() = 0;
  /// stop() past its grace: cancel everything, close.
  virtual void force_close() = 0;

  // The shard's intrusive list of live connections.
  connection_base* prev = nullptr;
  connection_base* next = nullptr;
};

/// One I/O thread with its io_context and the connections living on it.
/// `conns` is touched only on that thread, or after the thread was joined.
struct shard {
  shard() {
    gate->ctx = &ctx;
  }

  connection_base* conns = nullptr;
  std::shared_ptr<post_gate> gate = std::make_shared<post_gate>();
  // One thread runs it: lets Asio skip some locking.
  asio::io_context ctx{1};
  std::thread thread;
};

template <class F>
void for_each_connection(shard& sh, F fn) {
  // Closing a connection never destroys it synchronously (its pending
  // operations own it), but holding both ends keeps that an assumption.
  std::shared_ptr<connection_base> keep;
  for (auto* c = sh.conns; c != nullptr;) {
    auto keep_next = c->next != nullptr ? c->next->shared_from_this() : nullptr;
    keep = c->shared_from_this();
    fn(*c);
    c = keep_next.get();
  }
}

void exchange_impl::reply(response r) {
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (replied_ || cancelled_)
      return;
    replied_ = true;
    dropped.swap(on_cancel_); // breaks cycles through captured exchanges
  }
  try {
    std::lock_guard<std::mutex> guard{gate_->mutex};
    if (gate_->ctx == nullptr)
      return;
    asio::post(*gate_->ctx,
               [self = shared_from_this(), r = std::move(r)]() mutable {
                 if (auto c = self->conn_.lock())
                   c->on_reply(self.get(), std::move(r));
               });
  } catch (...) {
    // Out of memory: the connection's timeouts clean up.
  }
}

} // namespace

// -- request ------------------------------------------------------------------

std::string request::header(std::string_view name) const {
  for (auto& f : headers)
    if (iequals(f.name, name))
      return f.value;
  return {};
}

bool request::accepts_gzip() const {
  return http::accepts_gzip(header("Accept-Encoding"));
}

bool request::has_header(std::string_view name) const {
  for (auto& f : headers)
    if (iequals(f.name, name))
      return true;
  return false;
}

std::optional<std::string> request::param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    if (percent_decode(part.substr(0, eq), true) != name)
      continue;
    if (eq == std::string_view::npos)
      return std::string{};
    return percent_decode(part.substr(eq + 1), true);
  }
  return std::nullopt;
}

// -- server::impl -------------------------------------------------------------

/// Owns the shards, the acceptor and the TLS context. Lifecycle:
/// fresh -> running (start) -> stopped (stop); the lifecycle mutex
/// serialises those calls. Connections call the "for connections" section
/// from their I/O threads.
class server::impl {
public:
  impl(server_config cfg, handler h, error_renderer e, server_hooks hooks)
    : cfg_(std::move(cfg)),
      handler_(std::move(h)),
      render_(std::move(e)),
      hooks_(std::move(hooks)) {
    if (cfg_.max_pipelined == 0)
      cfg_.max_pipelined = 1;
  }

  ~impl() {
    stop(std::chrono::milliseconds{0});
  }

  // -- for connections --

  const server_config& config() const {
    return cfg_;
  }

  bool stopping() const {
    return stopping_.load();
  }

  uint64_t next_connection_id() {
    return ++next_id_;
  }

  void refused(std::string_view reason) {
    if (!hooks_.refused)
      return;
    try {
      hooks_.refused(reason);
    } catch (...) {
    }
  }

  void log(std::string_view level, std::string msg) {
    if (!hooks_.log)
      return;
    try {
      hooks_.log(level, std::move(msg));
    } catch (...) {
    }
  }

  response render(unsigned status, std::string code, std::string message) {
    if (render_) {
      try {
        return render_(status, code, message);
      } catch (const std::exception& e) {
        log("error", std::string{"error renderer threw: "} + e.what());
      } catch (...) {
        log("error", "error renderer threw");
      }
    }
    // A fallback that cannot fail: the codes are plain snake_case, the
    // message is ours.
    response r;
    r.status = status;
    r.body = "{\"error\":{\"code\":\"" + code + "\",\"message\":\"" + message
             + "\"}}";
    return r;
  }

  void call_handler(const std::shared_ptr<exchange_impl>& ex) {
    std::string what;
    try {
      if (!handler_)
        throw std::runtime_error("no handler");
      handler_(ex);
      return;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "unknown exception";
    }
    log("error", "handler threw: " + what
                   + " conn=" + std::to_string(ex->req_.connection_id)
                   + " target=" + ex->req_.target);
    ex->reply(render(500, "internal", "internal server error"));
  }

  void connection_closed(bool refusal) {
    (refusal ? refusing_ : open_).fetch_sub(1);
    if (stopping_.load()) {
      { std::lock_guard<std::mutex> guard{drained_mutex_}; }
      drained_cv_.notify_all();
    }
  }

  // -- for server --

  std::string start();
  void stop(std::chrono::milliseconds grace);
  std::string reload_tls();

  uint16_t port() const {
    return port_.load();
  }

  size_t open_connections() const {
    return open_.load();
  }

private:
  enum class phase { fresh, running, stopped };

  std::string load_tls(std::shared_ptr<ssl::context>& out) const;
  void run_shard(shard& sh, size_t index);
  void do_accept();
  void on_accept(error_code ec, tcp_socket s, shard& target);
  void start_connection(shard& sh, tcp_socket s,
                        std::shared_ptr<ssl::context> tls, bool refusal);
  void wait_drained(clock_type::time_point deadline);

  // Declared first: connections still being destroyed with the shards
  // reach these.
  server_config cfg_;
  handler handler_;
  error_renderer render_;
  server_hooks hooks_;
  std::atomic<size_t> open_{0};
  std::atomic<size_t> refusing_{0};
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<uint16_t> port_{0};
  std::mutex drained_mutex_;
  std::condition_variable drained_cv_;

  mutable std::mutex tls_mutex_;
  std::shared_ptr<ssl::context> tls_; // for new connections

  std::mutex lifecycle_mutex_;
  phase phase_ = phase::fresh;
  std::vector<std::unique_ptr<shard>> shards_;
  std::vector<asio::executor_work_guard<executor>> guards_;

  // On shards_[0]'s thread only.
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::unique_ptr<timer> backoff_;
  size_t next_shard_ = 0;
  bool backing_off_ = false;
};

namespace {

// -- connection ---------------------------------------------------------------

tcp_socket& lowest(tcp_socket& s) {
  return s;
}

tcp_socket& lowest(tls_stream& s) {
  return s.next_layer();
}

/// Cancels the pending reads and waits (TLS: also those about to run).
void cancel_io(tcp_socket& s, error_code& ec) {
  s.cancel(ec);
}

void cancel_io(tls_stream& s, error_code& ec) {
  s.cancel(ec);
}

/// One client connection over a plain or TLS stream; owned by the handlers
/// of its pending operations (shared_ptr), so it dies when the last one
/// completes after closing. Lives on one io_context: no locks.
///
/// Read side (rstate_):
///
///   handshake --> idle --first byte--> header --> body --> (dispatch)
///                  ^                      |                    |
///                  +------ read_next <----+--(no body)---------+
///   read_next: paused while max_pipelined requests are outstanding;
///   done after a non-keep-alive request, a refusal, EOF or drain.
///
/// Write side: outstanding_ holds one slot per request in arrival order;
/// the front slot is written once answered (writing_), then popped. A
/// response marked close ends in graceful_close (shutdown, linger, close);
/// errors and timeouts end in hard_close. Deadlines: rdl_ for the read side
/// (handshake, idle, header, body, linger), wdl_ for writes.
template <class Stream>
class connection final : public connection_base {
public:
  static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

  connection(server::impl& srv, shard& sh, Stream stream,
             std::shared_ptr<ssl::context> tls, bool refusal)
    : srv_(srv),
      shard_(sh),
      tls_ctx_(std::move(tls)),
      stream_(std::move(stream)),
      rdl_(sh.ctx.get_executor()),
      wdl_(sh.ctx.get_executor()),
      id_(srv.next_connection_id()),
      refusal_(refusal) {
  }

  ~connection() override {
    if (prev != nullptr)
      prev->next = next;
    else if (shard_.conns == this)
      shard_.conns = next;
    if (next != nullptr)
      next->prev = prev;
    cancel_outstanding(); // destroyed with its io_context: still tell
    srv_.connection_closed(refusal_);
  }

  void start() override {
    next = shard_.conns;
    if (next != nullptr)
      next->prev = this;
    shard_.conns = this;
    // Formatted once: inet_ntop is a sprintf, and IPv4 text fits the
    // string's inline buffer.
    error_code ec;
    remote_ = lowest(stream_).remote_endpoint(ec).address().to_string();
    if (srv_.stopping()) {
      hard_close();
      return;
    }
    if constexpr (is_tls) {
      rstate_ = rstate::handshake;
      arm(rdl_, srv_.config().header_timeout, deadline_kind::handshake);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = self()](error_code ec) {
                                self->on_handshake(ec);
                              });
    } else {
      after_handshake();
    }
  }

  void on_reply(exchange_impl* ex, response&& r) override {
    if (closed_ || closing_)
      return;
    for (auto& s : outstanding_)
      if (s.ex.get() == ex) {
        if (!s.res)
          s.res = std::make_unique<response>(std::move(r));
        break;
      }
    try_write();
  }

  void drain() override {
    draining_ = true;
    if (closed_ || closing_)
      return;
    switch (rstate_) {
      case rstate::handshake:
        hard_close();
        return;
      case rstate::idle:
      case rstate::paused:
        // A pending idle wait stays; its completion sees `done`.
        rstate_ = rstate::done;
        break;
      default:
        break; // a request being read is finished, then answered
    }
    if (rstate_ == rstate::done && outstanding_.empty() && !writing_)
      hard_close();
  }

  void force_close() override {
    hard_close();
  }

private:
  enum class rstate : uint8_t { handshake, idle, header, body, paused, done };

  enum class deadline_kind : uint8_t {
    none,
    handshake,
    idle,
    header,
    body,
    linger,
    write,
  };

  /// A lazily re-armed timer: moving the deadline later costs nothing, the
  /// pending wait fires and waits again; only an earlier deadline restarts
  /// it. `gen` tells the current wait from superseded ones.
  struct deadline {
    explicit deadline(const executor& ex) : t(ex) {
    }
    timer t;
    clock_type::time_point when = clock_type::time_point::max();
    uint32_t gen = 0;
    bool waiting = false;
    deadline_kind kind = deadline_kind::none;
  };

  struct slot {
    std::shared_ptr<exchange_impl> ex; // null: a refusal of our own
    std::unique_ptr<response> res;     // set once answered
    bool close = false;                // no keep-alive after this one
    bool keep_alive_10 = false;        // HTTP/1.0 keep-alive: say so
    bool head = false;                 // HEAD: headers only
    bool gzip_ok = false;              // the request accepts gzip
  };

  std::shared_ptr<connection> self() {
    return std::static_pointer_cast<connection>(shared_from_this());
  }

  const server_config& cfg() const {
    return srv_.config();
  }

  // -- deadlines --

  void arm(deadline& d, std::chrono::milliseconds after, deadline_kind k) {
    d.kind = k;
    d.when = clock_type::now() + after;
    if (d.waiting && d.t.expiry() <= d.when)
      return;
    start_wait(d);
  }

  void disarm(deadline& d) {
    d.kind = deadline_kind::none;
    d.when = clock_type::time_point::max();
  }

  void start_wait(deadline& d) {
    d.t.expires_at(d.when);
    d.waiting = true;
    d.t.async_wait([self = self(), &d, gen = ++d.gen](error_code) {
      self->on_deadline(d, gen);
    });
  }

  void on_deadline(deadline& d, uint32_t gen) {
    if (gen != d.gen)
      return;
    d.waiting = false;
    if (closed_ || d.kind == deadline_kind::none)
      return;
    if (clock_type::now() < d.when) {
      start_wait(d);
      return;
    }
    auto kind = d.kind;
    disarm(d);
    on_timeout(kind);
  }

  void on_timeout(deadline_kind kind) {
    switch (kind) {
      case deadline_kind::handshake:
        srv_.refused("tls_handshake");
        hard_close();
        break;
      case deadline_kind::idle:
        if (rstate_ == rstate::idle && outstanding_.empty() && !writing_) {
          srv_.refused("idle_timeout");
          hard_close();
        }
        break;
      case deadline_kind::header:
        srv_.refused("header_timeout");
        if (outstanding_.empty() && !writing_) {
          // The read is cancelled first; its completion sees `done`.
          error_code ec;
          cancel_io(stream_, ec);
          stop_reading();
          queue_error(408, "request_timeout", "request header timed out");
        } else {
          hard_close();
        }
        break;
      case deadline_kind::body:
        srv_.refused("body_timeout");
        hard_close();
        break;
      case deadline_kind::write:
        srv_.refused("write_timeout");
        hard_close();
        break;
      case deadline_kind::linger:
      case deadline_kind::none:
        hard_close();
        break;
    }
  }

  // -- read side --

  void on_handshake(error_code ec) {
    if (closed_ || rstate_ != rstate::handshake)
      return;
    if (ec) {
      if (plain_http(ec)) {
        srv_.refused("plain_http");
        answer_in_clear();
        return;
      }
      srv_.refused("tls_handshake");
      hard_close();
      return;
    }
    disarm(rdl_);
    after_handshake();
  }

  /// OpenSSL found a plain HTTP request ("GET ", "POST", "HEAD", "PUT ")
  /// where a ClientHello belongs.
  static bool plain_http(error_code ec) {
    if (ec.category() != asio::error::get_ssl_category())
      return false;
    auto e = static_cast<unsigned long>(static_cast<unsigned>(ec.value()));
    return ERR_GET_LIB(e) == ERR_LIB_SSL
           && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST;
  }

  /// A plain HTTP request on the TLS port is answered 400 in clear text,
  /// as nginx does, so whoever wrote http:// learns why; then the close of
  /// any final answer (FIN, the rest of the request read and dropped).
  void answer_in_clear() {
    closing_ = true;
    rstate_ = rstate::done;
    slot s;
    s.res = std::make_unique<response>(
      srv_.render(400, "invalid_request",
                  "this port speaks HTTPS only: a plain HTTP request was "
                  "sent to it; use https://"));
    serialize(s, true);
    whead_ += wbody_;
    std::string{}.swap(wbody_);
    arm(rdl_, linger_time, deadline_kind::linger);
    asio::async_write(lowest(stream_), asio::buffer(whead_),
                      [self = self()](error_code ec, size_t) {
                        if (self->closed_)
                          return;
                        if (ec) {
                          self->hard_close();
                          return;
                        }
                        lowest(self->stream_)
                          .shutdown(tcp::socket::shutdown_send, ec);
                        self->linger_read();
                      });
  }

  void after_handshake() {
    if (refusal_) {
      // Answered before the request is read; graceful_close drains it.
      srv_.refused("connection_cap");
      stop_reading();
      auto r = srv_.render(503, "unavailable", "too many connections");
      bool has_retry = false;
      for (auto& f : r.headers)
        has_retry = has_retry || iequals(f.name, "retry-after");
      if (!has_retry)
        r.headers.push_back({"Retry-After", "1"});
      outstanding_.push_back(slot{});
      outstanding_.back().res = std::make_unique<response>(std::move(r));
      outstanding_.back().close = true;
      try_write();
      return;
    }
    rstate_ = rstate::paused;
    read_next();
  }

  void read_next() {
    if (closed_ || closing_)
      return;
    if (rstate_ == rstate::done) {
      if (!watching_done_ && !outstanding_.empty()) {
        watching_done_ = true;
        watch_done();
      }
      return;
    }
    if (outstanding_.size() >= cfg().max_pipelined) {
      rstate_ = rstate::paused;
      disarm(rdl_);
      return;
    }
    if (buffer_.size() > 0) {
      start_header();
      return;
    }
    rstate_ = rstate::idle;
    arm_idle_if_quiet();
    if constexpr (is_tls) {
      stream_.async_read_some(buffer_.prepare(tls_idle_read),
                              [self = self()](error_code ec, size_t n) {
                                self->on_idle_ready(ec, n);
                              });
    } else {
      // No parser and no buffer while at rest: an idle keep-alive
      // connection costs little more than its socket.
      stream_.async_wait(tcp_socket::wait_read, [self = self()](error_code ec) {
        self->on_idle_ready(ec, 0);
      });
    }
  }

  void arm_idle_if_quiet() {
    if (rstate_ != rstate::idle)
      return;
    // With a request outstanding the handler owns the pace (long-polls).
    if (outstanding_.empty() && !writing_)
      arm(rdl_, cfg().idle_timeout, deadline_kind::idle);
    else
      disarm(rdl_);
  }

  /// After a request that ends the connection (Connection: close) nothing
  /// more is parsed, but the socket stays watched until the answers are
  /// written: the pending wait keeps the connection alive while a handler
  /// answers asynchronously, and notices a client that goes away meanwhile.
  void watch_done() {
    if constexpr (is_tls) {
      stream_.async_read_some(asio::buffer(done_probe_),
                              [self = self()](error_code ec, size_t) {
                                self->on_done_ready(ec);
                              });
    } else {
      stream_.async_wait(tcp_socket::wait_read, [self = self()](error_code ec) {
        self->on_done_ready(ec);
      });
    }
  }

  void on_done_ready(error_code ec) {
    watching_done_ = false;
    if (closed_ || closing_ || ec == asio::error::operation_aborted)
      return;
    if (!ec) {
      if constexpr (!is_tls) {
        // Readable: bytes the client sent past its last request (dropped),
        // or the end of the stream.
        auto fd = lowest(stream_).native_handle();
        auto r = ::recv(fd, done_probe_.data(), done_probe_.size(),
                        MSG_DONTWAIT);
        if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
          read_next();
          return;
        }
      } else {
        read_next(); // TLS application data past the last request: dropped
        return;
      }
    }
    peer_eof();
  }

  void on_idle_ready(error_code ec, size_t n) {
    if (closed_ || closing_ || rstate_ != rstate::idle)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    buffer_.commit(n);
    start_header();
  }

  void start_header() {
    rstate_ = rstate::header;
    parser_busy_ = true;
    parser_ = std::make_unique<parser_type>();
    parser_->header_limit(static_cast<uint32_t>(
      std::min<size_t>(cfg().max_header_bytes, UINT32_MAX)));
    parser_->body_limit(cfg().max_body_bytes);
    arm(rdl_, cfg().header_timeout, deadline_kind::header);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = self()](error_code ec, size_t) {
                               self->on_header(ec);
                             });
  }

  void on_header(error_code ec) {
    parser_busy_ = false;
    if (closed_ || closing_ || rstate_ != rstate::header) {
      parser_.reset(); // kept while the cancelled read could touch it
      return;
    }
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto& msg = parser_->get();
    if (msg.version() != 10 && msg.version() != 11) {
      refuse(400, "invalid_request", "unsupported HTTP version", "bad_request");
      return;
    }
    // RFC 7230 3.3.3: a request whose length cannot be determined (a
    // transfer coding other than a final chunked) is refused; letting it
    // through invites request smuggling behind a proxy.
    if (msg.count(bhttp::field::transfer_encoding) > 0 && !parser_->chunked()) {
      refuse(400, "invalid_request", "unsupported Transfer-Encoding",
             "bad_request");
      return;
    }
    auto enc = request_coding(msg);
    if (enc == coding::unsupported) {
      refuse(415, "unsupported_media_type",
             "unsupported Content-Encoding (use gzip or identity)",
             "unsupported_encoding");
      return;
    }
    gzip_body_ = enc == coding::gzip;
    if (parser_->is_done()) {
      dispatch();
      return;
    }
    // The declared length already passed body_limit (else: 413 above, with
    // no 100 Continue). The interim response would overtake earlier
    // responses still owed, so it is sent only when none are.
    if (msg.version() == 11
        && iequals(trim(sv(msg[bhttp::field::expect])), "100-continue")
        && outstanding_.empty() && !writing_)
      write_continue();
    rstate_ = rstate::body;
    parser_busy_ = true;
    arm(rdl_, cfg().body_timeout, deadline_kind::body);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = self()](error_code ec, size_t) {
                        self->on_body(ec);
                      });
  }

  void on_body(error_code ec) {
    parser_busy_ = false;
    if (closed_ || closing_ || rstate_ != rstate::body) {
      parser_.reset();
      return;
    }
    if (ec) {
      on_read_error(ec);
      return;
    }
    dispatch();
  }

  void on_read_error(error_code ec) {
    if (ec == asio::error::operation_aborted)
      return; // whoever cancelled moved the state on
    bool at_boundary = rstate_ == rstate::idle
                       || (rstate_ == rstate::header && !parser_->got_some());
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof
        || ec == ssl::error::stream_truncated) {
      if (at_boundary)
        peer_eof();
      else
        hard_close(); // partial request: the client gave up
      return;
    }
    if (ec.category()
        != bhttp::make_error_code(bhttp::error::need_more).category()) {
      hard_close(); // reset, broken pipe, TLS alert: the peer is gone
      return;
    }
    if (ec == bhttp::error::header_limit)
      refuse(431, "header_too_large", "request header block too large",
             "header_too_large");
    else if (ec == bhttp::error::body_limit)
      refuse(413, "payload_too_large", "request body too large",
             "body_too_large");
    else if (ec == bhttp::error::partial_message)
      hard_close();
    else
      refuse(400, "invalid_request", "malformed request: " + ec.message(),
             "bad_request");
  }

  /// The client half-closed between requests: the handlers still waiting
  /// are cancelled, replies already made are written, then we close.
  void peer_eof() {
    stop_reading();
    for (auto& s : outstanding_)
      if (s.ex && !s.res)
        note_cancel(*s.ex);
    if (outstanding_.empty() && !writing_)
      close_after_peer();
    else
      try_write();
  }

  /// The client ended and has every answer: over TLS our close_notify
  /// answers its own (RFC 8446 6.1) before the socket closes.
  void close_after_peer() {
    if constexpr (is_tls)
      graceful_close();
    else
      hard_close();
  }

  void stop_reading() {
    rstate_ = rstate::done;
    release_parser();
    disarm(rdl_);
  }

  /// Beast's read operations hold the parser until they complete, even
  /// when cancelled; their completion frees it then.
  void release_parser() {
    if (!parser_busy_)
      parser_.reset();
  }

  void refuse(unsigned status, std::string code, std::string message,
              std::string_view reason) {
    srv_.refused(reason);
    stop_reading();
    queue_error(status, std::move(code), std::move(message));
  }

  void queue_error(unsigned status, std::string code, std::string message) {
    slot s;
    s.res = std::make_unique<response>(
      srv_.render(status, std::move(code), std::move(message)));
    s.close = true;
    outstanding_.push_back(std::move(s));
    try_write();
  }

  void dispatch() {
    disarm(rdl_);
    auto& msg = parser_->get();
    auto ex = std::make_shared<exchange_impl>(shard_.gate, weak_from_this());
    auto& req = ex->req_;
    if (gzip_body_) {
      switch (gunzip(msg.body(), cfg().max_body_bytes, req.body)) {
        case inflate_result::ok:
          break;
        case inflate_result::too_large:
          refuse(413, "payload_too_large", "decoded request body too large",
                 "body_too_large");
          return;
        case inflate_result::corrupt:
          refuse(400, "invalid_request", "corrupt gzip request body",
                 "bad_request");
          return;
      }
    } else {
      req.body = std::move(msg.body());
    }
    req.method = std::string{msg.method_string()};
    req.target = std::string{msg.target()};
    std::string_view t = req.target;
    if (!t.empty() && t.front() != '/') {
      // absolute-form: http://host/path?query
      auto scheme = t.find("://");
      if (scheme != std::string_view::npos) {
        auto slash = t.find('/', scheme + 3);
        t = slash == std::string_view::npos ? std::string_view{"/"}
                                            : t.substr(slash);
      }
    }
    auto qm = t.find('?');
    req.path = percent_decode(t.substr(0, qm), false);
    if (qm != std::string_view::npos)
      req.query = std::string{t.substr(qm + 1)};
    req.headers.reserve(std::distance(msg.begin(), msg.end()));
    for (auto& f : msg)
      req.headers.push_back(
        {std::string{f.name_string()}, std::string{f.value()}});
    req.remote_address = remote_;
    req.tls = is_tls;
    req.connection_id = id_;

    slot s;
    s.ex = ex;
    s.head = msg.method() == bhttp::verb::head;
    auto range = msg.equal_range(bhttp::field::accept_encoding);
    for (auto i = range.first; i != range.second; ++i)
      s.gzip_ok = s.gzip_ok || accepts_gzip(sv(i->value()));
    bool keep_alive = parser_->keep_alive() && !draining_;
    s.close = !keep_alive;
    s.keep_alive_10 = keep_alive && msg.version() == 10;
    outstanding_.push_back(std::move(s));
    parser_.reset();
    if (buffer_.size() == 0)
      buffer_.shrink_to_fit();
    rstate_ = keep_alive ? rstate::paused : rstate::done;
    srv_.call_handler(ex);
    read_next();
  }

  // -- write side --

  void write_continue() {
    static constexpr std::string_view text = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true;
    interim_ = true;
    arm(wdl_, cfg().write_timeout, deadline_kind::write);
    asio::async_write(stream_, asio::buffer(text.data(), text.size()),
                      [self = self()](error_code ec, size_t) {
                        self->on_write(ec);
                      });
  }

  void try_write() {
    if (writing_ || closed_ || closing_ || outstanding_.empty())
      return;
    auto& s = outstanding_.front();
    if (!s.res) {
      if (s.ex && s.ex->cancelled())
        hard_close(); // after EOF: nothing more to say
      return;
    }
    wclose_ = s.close || s.res->close
              || (rstate_ == rstate::done && outstanding_.size() == 1);
    serialize(s, wclose_);
    if constexpr (is_tls) {
      // One TLS record (and one write) instead of two for a small answer.
      if (!wbody_.empty() && whead_.size() + wbody_.size() <= tls_record) {
        whead_ += wbody_;
        wbody_.clear();
      }
    }
    writing_ = true;
    arm(wdl_, cfg().write_timeout, deadline_kind::write);
    std::array<asio::const_buffer, 2> bufs{asio::buffer(whead_),
                                           asio::buffer(wbody_)};
    asio::async_write(stream_, bufs, [self = self()](error_code ec, size_t) {
      self->on_write(ec);
    });
  }

  void serialize(slot& s, bool close) {
    auto& r = *s.res;
    unsigned status = r.status >= 100 && r.status <= 999 ? r.status : 500;
    bool bodiless = status < 200 || status == 204 || status == 304;
    auto reason = bhttp::obsolete_reason(bhttp::int_to_status(status));
    if (reason.empty() || reason.front() == '<')
      reason = "Unknown"; // Beast says "<unknown-status>"
    auto& h = whead_;
    h.clear();
    h.reserve(160 + r.content_type.size());
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h.append(reason.data(), reason.size());
    h += "\r\nDate: ";
    h += http_date();
    h += "\r\n";
    bool has_coding = false;
    bool has_vary = false;
    for (auto& f : r.headers) {
      if (f.name.empty() || !header_safe(f.name) || !header_safe(f.value)) {
        srv_.log("warn",
                 "dropped unsafe response header conn=" + std::to_string(id_));
        continue;
      }
      if (iequals(f.name, "content-length")
          || iequals(f.name, "transfer-encoding")
          || iequals(f.name, "connection"))
        continue;
      has_coding = has_coding || iequals(f.name, "content-encoding");
      has_vary = has_vary || iequals(f.name, "vary");
      h += f.name;
      h += ": ";
      h += f.value;
      h += "\r\n";
    }
    wbody_.clear();
    if (!bodiless) {
      if (!r.content_type.empty() && header_safe(r.content_type)) {
        h += "Content-Type: ";
        h += r.content_type;
        h += "\r\n";
      }
      if (!has_coding && !r.body.empty()
          && r.body.size() >= cfg().gzip_min_bytes) {
        if (!has_vary)
          h += "Vary: Accept-Encoding\r\n";
        if (s.gzip_ok && !s.head) {
          auto z = gzip(r.body);
          if (!z.empty() && z.size() < r.body.size()) {
            r.body = std::move(z);
            h += "Content-Encoding: gzip\r\n";
          }
        }
      }
      h += "Content-Length: ";
      h += std::to_string(r.body.size());
      h += "\r\n";
      if (!s.head)
        wbody_ = std::move(r.body);
    }
    if (close)
      h += "Connection: close\r\n";
    else if (s.keep_alive_10)
      h += "Connection: keep-alive\r\n";
    h += "\r\n";
  }

  void on_write(error_code ec) {
    writing_ = false;
    disarm(wdl_);
    if (closed_)
      return;
    if (ec) {
      hard_close(); // reset or broken pipe: the peer is gone
      return;
    }
    std::string{}.swap(whead_);
    std::string{}.swap(wbody_);
    if (interim_) {
      interim_ = false;
      try_write();
      return;
    }
    outstanding_.erase(outstanding_.begin());
    if (wclose_) {
      graceful_close();
      return;
    }
    try_write();
    if (closed_)
      return;
    if (rstate_ == rstate::paused)
      read_next();
    else if (rstate_ == rstate::idle)
      arm_idle_if_quiet();
    else if (rstate_ == rstate::done && outstanding_.empty() && !writing_)
      close_after_peer();
  }

  // -- closing --

  void note_cancel(exchange_impl& ex) {
    if (ex.cancel() > 0)
      srv_.log("warn", "on_cancel callback threw conn=" + std::to_string(id_));
  }

  void cancel_outstanding() {
    auto slots = std::move(outstanding_);
    outstanding_.clear();
    for (auto& s : slots)
      if (s.ex)
        note_cancel(*s.ex);
  }

  /// After a final response: FIN, then read and discard what the client
  /// still sends (bounded), so our close does not reset the response away.
  void graceful_close() {
    if (closed_ || closing_)
      return;
    closing_ = true;
    stop_reading();
    cancel_outstanding();
    error_code ec;
    cancel_io(stream_, ec); // an idle wait or a pipelined read
    arm(rdl_, linger_time, deadline_kind::linger);
    if constexpr (is_tls) {
      // close_notify, then as over plain TCP: our side shut, and what the
      // client still sends read (ciphertext, dropped) until it closes, so
      // the answer is not lost to a reset.
      stream_.async_shutdown([self = self()](error_code ec) {
        if (ec || self->closed_) {
          self->hard_close();
          return;
        }
        lowest(self->stream_).shutdown(tcp::socket::shutdown_send, ec);
        self->linger_read();
      });
    } else {
      lowest(stream_).shutdown(tcp::socket::shutdown_send, ec);
      linger_read();
    }
  }

  void linger_read() {
    // Discarded bytes go to a per-thread scratch area, not buffer_: a
    // cancelled Beast read may still hold buffer_. The recv runs on this
    // thread (one thread per io_context).
    thread_local std::array<char, 4096> discard;
    lowest(stream_).async_read_some(asio::buffer(discard),
                                    [self = self()](error_code ec, size_t n) {
                                      if (self->closed_)
                                        return;
                                      self->lingered_ += n;
                                      if (ec || self->lingered_ > linger_bytes)
                                        self->hard_close();
                                      else
                                        self->linger_read();
                                    });
  }

  void hard_close() {
    if (closed_)
      return;
    closed_ = true;
    rstate_ = rstate::done;
    release_parser();
    cancel_outstanding();
    error_code ec;
    lowest(stream_).close(ec); // pending operations complete, aborted
    rdl_.t.cancel();
    wdl_.t.cancel();
  }

  // -- state --

  server::impl& srv_;
  shard& shard_;
  std::shared_ptr<ssl::context> tls_ctx_; // this connection's certificate
  Stream stream_;
  deadline rdl_;
  deadline wdl_;
  beast::flat_buffer buffer_;
  std::unique_ptr<parser_type> parser_; // only while reading a request
  std::vector<slot> outstanding_;       // in request order
  std::string whead_;                   // the response being written
  std::string wbody_;
  std::string remote_; // peer IP as text
  uint64_t id_;
  size_t lingered_ = 0;
  rstate rstate_ = rstate::paused;
  bool refusal_;             // a 503 at accept: answer, then close
  bool parser_busy_ = false; // a Beast read holds parser_ and buffer_
  bool writing_ = false;     // a write is in flight
  bool interim_ = false;     // ... and it is the 100 Continue
  bool wclose_ = false;      // ... and the connection closes after it
  bool gzip_body_ = false;   // the request being read is gzip-encoded
  bool draining_ = false;    // stop(): no keep-alive any more
  bool closing_ = false;     // graceful_close started
  bool watching_done_ = false; // watch_done's wait is pending
  std::array<char, 64> done_probe_{};
  bool closed_ = false;      // socket closed; completions just return
};

bool out_of_resources(const error_code& ec) {
  return ec == asio::error::no_descriptors || ec.value() == ENFILE
         || ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
}

} // namespace

// -- server::impl, continued --------------------------------------------------

std::string server::impl::load_tls(std::shared_ptr<ssl::context>& out) const {
  try {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                     | ssl::context::no_sslv3 | ssl::context::no_tlsv1
                     | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    // Idle TLS connections give their record buffers back. No
    // renegotiation (a client could make us do handshakes at will, and a
    // write would then have to wait for reads). A client that ends its side
    // without close_notify (many do, after their last request) still gets
    // its answers: OpenSSL 3 would otherwise fail the session for writing
    // too. HTTP's own framing tells a cut-off request.
    SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx->native_handle(),
                        SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    ctx->use_certificate_chain_file(cfg_.tls_cert);
    ctx->use_private_key_file(cfg_.tls_key, ssl::context::pem);
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
      return "tls_key does not match tls_cert";
    out = std::move(ctx);
    return {};
  } catch (const std::exception& e) {
    return std::string{"cannot load tls_cert/tls_key: "} + e.what();
  }
}

std::string server::impl::reload_tls() {
  if (cfg_.tls_cert.empty() || cfg_.tls_key.empty())
    return "TLS is not configured";
  std::shared_ptr<ssl::context> fresh;
  if (auto err = load_tls(fresh); !err.empty())
    return err;
  std::lock_guard<std::mutex> guard{tls_mutex_};
  tls_.swap(fresh);
  return {};
}

std::string server::impl::start() {
  std::lock_guard<std::mutex> lifecycle{lifecycle_mutex_};
  if (phase_ != phase::fresh)
    return "server already started";
  auto colon = cfg_.listen.rfind(':');
  if (colon == std::string::npos)
    return "listen must be HOST:PORT: " + cfg_.listen;
  auto host = cfg_.listen.substr(0, colon);
  auto port_text = cfg_.listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty())
    host = "0.0.0.0";
  else if (host == "localhost")
    host = "127.0.0.1";
  char* end = nullptr;
  auto port_num = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port_num > 65535)
    return "invalid port in listen: " + cfg_.listen;
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec)
    return "invalid host in listen (an IP address): " + cfg_.listen;
  if (cfg_.tls_cert.empty() != cfg_.tls_key.empty())
    return "tls_cert and tls_key must be set together";
  if (!cfg_.tls_cert.empty()) {
    if (auto err = reload_tls(); !err.empty())
      return err;
    // OpenSSL writes to sockets with write(): a peer that reset must not
    // kill the process (plain sockets use MSG_NOSIGNAL).
    std::signal(SIGPIPE, SIG_IGN);
  }

  auto threads = cfg_.io_threads != 0 ? cfg_.io_threads
                                      : std::thread::hardware_concurrency();
  threads = std::max<size_t>(threads, 1);
  for (size_t i = 0; i < threads; ++i)
    shards_.push_back(std::make_unique<shard>());
  try {
    tcp::endpoint ep{address, static_cast<uint16_t>(port_num)};
    acceptor_ = std::make_unique<tcp::acceptor>(shards_[0]->ctx);
    acceptor_->open(ep.protocol());
    acceptor_->set_option(asio::socket_base::reuse_address(true));
    acceptor_->bind(ep);
    acceptor_->listen(cfg_.backlog);
    port_ = acceptor_->local_endpoint().port();
    backoff_ = std::make_unique<timer>(shards_[0]->ctx.get_executor());
    for (size_t i = 0; i < threads; ++i) {
      guards_.push_back(asio::make_work_guard(shards_[i]->ctx));
      shards_[i]->thread
        = std::thread{[this, i] { run_shard(*shards_[i], i); }};
    }
  } catch (const std::exception& e) {
    for (auto& g : guards_)
      g.reset();
    for (auto& s : shards_) {
      s->ctx.stop();
      if (s->thread.joinable())
        s->thread.join();
    }
    guards_.clear();
    backoff_.reset();
    acceptor_.reset();
    shards_.clear();
    port_ = 0;
    return "cannot listen on " + cfg_.listen + ": " + e.what();
  }
  asio::post(shards_[0]->ctx, [this] { do_accept(); });
  phase_ = phase::running;
  log("info", "listening on " + host + ":" + std::to_string(port_.load())
                + " threads=" + std::to_string(threads)
                + (cfg_.tls_cert.empty() ? " http" : " https"));
  return {};
}

void server::impl::run_shard(shard& sh, size_t index) {
  auto name = "troupe-http-" + std::to_string(index);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  for (;;) {
    // Handlers catch their own exceptions; this is the last line, so an
    // I/O thread never dies and takes its connections with it.
    try {
      sh.ctx.run();
      return;
    } catch (const std::exception& e) {
      log("error", std::string{"I/O thread caught: "} + e.what());
    } catch (...) {
      log("error", "I/O thread caught an unknown exception");
    }
  }
}

void server::impl::do_accept() {
  auto& target = *shards_[next_shard_];
  next_shard_ = (next_shard_ + 1) % shards_.size();
  acceptor_->async_accept(target.ctx,
                          [this, &target](error_code ec, tcp_socket s) {
                            on_accept(ec, std::move(s), target);
                          });
}

void server::impl::on_accept(error_code ec, tcp_socket s, shard& target) {
  if (ec == asio::error::operation_aborted || stopping_.load())
    return;
  if (ec) {
    if (ec == asio::error::connection_aborted || ec == asio::error::interrupted
        || ec == asio::error::would_block) {
      do_accept();
      return;
    }
    // Returning here would stop accepting for good; EMFILE and friends
    // clear up as connections close.
    if (!backing_off_)
      log(out_of_resources(ec) ? "warn" : "error",
          "accept failed, retrying in " + std::to_string(accept_backoff.count())
            + " ms: " + ec.message());
    backing_off_ = true;
    backoff_->expires_after(accept_backoff);
    backoff_->async_wait([this](error_code ec) {
      if (!ec && !stopping_.load())
        do_accept();
    });
    return;
  }
  if (backing_off_) {
    backing_off_ = false;
    log("info", "accepting again");
  }
  error_code ignored;
  s.set_option(tcp::no_delay(true), ignored);
  bool refusal = open_.load() >= cfg_.max_connections;
  if (refusal && refusing_.load() >= max_refusing) {
    refused("connection_cap");
    s.close(ignored);
    do_accept();
    return;
  }
  (refusal ? refusing_ : open_).fetch_add(1);
  std::shared_ptr<ssl::context> tls;
  {
    std::lock_guard<std::mutex> guard{tls_mutex_};
    tls = tls_;
  }
  asio::post(target.ctx, [this, &target, s = std::move(s), tls = std::move(tls),
                          refusal]() mutable {
    start_connection(target, std::move(s), std::move(tls), refusal);
  });
  do_accept();
}

void server::impl::start_connection(shard& sh, tcp_socket s,
                                    std::shared_ptr<ssl::context> tls,
                                    bool refusal) {
  std::shared_ptr<connection_base> c;
  try {
    if (tls)
      c = std::make_shared<connection<tls_stream>>(
        *this, sh, tls_stream{std::move(s), *tls}, tls, refusal);
    else
      c = std::make_shared<connection<tcp_socket>>(*this, sh, std::move(s),
                                                   nullptr, refusal);
  } catch (const std::exception& e) {
    log("error", std::string{"cannot set up a connection: "} + e.what());
    connection_closed(refusal);
    return;
  }
  try {
    c->start();
  } catch (const std::exception& e) {
    log("error", std::string{"cannot start a connection: "} + e.what());
    c->force_close();
  }
}

void server::impl::wait_drained(clock_type::time_point deadline) {
  std::unique_lock<std::mutex> guard{drained_mutex_};
  drained_cv_.wait_until(guard, deadline, [this] {
    return open_.load() == 0 && refusing_.load() == 0;
  });
}

void server::impl::stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lifecycle{lifecycle_mutex_};
  if (phase_ != phase::running) {
    phase_ = phase::stopped;
    return;
  }
  phase_ = phase::stopped;
  auto deadline = clock_type::now() + grace;
  stopping_ = true;
  asio::post(shards_[0]->ctx, [this] {
    error_code ec;
    acceptor_->close(ec);
    backoff_->cancel();
  });
  for (auto& s : shards_)
    asio::post(s->ctx, [sh = s.get()] {
      for_each_connection(*sh, [](connection_base& c) { c.drain(); });
    });
  wait_drained(deadline);
  for (auto& s : shards_)
    asio::post(s->ctx, [sh = s.get()] {
      for_each_connection(*sh, [](connection_base& c) { c.force_close(); });
    });
  // Closed sockets complete their operations at once; this only waits for
  // those completions to run and release the connections.
  wait_drained(clock_type::now() + std::chrono::seconds{1});
  for (auto& g : guards_)
    g.reset();
  for (auto& s : shards_)
    s->ctx.stop();
  for (auto& s : shards_)
    if (s->thread.joinable())
      s->thread.join();
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s->gate->mutex};
    s->gate->ctx = nullptr;
  }
  guards_.clear();
  backoff_.reset();
  acceptor_.reset();
  // Destroys what is left; connections still owned by queued handlers go
  // with their io_context and cancel their exchanges on the way.
  shards_.clear();
  log("info", "stopped");
}

// -- server -------------------------------------------------------------------

server::server(server_config cfg, handler h, error_renderer e,
               server_hooks hooks)
  : impl_(std::make_unique<impl>(std::move(cfg), std::move(h), std::move(e),
                                 std::move(hooks))) {
}

server::~server() = default;

std::string server::start() {
  return impl_->start();
}

uint16_t server::port() const {
  return impl_->port();
}

size_t server::open_connections() const {
  return impl_->open_connections();
}

void server::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}

std::string server::reload_tls() {
  return impl_->reload_tls();
}

} // namespace troupe::http
