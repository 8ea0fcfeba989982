#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "storage/errc.hpp"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace troupe::storage {

/// A query result. Owns the PGresult; text format only.
class result {
public:
  result() = default;
  explicit result(PGresult* res);
  result(result&&) noexcept = default;
  result& operator=(result&&) noexcept = default;

  int rows() const;
  bool is_null(int row, int col) const;
  std::string_view text(int row, int col) const;
  std::string str(int row, int col) const {
    return std::string{text(row, col)};
  }
  int64_t i64(int row, int col) const;
  double f64(int row, int col) const;
  bool boolean(int row, int col) const;
  std::optional<int64_t> opt_i64(int row, int col) const;
  /// Rows touched by an INSERT/UPDATE/DELETE.
  int64_t affected() const;

private:
  struct deleter {
    void operator()(PGresult* p) const;
  };
  std::unique_ptr<PGresult, deleter> res_;
};

/// A parameter: text or SQL NULL.
using param = std::optional<std::string>;

/// One libpq connection. Not thread-safe: owned by one actor or borrowed from
/// a pool by one thread at a time. Reconnects lazily after a broken link.
class connection {
public:
  explicit connection(std::string url, int64_t connect_timeout_s = 5);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Connects if not connected; unavailable on failure.
  [[nodiscard]] caf::error ensure();

  /// True while the link is up.
  bool ok() const;

  /// Runs one statement with text parameters ($1, $2, ...).
  [[nodiscard]] caf::expected<result> exec(const std::string& sql,
                                           const std::vector<param>& params
                                           = {});

  /// Runs a COPY ... FROM STDIN with the given payload.
  [[nodiscard]] caf::error copy_in(const std::string& sql,
                                   const std::string& payload);

  /// Escapes an identifier.
  std::string quote_ident(const std::string& x);

  /// Drops the link (next ensure() reconnects).
  void reset();

  PGconn* native() { return conn_; }

private:
  caf::error to_error(PGresult* res, const std::string& sql);
  std::string url_;
  int64_t connect_timeout_s_;
  PGconn* conn_ = nullptr;
};

/// A fixed-size pool of connections for blocking callers. Thread-safe.
class pool {
public:
  pool(std::string url, size_t size, int64_t connect_timeout_s);
  ~pool();

  /// A borrowed connection; returns itself to the pool on destruction.
  class lease {
  public:
    lease(pool* owner, std::unique_ptr<connection> c)
      : owner_(owner), conn_(std::move(c)) {}
    lease(lease&&) noexcept = default;
    ~lease();
    connection* operator->() { return conn_.get(); }
    connection& operator*() { return *conn_; }

  private:
    pool* owner_;
    std::unique_ptr<connection> conn_;
  };

  /// Borrows a connection, waiting while all are in use.
  lease acquire();

  const std::string& url() const { return url_; }

private:
  friend class lease;
  void release(std::unique_ptr<connection> c);
  struct impl;
  std::unique_ptr<impl> impl_;
  std::string url_;
};

/// Formats a vector as a PostgreSQL array literal of text elements.
std::string array_literal(const std::vector<std::string>& xs);
std::string array_literal(const std::vector<int64_t>& xs);

} // namespace troupe::storage
