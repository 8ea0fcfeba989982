#include "cluster-config/config.hpp"

#include <arpa/inet.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>

namespace troupe::config {

namespace {

// -- values ------------------------------------------------------------------

/// One raw setting: its text, or a list of texts for arrays.
struct raw_value {
  std::string text;
  std::vector<std::string> list;
  bool is_list = false;
};

using setter = std::function<caf::error(node_config&, const std::string& key,
                                        const raw_value&)>;
using getter = std::function<std::string(const node_config&)>;

caf::error bad(const std::string& key, const std::string& what) {
  return make_config_error(errc::invalid_value, key + ": " + what);
}

caf::error parse_int(const std::string& key, const std::string& s,
                     int64_t lo, int64_t hi, int64_t& out) {
  if (s.empty())
    return bad(key, "expected an integer, got nothing");
  errno = 0;
  char* end = nullptr;
  auto v = std::strtoll(s.c_str(), &end, 10);
  // Accept "_" separators as TOML does.
  if (*end != '\0') {
    std::string clean;
    for (auto c : s)
      if (c != '_')
        clean += c;
    errno = 0;
    v = std::strtoll(clean.c_str(), &end, 10);
    if (*end != '\0' || clean.empty())
      return bad(key, "expected an integer, got '" + s + "'");
  }
  if (errno == ERANGE || v < lo || v > hi)
    return bad(key, "must be between " + std::to_string(lo) + " and "
                      + std::to_string(hi) + ", got " + s);
  out = v;
  return caf::none;
}

// Builds a setter/getter pair for an integer member of a section.
template <class Section, class Int>
std::pair<setter, getter> int_member(Section node_config::*sec,
                                     Int Section::*mem, int64_t lo,
                                     int64_t hi) {
  setter s = [=](node_config& cfg, const std::string& key,
                 const raw_value& v) -> caf::error {
    if (v.is_list)
      return bad(key, "expected an integer, got a list");
    int64_t x = 0;
    if (auto err = parse_int(key, v.text, lo, hi, x))
      return err;
    (cfg.*sec).*mem = static_cast<Int>(x);
    return caf::none;
  };
  getter g = [=](const node_config& cfg) {
    return std::to_string((cfg.*sec).*mem);
  };
  return {s, g};
}

template <class Section>
std::pair<setter, getter> str_member(Section node_config::*sec,
                                     std::string Section::*mem) {
  setter s = [=](node_config& cfg, const std::string& key,
                 const raw_value& v) -> caf::error {
    if (v.is_list)
      return bad(key, "expected a string, got a list");
    (cfg.*sec).*mem = v.text;
    return caf::none;
  };
  getter g = [=](const node_config& cfg) {
    return "\"" + (cfg.*sec).*mem + "\"";
  };
  return {s, g};
}

// How a list setting given as one text (environment, flag) splits.
enum class list_text { commas, databases };

template <class Section>
std::pair<setter, getter> list_member(Section node_config::*sec,
                                      std::vector<std::string> Section::*mem,
                                      list_text split = list_text::commas) {
  setter s = [=](node_config& cfg, const std::string&,
                 const raw_value& v) -> caf::error {
    auto& dst = (cfg.*sec).*mem;
    dst.clear();
    if (v.is_list) {
      dst = v.list;
    } else if (split == list_text::databases) {
      dst = split_database_list(v.text);
    } else {
      // Environment and flags give a comma-separated list.
      std::stringstream ss{v.text};
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty())
          dst.push_back(item);
    }
    return caf::none;
  };
  getter g = [=](const node_config& cfg) {
    std::string out = "[";
    for (auto& x : (cfg.*sec).*mem) {
      if (out.size() > 1)
        out += ", ";
      out += "\"" + x + "\"";
    }
    return out + "]";
  };
  return {s, g};
}

struct field {
  std::string key;
  std::pair<setter, getter> io;
  /// Holds connection strings: render() shows them without credentials.
  bool secret = false;
};

constexpr int64_t max_i = std::numeric_limits<int32_t>::max();

const std::vector<field>& fields() {
  using nc = node_config;
  static const std::vector<field> table = {
    {"http.listen", str_member(&nc::http, &http_config::listen)},
    {"http.io_threads",
     int_member(&nc::http, &http_config::io_threads, 0, 256)},
    {"http.backlog", int_member(&nc::http, &http_config::backlog, 1, 65535)},
    {"http.max_connections",
     int_member(&nc::http, &http_config::max_connections, 1, 1'000'000)},
    {"http.max_header_bytes",
     int_member(&nc::http, &http_config::max_header_bytes, 1024, 1 << 20)},
    {"http.max_body_bytes",
     int_member(&nc::http, &http_config::max_body_bytes, 1024, 1 << 30)},
    {"http.header_timeout_ms",
     int_member(&nc::http, &http_config::header_timeout_ms, 100, 600000)},
    {"http.body_timeout_ms",
     int_member(&nc::http, &http_config::body_timeout_ms, 100, 3600000)},
    {"http.keep_alive_s",
     int_member(&nc::http, &http_config::keep_alive_s, 1, 86400)},
    {"http.max_pipelined",
     int_member(&nc::http, &http_config::max_pipelined, 1, 1024)},
    {"http.max_long_polls",
     int_member(&nc::http, &http_config::max_long_polls, 0, 1'000'000)},
    {"http.request_timeout_ms",
     int_member(&nc::http, &http_config::request_timeout_ms, 100, 600000)},
    {"http.gzip_min_bytes",
     int_member(&nc::http, &http_config::gzip_min_bytes, 0, max_i)},
    {"http.max_json_depth",
     int_member(&nc::http, &http_config::max_json_depth, 2, 256)},
    {"http.trusted_proxies",
     list_member(&nc::http, &http_config::trusted_proxies)},
    {"http.tls_cert", str_member(&nc::http, &http_config::tls_cert)},
    {"http.tls_key", str_member(&nc::http, &http_config::tls_key)},
    {"auth.failed_login_window_s",
     int_member(&nc::auth, &auth_config::failed_login_window_s, 1, 86400)},
    {"auth.max_failed_logins",
     int_member(&nc::auth, &auth_config::max_failed_logins, 1, 1000000)},
    {"auth.max_failed_logins_per_address",
     int_member(&nc::auth, &auth_config::max_failed_logins_per_address, 1,
                1000000)},
    {"storage.database_url",
     str_member(&nc::storage, &storage_config::database_url), true},
    {"storage.data_dir", str_member(&nc::storage, &storage_config::data_dir)},
    {"storage.connect_timeout_s",
     int_member(&nc::storage, &storage_config::connect_timeout_s, 1, 600)},
    {"storage.spool_max_bytes",
     int_member(&nc::storage, &storage_config::spool_max_bytes, 0,
                std::numeric_limits<int64_t>::max())},
    {"storage.partition_days_ahead",
     int_member(&nc::storage, &storage_config::partition_days_ahead, 1, 60)},
    {"storage.retention_days",
     int_member(&nc::storage, &storage_config::retention_days, 1, 36500)},
    {"storage.standby_policy",
     str_member(&nc::storage, &storage_config::standby_policy)},
    {"storage.replicas", list_member(&nc::storage, &storage_config::replicas,
                 list_text::databases),
     true},
    {"storage.shards", list_member(&nc::storage, &storage_config::shards,
                 list_text::databases),
     true},
    {"storage.max_replica_lag_ms",
     int_member(&nc::storage, &storage_config::max_replica_lag_ms, 0,
                3600000)},
    {"ingest.importers",
     int_member(&nc::ingest, &ingest_config::importers, 1, 64)},
    {"ingest.max_batch_points",
     int_member(&nc::ingest, &ingest_config::max_batch_points, 1, 1000000)},
    {"ingest.flush_interval_ms",
     int_member(&nc::ingest, &ingest_config::flush_interval_ms, 0, 10000)},
    {"ingest.max_points_per_request",
     int_member(&nc::ingest, &ingest_config::max_points_per_request, 1,
                1000000)},
    {"ingest.max_queued_points",
     int_member(&nc::ingest, &ingest_config::max_queued_points, 1, max_i)},
    {"ingest.max_age_days",
     int_member(&nc::ingest, &ingest_config::max_age_days, 1, 36500)},
    {"ingest.max_future_s",
     int_member(&nc::ingest, &ingest_config::max_future_s, 0, 86400 * 365)},
    {"ingest.crash_every_flushes",
     int_member(&nc::ingest, &ingest_config::crash_every_flushes, 0, max_i)},
    {"actors.passivate_after_s",
     int_member(&nc::actors, &actors_config::passivate_after_s, 1, max_i)},
    {"actors.session_idle_s",
     int_member(&nc::actors, &actors_config::session_idle_s, 1, max_i)},
    {"actors.device_token_ttl_s",
     int_member(&nc::actors, &actors_config::device_token_ttl_s, 1, max_i)},
    {"actors.command_ttl_s",
     int_member(&nc::actors, &actors_config::command_ttl_s, 1, max_i)},
    {"actors.online_window_s",
     int_member(&nc::actors, &actors_config::online_window_s, 1, max_i)},
    {"actors.db_workers",
     int_member(&nc::actors, &actors_config::db_workers, 1, 256)},
    {"actors.scheduler_policy",
     str_member(&nc::actors, &actors_config::scheduler_policy)},
    {"actors.scheduler_threads",
     int_member(&nc::actors, &actors_config::scheduler_threads, 0, 256)},
    {"cluster.node_id", str_member(&nc::cluster, &cluster_config::node_id)},
    {"cluster.shards",
     int_member(&nc::cluster, &cluster_config::shards, 1, 65536)},
    {"cluster.listen", str_member(&nc::cluster, &cluster_config::listen)},
    {"cluster.join", list_member(&nc::cluster, &cluster_config::join)},
    {"cluster.heartbeat_ms",
     int_member(&nc::cluster, &cluster_config::heartbeat_ms, 10, 600000)},
    {"cluster.lease_ms",
     int_member(&nc::cluster, &cluster_config::lease_ms, 100, 3600000)},
    {"cluster.fence_ms",
     int_member(&nc::cluster, &cluster_config::fence_ms, 0, 3600000)},
    {"log.level", str_member(&nc::log, &log_config::level)},
    {"analysis.interval_ms",
     int_member(&nc::analysis, &analysis_config::interval_ms, 100, 86400000)},
    {"analysis.silence_s",
     int_member(&nc::analysis, &analysis_config::silence_s, 1, max_i)},
    {"analysis.anomaly_z_tenths",
     int_member(&nc::analysis, &analysis_config::anomaly_z_tenths, 1, 1000)},
    {"analysis.max_restarts",
     int_member(&nc::analysis, &analysis_config::max_restarts, 0, 1000)},
    {"analysis.restart_window_s",
     int_member(&nc::analysis, &analysis_config::restart_window_s, 1, 86400)},
    {"analysis.restart_backoff_ms",
     int_member(&nc::analysis, &analysis_config::restart_backoff_ms, 1,
                600000)},
    {"analysis.max_unit_failures",
     int_member(&nc::analysis, &analysis_config::max_unit_failures, 1, 1000)},
  };
  return table;
}

const field* find_field(const std::string& key) {
  for (auto& f : fields())
    if (f.key == key)
      return &f;
  return nullptr;
}

// -- TOML subset ---------------------------------------------------------------

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
    ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
    --e;
  return s.substr(b, e - b);
}

