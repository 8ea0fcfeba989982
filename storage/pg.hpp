#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
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

/// Whether a statement may run again on a new connection after the old one
/// broke mid-call (PostgreSQL restarted, a failover, a dropped socket):
/// only when running it twice is harmless.
enum class retry {
  /// Reads (a statement starting with SELECT) yes, everything else no.
  if_read,
  /// The caller vouches that the statement is idempotent.
  idempotent,
  /// Never.
  never,
};

/// One libpq connection. Not thread-safe: owned by one actor or borrowed from
/// a pool by one thread at a time. Reconnects lazily after a broken link:
/// before each statement it checks, without blocking, that the server has
/// not closed the link meanwhile (so the first query after a PostgreSQL
/// restart does not fail), and a statement that finds the link broken runs
/// once more on a new link when it is safe to (see `retry`; never inside a
/// transaction).
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
                                           = {},
                                           retry when = retry::if_read);

  /// Statements that found a broken link and ran again on a new one.
  uint64_t retries() const { return retries_; }

  /// Escapes an identifier.
  std::string quote_ident(const std::string& x);

  /// Drops the link (next ensure() reconnects).
  void reset();

  PGconn* native() { return conn_; }

private:
  caf::error to_error(PGresult* res, const std::string& sql);
  caf::expected<result> exec_once(const std::string& sql,
                                  const std::vector<param>& params);
  /// Drops the link if the server closed it since the last statement.
  void check_alive();
  std::string url_;
  int64_t connect_timeout_s_;
  PGconn* conn_ = nullptr;
  /// Inside BEGIN ... COMMIT/ROLLBACK: a retry would run outside it.
  /// The name of sql's prepared statement on this link, preparing it first;
  /// empty when the cache is full (then it runs unnamed).
  caf::expected<std::string> prepare(const std::string& sql);
  /// Statements with parameters are prepared once per link; a bound on
  /// them in case some caller builds ever-new SQL texts.
  static constexpr size_t max_prepared = 512;
  std::unordered_map<std::string, std::string> prepared_;
  uint64_t next_prepared_ = 0; // names are never reused on a link
  bool in_tx_ = false;
  uint64_t retries_ = 0;
};

/// Checks that `url` is a libpq connection string (URL or key=value) that
/// libpq can parse; the error says what is wrong with it.
[[nodiscard]] caf::error check_url(const std::string& url);

/// The host(s) and port(s) a connection string names, "h1:p1,h2:p2", for
/// logs and status pages (never the password); "?" if it cannot be parsed.
std::string url_address(const std::string& url);

/// Formats a vector as a PostgreSQL array literal of text elements.
std::string array_literal(const std::vector<std::string>& xs);
std::string array_literal(const std::vector<int64_t>& xs);

} // namespace troupe::storage
