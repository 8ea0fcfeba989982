#pragma once

#include <string>

#include <caf/expected.hpp>

namespace troupe::storage {

/// The embedded default: a PostgreSQL cluster that troupe creates (initdb),
/// starts (pg_ctl) and stops under `<data_dir>/postgres`, listening on
/// 127.0.0.1 at a free port with a generated password (kept in
/// `<data_dir>/postgres.password`, mode 0600).
///
/// Owned by runtime::node; started before anything touches storage and
/// stopped last. When troupe runs as root, the server runs as the `postgres`
/// system user (PostgreSQL refuses root). If a previous troupe died and left
/// the server running, start() adopts it.
class embedded_postgres {
public:
  explicit embedded_postgres(std::string data_dir);
  ~embedded_postgres();

  /// Creates the cluster if needed, starts it and returns a libpq URL for the
  /// `troupe` database.
  [[nodiscard]] caf::expected<std::string> start();

  /// Stops the server (fast shutdown). Idempotent.
  void stop();

private:
  std::string data_dir_;
  std::string pg_dir_;
  std::string bin_dir_;
  std::string run_as_;
  bool started_ = false;
};

/// Finds the newest /usr/lib/postgresql/N/bin; empty if none.
std::string find_pg_bin_dir();

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
uint16_t pick_free_port();

} // namespace troupe::storage