// Parses a scalar: "string", 'string', integer, bool. Returns false if bad.
bool parse_scalar(const std::string& in, std::string& out) {
  if (in.size() >= 2 && (in.front() == '"' || in.front() == '\'')) {
    auto q = in.front();
    if (in.back() != q)
      return false;
    out.clear();
    for (size_t i = 1; i + 1 < in.size(); ++i) {
      if (q == '"' && in[i] == '\\' && i + 2 < in.size()) {
        auto c = in[++i];
        out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
      } else {
        out += in[i];
      }
    }
    return true;
  }
  if (in.empty())
    return false;
  for (auto c : in)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
          || c == '+' || c == '.'))
      return false;
  out = in;
  return true;
}

// Strips a trailing comment that is not inside a string.
std::string strip_comment(const std::string& line) {
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    auto c = line[i];
    if (quote) {
      if (c == '\\' && quote == '"')
        ++i;
      else if (c == quote)
        quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#') {
      return line.substr(0, i);
    }
  }
  return line;
}

caf::error parse_toml(const std::string& text,
                      std::vector<std::pair<std::string, raw_value>>& out) {
  std::istringstream in{text};
  std::string line, section;
  int lineno = 0;
  auto fail = [&](const std::string& what) {
    return make_config_error(errc::bad_file, "config file line "
                                               + std::to_string(lineno) + ": "
                                               + what);
  };
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(strip_comment(line));
    if (line.empty())
      continue;
    if (line.front() == '[') {
      if (line.back() != ']' || line.size() < 3)
        return fail("malformed section header");
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      return fail("expected key = value");
    auto key = trim(line.substr(0, eq));
    auto val = trim(line.substr(eq + 1));
    if (key.empty())
      return fail("empty key");
    auto full = section.empty() ? key : section + "." + key;
    raw_value rv;
    if (!val.empty() && val.front() == '[') {
      if (val.back() != ']')
        return fail("arrays must be on one line");
      rv.is_list = true;
      auto body = trim(val.substr(1, val.size() - 2));
      std::string item;
      char quote = 0;
      for (size_t i = 0; i <= body.size(); ++i) {
        char c = i < body.size() ? body[i] : ',';
        if (quote) {
          item += c;
          if (c == quote)
            quote = 0;
        } else if (c == ',') {
          auto t = trim(item);
          item.clear();
          if (t.empty())
            continue;
          std::string s;
          if (!parse_scalar(t, s))
            return fail("bad array element for " + full);
          rv.list.push_back(s);
        } else {
          if (c == '"' || c == '\'')
            quote = c;
          item += c;
        }
      }
    } else if (!parse_scalar(val, rv.text)) {
      return fail("bad value for " + full);
    }
    out.emplace_back(full, std::move(rv));
  }
  return caf::none;
}

