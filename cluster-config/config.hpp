#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "cluster-config/errc.hpp"
#include "cluster-config/node_config.hpp"

/// Loading a `node_config`: defaults, then the config file, then environment
/// variables, then command-line overrides, then the validator. Every setting
/// is declared once in a field table (config.cpp) that drives all sources.
namespace troupe::config {

/// A source of environment variables (std::getenv in production).
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

/// What the command line asked for.
struct command_line {
  /// "serve", "help" or "version" (or "config" to print the effective tree).
  std::string command = "serve";
  /// Path given by --config, empty if none.
  std::string config_file;
  /// Settings given as flags (--listen, --data-dir, --set key=value, ...),
  /// keyed by their dotted name ("http.listen").
  std::map<std::string, std::string> overrides;
};

/// Parses argv. Returns an error naming the bad flag; never throws.
[[nodiscard]] caf::expected<command_line> parse_args(int argc, char** argv);

/// Text for --help.
std::string usage();

/// Builds the configuration from the given sources and validates it.
[[nodiscard]] caf::expected<node_config>
load(const command_line& cl, const env_lookup& env);

/// Same, with the config file's text given directly (for tests).
[[nodiscard]] caf::expected<node_config>
load_from_text(const std::string& file_text,
               const std::map<std::string, std::string>& overrides,
               const env_lookup& env);

/// Checks ranges and contradictions; the error names the field.
[[nodiscard]] caf::error validate(const node_config& cfg);

/// Renders the effective configuration as a config file (passwords in
/// connection strings shown as ***).
std::string render(const node_config& cfg);

/// `text` with the passwords of the connection strings in it (URL user
/// info, password=...) replaced by ***.
std::string redact_credentials(const std::string& text);

/// The environment variable for a dotted key: "http.listen" ->
/// "TROUPE_HTTP_LISTEN".
std::string env_name(const std::string& key);

/// Splits a list of PostgreSQL connection strings given as one text (an
/// environment variable or a flag) at its commas, but keeps a multi-host
/// URL ("postgresql://h1:5432,h2:5432/db") or a keyword/value string with
/// a host list ("host=h1,h2 dbname=db") whole: a comma starts a new entry
/// only where a URL ("scheme://") or a keyword ("name=") follows it.
std::vector<std::string> split_database_list(const std::string& text);

/// Splits "host:port"; false if malformed.
bool split_host_port(const std::string& in, std::string& host, uint16_t& port);

} // namespace troupe::config
