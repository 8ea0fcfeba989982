#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

/// Helpers shared by the benchmark executables in bench/: argument parsing,
/// keep-alive HTTP clients, latency recording and result printing. Nothing
/// here is used by the troupe node itself.
namespace troupe::bench {

using bench_clock = std::chrono::steady_clock;

// -- command line -------------------------------------------------------------

/// One accepted command-line option: `--name value` or, for a flag, `--name`.
struct option_spec {
  enum kind_t { text, integer, flag };
  std::string name;
  kind_t kind = text;
  std::string default_value;
  std::string help;
  int64_t min = 0;
  int64_t max = INT64_MAX;
};

/// A hand-written parser for `--name value` arguments against a fixed list of
/// options. Owned by main(); `parse` runs once, then the getters are read-only.
/// Unknown options, missing values and out-of-range integers are errors.
class options {
public:
  options(std::string tool, std::string summary,
          std::vector<option_spec> specs);

  /// Parses argv; returns an empty string on success, else the error.
  [[nodiscard]] std::string parse(int argc, char** argv);

  /// True when `--help` or `-h` was given.
  bool help_requested() const {
    return help_;
  }

  /// True when the option was given on the command line.
  bool given(const std::string& name) const;

  std::string get(const std::string& name) const;

  int64_t get_int(const std::string& name) const;

  bool flag(const std::string& name) const;

  /// Text for `--help`, listing each option with its default.
  std::string usage() const;

private:
  const option_spec* find(const std::string& name) const;

  std::string tool_;
  std::string summary_;
  std::vector<option_spec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> given_;
  bool help_ = false;
};

// -- HTTP clients -------------------------------------------------------------

/// Makes a keep-alive client for `url` (`http://host:port`) with TCP_NODELAY
/// and the given timeouts; returns null when the URL is not usable.
std::unique_ptr<httplib::Client>
make_client(const std::string& url, int connect_timeout_s, int io_timeout_s);

/// True when `url` looks like `http://host[:port]` (or https) with no path.
bool valid_base_url(const std::string& url);

/// What one client thread saw: a latency per answered request, answers by
/// status and failures without an answer by httplib's error name. Owned by
/// one thread while it runs, merged by main() after the join.
struct loop_stats {
  std::vector<uint32_t> latency_us;
  std::map<int, uint64_t> by_status;
  std::map<std::string, uint64_t> transport_errors;

  uint64_t answered() const {
    return latency_us.size();
  }

  uint64_t transport_error_count() const;

  uint64_t count(int status) const;

  void merge(loop_stats&& other);
};

/// Sends one POST, recording its latency and status (or transport error) in
/// `stats`. Returns httplib's result for the caller to inspect.
httplib::Result timed_post(httplib::Client& cli, const std::string& path,
                           const httplib::Headers& headers,
                           const std::string& body,
                           const std::string& content_type, loop_stats& stats);

/// Sends one GET, recorded like timed_post.
httplib::Result timed_get(httplib::Client& cli, const std::string& path,
                          const httplib::Headers& headers, loop_stats& stats);

/// Latency percentiles in milliseconds (nearest rank).
struct latency_summary {
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
  double mean = 0;
};

/// Sorts `us` in place and summarises it.
latency_summary summarise(std::vector<uint32_t>& us);

/// The summary as a JSON object `{"p50":..,"p90":..,"p99":..,"max":..}`.
nlohmann::ordered_json to_json(const latency_summary& s);

/// Counts by status as a JSON object keyed by the status as text.
nlohmann::ordered_json to_json(const std::map<int, uint64_t>& by_status);

/// `x` rounded to `digits` decimals, for printing.
double round_to(double x, int digits);

/// Waits out a 429/503: the `Retry-After` seconds if present, else 100 ms,
/// at most `cap` and never past `deadline`.
void honour_retry_after(const httplib::Response& res, bench_clock::duration cap,
                        bench_clock::time_point deadline);

// -- processes ----------------------------------------------------------------

/// User plus system CPU seconds of process `pid` from /proc/PID/stat, or
/// nothing when it cannot be read.
std::optional<double> process_cpu_seconds(int pid);

// -- output -------------------------------------------------------------------

/// Prints `RESULT <one line of JSON>` to stdout and flushes.
void print_result(const nlohmann::ordered_json& j);

/// A random lowercase hex string of `n` characters.
std::string random_hex(size_t n);

/// Seconds from t0 until now.
double seconds_since(bench_clock::time_point t0);

/// Around 1 KiB of telemetry-shaped JSON, for the bare HTTP ceiling.
std::string sample_body_1k();

} // namespace troupe::bench