caf::error apply(node_config& cfg, const std::string& key, const raw_value& v) {
  auto f = find_field(key);
  if (!f)
    return make_config_error(errc::unknown_key, key + ": unknown setting");
  return f->io.first(cfg, key, v);
}

} // namespace

std::string describe(const caf::error& err) {
  if (!err)
    return "no error";
  auto& ctx = err.context();
  if (ctx.size() > 0 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return "error " + std::to_string(err.code()) + " in "
         + caf::to_string(err.category());
}

std::string env_name(const std::string& key) {
  std::string out = "TROUPE_";
  for (auto c : key)
    out += c == '.' ? '_' : static_cast<char>(std::toupper(c));
  return out;
}

bool split_host_port(const std::string& in, std::string& host,
                     uint16_t& port) {
  auto colon = in.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == in.size())
    return false;
  host = in.substr(0, colon);
  int64_t p = 0;
  if (parse_int("port", in.substr(colon + 1), 0, 65535, p))
    return false;
  port = static_cast<uint16_t>(p);
  return true;
}

caf::expected<node_config>
load_from_text(const std::string& file_text,
               const std::map<std::string, std::string>& overrides,
               const env_lookup& env) {
  node_config cfg;
  std::vector<std::pair<std::string, raw_value>> items;
  if (auto err = parse_toml(file_text, items))
    return err;
  for (auto& [key, value] : items)
    if (auto err = apply(cfg, key, value))
      return err;
  // Environment overrides the file.
  for (auto& f : fields()) {
    if (auto v = env(env_name(f.key))) {
      raw_value rv;
      rv.text = *v;
      if (auto err = f.io.first(cfg, env_name(f.key) + " (" + f.key + ")", rv))
        return err;
    }
  }
  // A few settings have their own well-known variables.
  if (auto v = env("TROUPE_DATABASE_URL"))
    cfg.storage.database_url = *v;
  if (auto v = env("TROUPE_ADMIN_USER"))
    cfg.bootstrap.admin_user = *v;
  if (auto v = env("TROUPE_ADMIN_PASSWORD"))
    cfg.bootstrap.admin_password = *v;
  // Command-line flags override everything.
  for (auto& [key, text] : overrides) {
    raw_value rv;
    rv.text = text;
    if (auto err = apply(cfg, key, rv))
      return err;
  }
  if (auto err = validate(cfg))
    return err;
  return cfg;
}

