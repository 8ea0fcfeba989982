#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

/// An event-driven HTTP/1.1 server (Boost.Beast and Boost.Asio behind a
/// pimpl, so including this header stays cheap). It depends on nothing else
/// in troupe: the edge plugs its routes in through `handler`, its error body
/// through `error_renderer` and its logger and probe through `server_hooks`.
namespace troupe::http {

/// What the server listens on and the limits it enforces. Read once by
/// `server::start`; later changes have no effect (except the TLS files,
/// re-read by `server::reload_tls`).
struct server_config {
  /// HOST:PORT; an IPv6 host in brackets; port 0 picks an ephemeral port.
  std::string listen = "127.0.0.1:8080";
  /// I/O threads, each running its own io_context; 0: hardware threads.
  size_t io_threads = 0;
  /// listen(2) backlog.
  int backlog = 4096;
  /// Open connections beyond this get a 503 at accept and are closed.
  size_t max_connections = 20000;
  /// Request line plus header fields, bytes; over it: 431.
  size_t max_header_bytes = 16 * 1024;
  /// Body bytes, declared, received and after gzip decoding; over it: 413.
  size_t max_body_bytes = 1 << 20;
  /// From the first byte of a request to the end of its header block; also
  /// bounds the TLS handshake.
  std::chrono::milliseconds header_timeout{10000};
  /// From the end of the header block to the end of the body.
  std::chrono::milliseconds body_timeout{30000};
  /// Keep-alive idle: no request outstanding and nothing being read.
  std::chrono::milliseconds idle_timeout{60000};
  /// One response (or interim 100 Continue) write.
  std::chrono::milliseconds write_timeout{30000};
  /// Requests outstanding per connection before reading pauses.
  size_t max_pipelined = 16;
  /// Responses with at least this many body bytes are gzipped when the
  /// request accepts gzip.
  size_t gzip_min_bytes = 1024;
  /// PEM files; when both are set the server speaks HTTPS only.
  std::string tls_cert;
  std::string tls_key;
};

struct header_field {
  std::string name;
  std::string value;
};

/// One parsed request, immutable once handed to the handler.
struct request {
  std::string method;
  std::string target;
  /// Percent-decoded, without the query.
  std::string path;
  /// Raw, after the first '?'.
  std::string query;
  /// As received (Content-Encoding included although `body` is decoded).
  std::vector<header_field> headers;
  /// gzip already decoded.
  std::string body;
  /// Peer IP address as text.
  std::string remote_address;
  bool tls = false;
  uint64_t connection_id = 0;

  /// Case-insensitive lookup; empty if absent (first match).
  std::string header(std::string_view name) const;

  bool has_header(std::string_view name) const;

  /// Whether Accept-Encoding allows gzip (q > 0).
  bool accepts_gzip() const;

  /// Query parameter, percent-decoded ('+' as space); std::nullopt if absent.
  std::optional<std::string> param(std::string_view name) const;
};

/// What a handler answers. The server adds Content-Length, Date, Connection
/// and, when it compresses, Content-Encoding and Vary; handler headers named
/// Content-Length, Transfer-Encoding or Connection are dropped, and headers
/// with CR or LF in them are dropped and logged.
struct response {
  unsigned status = 200;
  std::string content_type = "application/json; charset=utf-8";
  /// Extra headers (Set-Cookie, Retry-After, ...).
  std::vector<header_field> headers;
  std::string body;
  /// Close the connection after writing this response.
  bool close = false;
};

/// A request in flight. The server creates it on an I/O thread and hands it
/// to the handler, which may keep it and answer later from any thread; it
/// may outlive the server (replies then go nowhere).
class exchange {
public:
  virtual ~exchange() = default;

  virtual const request& req() const = 0;

  /// Thread-safe; the first call wins, later calls (and calls after
  /// cancellation) are ignored. Posts to the connection's I/O thread, which
  /// writes responses in request order. Never throws.
  virtual void reply(response r) = 0;

  /// Registers fn, called once on an I/O thread if the client goes away
  /// (EOF, reset, failed write) or the server force-closes the connection
  /// before reply(); runs at once if already cancelled, never after a
  /// reply(). Thread-safe. Used to release held long-polls.
  virtual void on_cancel(std::function<void()> fn) = 0;

  virtual bool cancelled() const = 0;
};

using exchange_ptr = std::shared_ptr<exchange>;

/// Called on an I/O thread for each request; must not block. An exception
/// thrown from it becomes a 500 with code `internal` (and a log line).
using handler = std::function<void(exchange_ptr)>;

/// Builds the response for refusals the server makes itself: status, a
/// snake_case code and a human message. Codes: 400 invalid_request, 408
/// request_timeout, 413 payload_too_large, 415 unsupported_media_type, 431
/// header_too_large, 500 internal, 503 unavailable.
using error_renderer = std::function<response(unsigned status, std::string code,
                                              std::string message)>;

/// Observers; each may be called from any I/O thread and must not block.
struct server_hooks {
  /// One call per refused or timed-out connection or request, with one of:
  /// connection_cap, header_timeout, body_timeout, idle_timeout,
  /// header_too_large, body_too_large, bad_request, unsupported_encoding,
  /// tls_handshake, plain_http (an HTTP request on the TLS port, answered
  /// 400 in clear text), write_timeout.
  std::function<void(std::string_view reason)> refused;
  /// level is "info", "warn" or "error".
  std::function<void(std::string_view level, std::string msg)> log;
};

/// The HTTP/1.1 server. The owner constructs it, calls start() once and
/// stop() (or the destructor) once, never from an I/O thread: stop joins
/// them. port(), open_connections() and reload_tls() may be called from any
/// thread.
///
/// Threads: `io_threads` threads, each with its own io_context; the acceptor
/// lives on the first and deals new sockets round-robin, and a connection
/// stays on its io_context for life, so its state needs no locks. Handlers,
/// hooks and the error renderer run on those threads and must not block.
///
/// Memory: an idle keep-alive connection holds no parser and no buffer (it
/// waits for readability), about 1.2 KB in user space; a TLS connection
/// adds OpenSSL's state and Asio's two 17 KB TLS record buffers.
class server {
public:
  server(server_config cfg, handler h, error_renderer e,
         server_hooks hooks = {});

  /// Stops (with no grace) if running; never hangs on clients.
  ~server();

  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds and starts the I/O threads. Empty string on success, else why
  /// not (nothing is left running then).
  std::string start();

  /// The bound port; 0 before start().
  uint16_t port() const;

  /// Connections accepted and not yet closed (503 refusals not counted).
  size_t open_connections() const;

  /// Stops accepting; idle connections close now; connections with requests
  /// outstanding get their replies (the last one with Connection: close) up
  /// to `grace`, then the rest are cancelled and closed and the threads
  /// joined. Final: the server cannot be started again.
  void stop(std::chrono::milliseconds grace);

  /// Re-reads tls_cert/tls_key (e.g. on SIGHUP): new connections use the new
  /// certificate, open ones keep theirs. Empty string on success; on failure
  /// the old certificate stays.
  std::string reload_tls();

  /// Opaque; named here so file-local code in server.cpp can refer to it.
  class impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::http
