#pragma once

// A TLS connection as an Asio AsyncStream, for the edge's server side (and
// the client side of bench/troupe_fleet's devices): OpenSSL works on the socket's file descriptor itself (non-blocking, as
// nginx does), and an operation that would block waits for readiness with
// async_wait. asio::ssl::stream instead keeps two 17 KiB staging vectors and
// a BIO pair of two more 17 KiB rings for every connection, written and so
// resident: with them an idle TLS device cost the node ~74 KiB, against
// ~17 KiB for nginx (bench/RESULTS.md). Here an idle connection holds its
// SSL object only; SSL_MODE_RELEASE_BUFFERS (set on the context) gives the
// record buffers back between requests.
//
// One io_context thread drives a socket (the edge's model): operations on
// it never run concurrently, though a read and a write may both be pending.
// OpenSSL writes to the socket with write(): the process must ignore
// SIGPIPE (http::server makes sure of it when it serves TLS). The object
// must not move while an operation is pending.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/system/error_code.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace troupe::http {

template <class Socket>
class tls_socket {
public:
  using next_layer_type = Socket;
  using executor_type = typename Socket::executor_type;
  using error_code = boost::system::error_code;

  /// Takes over `sock` (connected) for a TLS session under `ctx`, the
  /// server's side unless `side` says client (the benchmarks' devices). A
  /// failed SSL_new shows as an error of the handshake.
  tls_socket(Socket sock, boost::asio::ssl::context& ctx,
             boost::asio::ssl::stream_base::handshake_type side
             = boost::asio::ssl::stream_base::server)
    : sock_(std::move(sock)), ssl_(SSL_new(ctx.native_handle())) {
    error_code ec;
    sock_.non_blocking(true, ec);
    if (ssl_ == nullptr || ec
        || SSL_set_fd(ssl_, static_cast<int>(sock_.native_handle())) != 1) {
      free_ssl();
      return;
    }
    if (side == boost::asio::ssl::stream_base::server)
      SSL_set_accept_state(ssl_);
    else
      SSL_set_connect_state(ssl_);
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE
                         | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }

  tls_socket(tls_socket&& other) noexcept
    : sock_(std::move(other.sock_)), ssl_(std::exchange(other.ssl_, nullptr)) {
  }

  tls_socket(const tls_socket&) = delete;
  tls_socket& operator=(const tls_socket&) = delete;
  tls_socket& operator=(tls_socket&&) = delete;

  ~tls_socket() { free_ssl(); }

  executor_type get_executor() noexcept { return sock_.get_executor(); }
  Socket& next_layer() noexcept { return sock_; }

  /// Cancels every pending operation: those waiting for the socket, and
  /// also one whose first step is posted or whose wait has completed but
  /// not yet run (a socket cancel alone would miss those, and they would
  /// go on to read or write).
  void cancel(error_code& ec) {
    ++generation_;
    sock_.cancel(ec);
  }

  template <class Handler>
  auto async_handshake(boost::asio::ssl::stream_base::handshake_type,
                       Handler&& handler) {
    return boost::asio::async_compose<Handler, void(error_code)>(
      op<kind::handshake, boost::asio::mutable_buffer>{*this, {}}, handler,
      sock_);
  }

  template <class Buffers, class Handler>
  auto async_read_some(const Buffers& buffers, Handler&& handler) {
    return boost::asio::async_compose<Handler, void(error_code, std::size_t)>(
      op<kind::read, boost::asio::mutable_buffer>{*this,
                                                  first_buffer(buffers)},
      handler, sock_);
  }

  template <class Buffers, class Handler>
  auto async_write_some(const Buffers& buffers, Handler&& handler) {
    auto b = first_buffer(buffers);
    return boost::asio::async_compose<Handler, void(error_code, std::size_t)>(
      op<kind::write, boost::asio::mutable_buffer>{
        *this, {const_cast<void*>(b.data()), b.size()}},
      handler, sock_);
  }

  /// Sends close_notify (not waiting for the peer's).
  template <class Handler>
  auto async_shutdown(Handler&& handler) {
    return boost::asio::async_compose<Handler, void(error_code)>(
      op<kind::shutdown, boost::asio::mutable_buffer>{*this, {}}, handler,
      sock_);
  }

private:
  enum class kind { handshake, read, write, shutdown };

  template <class Buffers>
  static auto first_buffer(const Buffers& buffers) {
    auto it = boost::asio::buffer_sequence_begin(buffers);
    auto end = boost::asio::buffer_sequence_end(buffers);
    for (; it != end; ++it)
      if (boost::asio::buffer_size(*it) > 0)
        return *it;
    using buffer_type = std::decay_t<decltype(*it)>;
    return buffer_type{};
  }