caf::expected<node_config> load(const command_line& cl, const env_lookup& env) {
  std::string text;
  if (!cl.config_file.empty()) {
    std::ifstream in{cl.config_file};
    if (!in)
      return make_config_error(errc::bad_file, "cannot read config file "
                                                 + cl.config_file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return load_from_text(text, cl.overrides, env);
}

caf::error validate(const node_config& cfg) {
  auto invalid = [](const std::string& key, const std::string& what) {
    return make_config_error(errc::invalid_value, key + ": " + what);
  };
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(cfg.http.listen, host, port))
    return invalid("http.listen", "expected HOST:PORT, got '"
                                    + cfg.http.listen + "'");
  if (!cfg.cluster.listen.empty()
      && !split_host_port(cfg.cluster.listen, host, port))
    return invalid("cluster.listen", "expected HOST:PORT, got '"
                                       + cfg.cluster.listen + "'");
  for (auto& seed : cfg.cluster.join)
    if (!split_host_port(seed, host, port))
      return invalid("cluster.join", "expected HOST:PORT, got '" + seed + "'");
  if (cfg.storage.data_dir.empty())
    return invalid("storage.data_dir", "must not be empty");
  if (cfg.http.tls_cert.empty() != cfg.http.tls_key.empty())
    return make_config_error(errc::contradiction,
                             "http.tls_cert and http.tls_key: set both (HTTPS) "
                             "or neither (HTTP)");
  for (auto& [key, file] : {std::pair{"http.tls_cert", &cfg.http.tls_cert},
                            std::pair{"http.tls_key", &cfg.http.tls_key}})
    if (!file->empty() && !std::ifstream{*file})
      return invalid(key, "cannot read '" + *file + "'");
  for (auto& p : cfg.http.trusted_proxies) {
    unsigned char buf[16];
    if (inet_pton(AF_INET, p.c_str(), buf) != 1
        && inet_pton(AF_INET6, p.c_str(), buf) != 1)
      return invalid("http.trusted_proxies",
                     "expected IP addresses, got '" + p + "'");
  }
  static const std::vector<std::string> levels
    = {"trace", "debug", "info", "warn", "error", "off"};
  if (std::find(levels.begin(), levels.end(), cfg.log.level) == levels.end())
    return invalid("log.level", "expected one of trace, debug, info, warn, "
                                "error, off; got '"
                                  + cfg.log.level + "'");
  if (cfg.actors.scheduler_policy != "stealing"
      && cfg.actors.scheduler_policy != "sharing"
      && cfg.actors.scheduler_policy != "auto")
    return invalid("actors.scheduler_policy",
                   "expected auto, stealing or sharing, got '"
                     + cfg.actors.scheduler_policy + "'");
  if (cfg.storage.standby_policy != "none"
      && cfg.storage.standby_policy != "spool"
      && cfg.storage.standby_policy != "warn")
    return invalid("storage.standby_policy",
                   "expected none, spool or warn, got '"
                     + cfg.storage.standby_policy + "'");
  if (cfg.storage.standby_policy != "none" && cfg.storage.database_url.empty())
    return make_config_error(errc::contradiction,
                             "storage.standby_policy: the embedded PostgreSQL "
                             "has no standby; set storage.database_url to a "
                             "primary with one, or the policy to none");
  if (!cfg.storage.replicas.empty() && cfg.storage.database_url.empty())
    return make_config_error(errc::contradiction,
                             "storage.replicas: replicas stream from a "
                             "configured primary; set storage.database_url");
  if (!cfg.storage.shards.empty() && cfg.storage.database_url.empty())
    return make_config_error(errc::contradiction,
                             "storage.shards: the catalog of a sharded tier "
                             "is a configured primary; set "
                             "storage.database_url");
  if (cfg.ingest.max_points_per_request > cfg.ingest.max_queued_points)
    return make_config_error(errc::contradiction,
                             "ingest.max_points_per_request: larger than "
                             "ingest.max_queued_points, so no request could "
                             "ever be accepted");
  if (cfg.cluster.fence_ms > 0
      && (cfg.cluster.fence_ms <= cfg.cluster.heartbeat_ms
          || cfg.cluster.fence_ms >= cfg.cluster.lease_ms))
    return make_config_error(errc::contradiction,
                             "cluster.fence_ms: must lie between "
                             "cluster.heartbeat_ms and cluster.lease_ms");
  if (cfg.cluster.heartbeat_ms * 2 > cfg.cluster.lease_ms)
    return make_config_error(errc::contradiction,
                             "cluster.lease_ms: must be at least twice "
                             "cluster.heartbeat_ms");
  if (!cfg.cluster.join.empty() && cfg.cluster.listen.empty())
    return make_config_error(errc::contradiction,
                             "cluster.join: joining a cluster needs "
                             "cluster.listen (this node's own CAF endpoint)");
  if (!cfg.cluster.listen.empty() && cfg.storage.database_url.empty())
    return make_config_error(errc::contradiction,
                             "cluster.listen: a cluster shares one "
                             "PostgreSQL; set storage.database_url (or "
                             "TROUPE_DATABASE_URL)");
  if (cfg.bootstrap.admin_user.empty() != cfg.bootstrap.admin_password.empty())
    return make_config_error(errc::contradiction,
                             "TROUPE_ADMIN_USER and TROUPE_ADMIN_PASSWORD: "
                             "set both or neither");
  return caf::none;
}

std::vector<std::string> split_database_list(const std::string& text) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
      s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
      s.remove_suffix(1);
    return s;
  };
  // Does `s` begin an entry: "scheme://" or "keyword="?
  auto starts_entry = [](std::string_view s) {
    size_t i = 0;
    while (i < s.size()
           && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_'
               || s[i] == '+' || s[i] == '-' || s[i] == '.'))
      ++i;
    if (i == 0)
      return false;
    auto rest = s.substr(i);
    while (!rest.empty() && rest.front() == ' ')
      rest.remove_prefix(1);
    return rest.rfind("://", 0) == 0 || (!rest.empty() && rest.front() == '=');
  };
  std::vector<std::string> out;
  std::string_view all{text};
  size_t begin = 0;
  while (begin <= all.size()) {
    auto comma = all.find(',', begin);
    auto piece = all.substr(begin, comma == std::string_view::npos
                                     ? std::string_view::npos
                                     : comma - begin);
    auto t = trim(piece);
    if (!out.empty() && !t.empty() && !starts_entry(t))
      out.back() += "," + std::string{piece};
    else if (!t.empty())
      out.emplace_back(t);
    if (comma == std::string_view::npos)
      break;
    begin = comma + 1;
  }
  for (auto& x : out)
    x = std::string{trim(x)};
  return out;
}

std::string redact_credentials(const std::string& text) {
  std::string out = text;
  // scheme://user:password@host -> scheme://user:***@host
  for (size_t at = out.find("://"); at != std::string::npos;
       at = out.find("://", at + 3)) {
    auto start = at + 3;
    auto end = out.find_first_of("/?\"', ]", start);
    auto amp = out.find('@', start);
    if (amp == std::string::npos || (end != std::string::npos && amp > end))
      continue;
    auto colon = out.find(':', start);
    if (colon != std::string::npos && colon < amp)
      out.replace(colon + 1, amp - colon - 1, "***");
  }
  // password=secret, password = 'a secret' (key=value strings) and
  // password=secret (URL parameters)
  for (size_t at = out.find("password"); at != std::string::npos;
       at = out.find("password", at + 1)) {
    auto p = at + 8;
    while (p < out.size() && out[p] == ' ')
      ++p;
    if (p >= out.size() || out[p] != '=')
      continue;
    ++p;
    while (p < out.size() && out[p] == ' ')
      ++p;
    auto end = p;
    if (end < out.size() && out[end] == '\'') {
      // Quoted: up to the closing quote (backslash escapes one character).
      for (++end; end < out.size() && out[end] != '\''; ++end)
        if (out[end] == '\\')
          ++end;
      end = std::min(end + 1, out.size());
    } else {
      end = out.find_first_of(" &\"',]", p);
      if (end == std::string::npos)
        end = out.size();
    }
    out.replace(p, end - p, "***");
  }
  return out;
}