  /// One attempt of `k`: > 0 (or 1 for handshake and shutdown) done, 0 done
  /// with nothing (an empty buffer), -1 wait for reading, -2 for writing;
  /// `ec` set on failure.
  int attempt(kind k, boost::asio::mutable_buffer b, std::size_t& n,
              error_code& ec, unsigned generation) {
    n = 0;
    if (generation != generation_) {
      ec = boost::asio::error::operation_aborted;
      return 1;
    }
    if (ssl_ == nullptr || !sock_.is_open()) {
      // Closed meanwhile: the descriptor may already belong to another
      // connection, so OpenSSL must not touch it.
      ec = ssl_ == nullptr ? error_code{boost::asio::error::no_memory}
                           : error_code{boost::asio::error::operation_aborted};
      return 1;
    }
    if ((k == kind::read || k == kind::write) && b.size() == 0)
      return 0;
    // Another operation's output is half sent (it got WANT_WRITE): OpenSSL
    // cannot interleave a second write with it (a reply to a KeyUpdate
    // from inside SSL_read would fail the session with bad length), so
    // this one waits until that one is through.
    if (writer_ && *writer_ != k)
      return -2;
    ERR_clear_error();
    errno = 0;
    int r = 0;
    switch (k) {
      case kind::handshake:
        r = SSL_do_handshake(ssl_);
        break;
      case kind::read:
        r = SSL_read(ssl_, b.data(), static_cast<int>(std::min<std::size_t>(
                                       b.size(), 1 << 30)));
        break;
      case kind::write:
        r = SSL_write(ssl_, b.data(), static_cast<int>(std::min<std::size_t>(
                                        b.size(), 1 << 30)));
        break;
      case kind::shutdown:
        r = SSL_shutdown(ssl_);
        if (r == 0)
          r = 1; // close_notify sent; the peer's is not awaited
        break;
    }
    auto err = errno;
    auto status = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    if (status == SSL_ERROR_WANT_WRITE)
      writer_ = k;
    else if (writer_ == k)
      writer_.reset();
    if (r > 0) {
      n = static_cast<std::size_t>(r);
      return 1;
    }
    switch (status) {
      case SSL_ERROR_WANT_READ:
        return -1;
      case SSL_ERROR_WANT_WRITE:
        return -2;
      case SSL_ERROR_ZERO_RETURN:
        ec = boost::asio::error::eof; // close_notify: a clean end
        return 1;
      case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
          ec = err == 0 ? error_code{boost::asio::ssl::error::stream_truncated}
               : err == ECONNRESET
                 ? error_code{boost::asio::error::connection_reset}
                 : error_code{err, boost::asio::error::get_system_category()};
          return 1;
        }
        [[fallthrough]];
      default: {
        auto e = ERR_get_error();
        ERR_clear_error();
        // OpenSSL 3 reports a TCP end without close_notify as this SSL
        // error; asio::ssl::stream (and so the edge) calls it truncated.
        if (e == 0
            || (ERR_GET_LIB(e) == ERR_LIB_SSL
                && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
          ec = boost::asio::ssl::error::stream_truncated;
        else
          ec = error_code{static_cast<int>(e),
                          boost::asio::error::get_ssl_category()};
        return 1;
      }
    }
  }

  /// The composed operation: first hop posted (a handler never runs inside
  /// its initiating call), then attempt, waiting for readiness between
  /// attempts.
  template <kind K, class Buffer>
  struct op {
    tls_socket& s;
    Buffer b;
    unsigned generation = s.generation_;
    bool started = false;

    template <class Self>
    void operator()(Self& self, error_code ec = {}) {
      if (!started) {
        started = true;
        boost::asio::post(s.sock_.get_executor(), std::move(self));
        return;
      }
      std::size_t n = 0;
      if (!ec) {
        switch (s.attempt(K, b, n, ec, generation)) {
          case -1:
            s.sock_.async_wait(Socket::wait_read, std::move(self));
            return;
          case -2:
            s.sock_.async_wait(Socket::wait_write, std::move(self));
            return;
          default:
            break;
        }
      }
      if (s.writer_ == K && ec)
        s.writer_.reset(); // cancelled or failed while its output waited
      if constexpr (K == kind::read || K == kind::write)
        self.complete(ec, n);
      else
        self.complete(ec);
    }
  };

  void free_ssl() {
    if (ssl_ != nullptr)
      SSL_free(ssl_);
    ssl_ = nullptr;
  }

  Socket sock_;
  SSL* ssl_;
  /// Bumped by cancel(): operations started before it end aborted.
  unsigned generation_ = 0;
  /// The operation whose output OpenSSL holds half sent, if any. One
  /// operation of each kind runs at a time, so the kind names it.
  std::optional<kind> writer_;
};

} // namespace troupe::http