std::string render(const node_config& cfg) {
  std::string out, section;
  for (auto& f : fields()) {
    auto dot = f.key.find('.');
    auto sec = f.key.substr(0, dot);
    if (sec != section) {
      out += (out.empty() ? "[" : "\n[") + sec + "]\n";
      section = sec;
    }
    out += f.key.substr(dot + 1) + " = "
           + (f.secret ? redact_credentials(f.io.second(cfg))
                       : f.io.second(cfg))
           + "\n";
  }
  return out;
}

std::string usage() {
  std::string out = R"(troupe: a device-fleet platform on an actor runtime.

usage: troupe [serve|config|help|version] [flags]

  serve                 run a node (the default)
  config                print the effective configuration and exit
flags:
  --config FILE         config file (TOML: [section] key = value)
  --listen HOST:PORT    HTTP edge address      (http.listen)
  --data-dir DIR        data directory         (storage.data_dir)
  --database-url URL    PostgreSQL libpq URL   (storage.database_url)
  --node-id ID          this node's id         (cluster.node_id)
  --cluster-listen H:P  CAF endpoint           (cluster.listen)
  --join H:P[,H:P]      seed nodes             (cluster.join)
  --log-level LEVEL     trace..error           (log.level)
  --set KEY=VALUE       any setting by its dotted name

Every setting can also come from the environment: http.listen is
TROUPE_HTTP_LISTEN, and so on; TROUPE_DATABASE_URL, TROUPE_ADMIN_USER and
TROUPE_ADMIN_PASSWORD too. Precedence: flags > environment > file > default.

settings:
)";
  for (auto& f : fields())
    out += "  " + f.key + "\n";
  return out;
}

caf::expected<command_line> parse_args(int argc, char** argv) {
  static const std::map<std::string, std::string> aliases = {
    {"--listen", "http.listen"},
    {"--data-dir", "storage.data_dir"},
    {"--database-url", "storage.database_url"},
    {"--node-id", "cluster.node_id"},
    {"--cluster-listen", "cluster.listen"},
    {"--join", "cluster.join"},
    {"--log-level", "log.level"},
  };
  command_line cl;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0
                                 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto need_value = [&]() -> caf::error {
      if (has_value)
        return caf::none;
      if (i + 1 >= argc)
        return make_config_error(errc::invalid_value,
                                 arg + ": expects a value");
      value = argv[++i];
      return caf::none;
    };
    if (arg == "serve" || arg == "help" || arg == "version"
        || arg == "config") {
      cl.command = arg;
    } else if (arg == "--help" || arg == "-h") {
      cl.command = "help";
    } else if (arg == "--version") {
      cl.command = "version";
    } else if (arg == "--config") {
      if (auto err = need_value())
        return err;
      cl.config_file = value;
    } else if (arg == "--set") {
      if (auto err = need_value())
        return err;
      auto eq = value.find('=');
      if (eq == std::string::npos)
        return make_config_error(errc::invalid_value,
                                 "--set: expects KEY=VALUE, got '" + value
                                   + "'");
      auto key = value.substr(0, eq);
      if (!find_field(key))
        return make_config_error(errc::unknown_key,
                                 key + ": unknown setting");
      cl.overrides[key] = value.substr(eq + 1);
    } else if (auto it = aliases.find(arg); it != aliases.end()) {
      if (auto err = need_value())
        return err;
      cl.overrides[it->second] = value;
    } else {
      return make_config_error(errc::unknown_key,
                               "unknown argument '" + arg
                                 + "' (see troupe --help)");
    }
  }
  return cl;
}

} // namespace troupe::config
