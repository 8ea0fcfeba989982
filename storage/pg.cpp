#include "storage/pg.hpp"

#include <cctype>
#include <cstring>
#include <cstdlib>
#include <memory>

#include <libpq-fe.h>
#include <poll.h>

#include "storage/logger.hpp"

namespace troupe::storage {

spdlog::logger& log() {
  static auto instance = [] {
    auto existing = spdlog::get("troupe.storage");
    if (existing)
      return existing;
    auto l = spdlog::default_logger()->clone("troupe.storage");
    spdlog::register_logger(l);
    return l;
  }();
  return *instance;
}

// -- result -------------------------------------------------------------------

void result::deleter::operator()(PGresult* p) const {
  PQclear(p);
}

result::result(PGresult* res) : res_(res) {
}

int result::rows() const {
  return res_ ? PQntuples(res_.get()) : 0;
}

bool result::is_null(int row, int col) const {
  return PQgetisnull(res_.get(), row, col) != 0;
}

std::string_view result::text(int row, int col) const {
  auto p = PQgetvalue(res_.get(), row, col);
  return {p, static_cast<size_t>(PQgetlength(res_.get(), row, col))};
}

int64_t result::i64(int row, int col) const {
  return std::strtoll(PQgetvalue(res_.get(), row, col), nullptr, 10);
}

double result::f64(int row, int col) const {
  return std::strtod(PQgetvalue(res_.get(), row, col), nullptr);
}

bool result::boolean(int row, int col) const {
  auto v = PQgetvalue(res_.get(), row, col);
  return v[0] == 't';
}

std::optional<int64_t> result::opt_i64(int row, int col) const {
  if (is_null(row, col))
    return std::nullopt;
  return i64(row, col);
}

int64_t result::affected() const {
  auto s = PQcmdTuples(res_.get());
  return s && *s ? std::strtoll(s, nullptr, 10) : 0;
}

// -- connection ------------------------------------------------------------------

connection::connection(std::string url, int64_t connect_timeout_s)
  : url_(std::move(url)), connect_timeout_s_(connect_timeout_s) {
}

connection::~connection() {
  reset();
}

void connection::reset() {
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  in_tx_ = false;
  prepared_.clear(); // they lived on the old link
}

void connection::check_alive() {
  if (!conn_ || in_tx_)
    return;
  // Reads what the server sent meanwhile, without blocking: a server that
  // shut down sent a FATAL (which libpq takes as a notice) and then closed
  // the socket; the read after the FATAL finds the end of the stream.
  for (int i = 0; i < 4; ++i) {
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (poll(&p, 1, 0) <= 0)
      break;
    if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
      log().info("PostgreSQL link closed by the server; reconnecting");
      reset();
      return;
    }
  }
  // A notification or a stray result would confuse the next statement.
  while (auto n = PQnotifies(conn_))
    PQfreemem(n);
}

bool connection::ok() const {
  return conn_ && PQstatus(conn_) == CONNECTION_OK;
}

caf::error connection::ensure() {
  if (ok())
    return caf::none;
  reset();
  auto timeout = std::to_string(connect_timeout_s_);
  // TCP keepalives and a user timeout come first, so the URL's own win:
  // a database host that vanishes without a reset (a partition, a machine
  // gone) fails its connections' statements within about 30 s, where the
  // kernel's defaults would hold a pool worker for a quarter of an hour.
  const char* keys[] = {"keepalives",       "keepalives_idle",
                        "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname",
                        "connect_timeout",  "application_name",
                        nullptr};
  const char* vals[] = {"1",    "10",           "5",
                        "3",    "30000",        url_.c_str(),
                        timeout.c_str(), "troupe", nullptr};
  conn_ = PQconnectdbParams(keys, vals, 1);
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
      msg.pop_back();
    reset();
    return make_storage_error(errc::unavailable,
                              "cannot connect to PostgreSQL: " + msg);
  }
  // Quiet NOTICEs (e.g. "relation already exists, skipping").
  PQsetNoticeProcessor(
    conn_, [](void*, const char*) {}, nullptr);
  return caf::none;
}

caf::error connection::to_error(PGresult* res, const std::string& sql) {
  std::string msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn_);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
    msg.pop_back();
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string sqlstate = state ? state : "";
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK || sqlstate.rfind("08", 0) == 0
      || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    reset();
    return make_storage_error(errc::unavailable, "PostgreSQL unavailable: "
                                                   + msg);
  }
  if (sqlstate == "23505")
    return make_storage_error(errc::conflict, msg);
  log().debug("query failed sqlstate={} sql={} err={}", sqlstate,
              sql.substr(0, 120), msg);
  return make_storage_error(errc::query_failed, msg);
}

namespace {

bool starts_with_word(const std::string& sql, const char* word) {
  size_t i = 0;
  while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i])))
    ++i;
  auto n = std::strlen(word);
  if (sql.size() - i < n)
    return false;
  for (size_t k = 0; k < n; ++k)
    if (std::toupper(static_cast<unsigned char>(sql[i + k])) != word[k])
      return false;
  return sql.size() == i + n
         || !std::isalnum(static_cast<unsigned char>(sql[i + n]));
}

} // namespace

caf::expected<result> connection::exec(const std::string& sql,
                                       const std::vector<param>& params,
                                       retry when) {
  check_alive();
  auto was_connected = conn_ != nullptr;
  auto tx = in_tx_;
  auto r = exec_once(sql, params);
  if (r) {
    if (starts_with_word(sql, "BEGIN"))
      in_tx_ = true;
    else if (starts_with_word(sql, "COMMIT")
             || starts_with_word(sql, "ROLLBACK"))
      in_tx_ = false;
    return r;
  }
  // The link broke during the call (to_error reset it): once more on a new
  // link, if that cannot do harm.
  auto safe = when == retry::idempotent
              || (when == retry::if_read && starts_with_word(sql, "SELECT"));
  if (was_connected && !tx && safe && r.error() == errc::unavailable
      && conn_ == nullptr) {
    ++retries_;
    log().info("retrying a statement on a new PostgreSQL link");
    return exec_once(sql, params);
  }
  return r;
}

caf::expected<std::string> connection::prepare(const std::string& sql) {
  if (auto it = prepared_.find(sql); it != prepared_.end())
    return it->second;
  if (prepared_.size() >= max_prepared)
    return std::string{}; // unnamed: planned each time
  auto name = "troupe_" + std::to_string(next_prepared_++);
  auto res = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
  auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK) {
    auto err = to_error(res, sql);
    if (res)
      PQclear(res);
    return err;
  }
  PQclear(res);
  prepared_.emplace(sql, name);
  return name;
}

caf::expected<result> connection::exec_once(const std::string& sql,
                                            const std::vector<param>& params) {
  if (auto err = ensure())
    return err;
  std::vector<const char*> values;
  values.reserve(params.size());
  for (auto& p : params)
    values.push_back(p ? p->c_str() : nullptr);
  // Without parameters use the simple protocol, which also runs scripts of
  // several statements (migrations). With parameters, a statement is
  // prepared once per link and then only bound and run: planning a
  // statement each time cost PostgreSQL as much CPU as running it (the
  // ingest flush: ~1 ms of 2.5).
  PGresult* res = nullptr;
  if (params.empty()) {
    res = PQexec(conn_, sql.c_str());
  } else if (auto name = prepare(sql)) {
    if (name->empty())
      res = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()),
                         nullptr, values.data(), nullptr, nullptr, 0);
    else
      res = PQexecPrepared(conn_, name->c_str(),
                           static_cast<int>(params.size()), values.data(),
                           nullptr, nullptr, 0);
  } else {
    return name.error();
  }
  auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    return result{res};
  // A prepared statement the server no longer has (26000), or whose cached
  // plan a schema change broke (0A000, "cached plan must not change result
  // type"): forget it, so the next call prepares it afresh.
  if (const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                              : nullptr;
      state != nullptr
      && (std::string_view{state} == "26000"
          || std::string_view{state} == "0A000"))
    prepared_.erase(sql);
  auto err = to_error(res, sql);
  if (res)
    PQclear(res);
  return err;
}

std::string connection::quote_ident(const std::string& x) {
  std::string out = "\"";
  for (auto c : x) {
    if (c == '"')
      out += '"';
    out += c;
  }
  return out + "\"";
}

// -- helpers --------------------------------------------------------------------

namespace {

/// The parsed options of a connection string; null (and `why` set) when
/// libpq cannot parse it.
std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)>
parse_conninfo(const std::string& url, std::string* why) {
  char* err = nullptr;
  auto* opts = PQconninfoParse(url.c_str(), &err);
  if (err) {
    if (why)
      *why = err;
    PQfreemem(err);
  }
  return {opts, PQconninfoFree};
}

} // namespace

caf::error check_url(const std::string& url) {
  std::string why = "cannot parse it";
  auto opts = parse_conninfo(url, &why);
  if (opts) {
    // libpq checks ports only when it connects; a typo should not wait.
    for (auto* o = opts.get(); o->keyword; ++o) {
      if (!o->val || std::strcmp(o->keyword, "port") != 0)
        continue;
      std::string port;
      for (const char* c = o->val;; ++c) {
        if (*c == ',' || *c == '\0') {
          // An empty entry means the default port.
          auto n = port.empty() ? 5432L : std::strtol(port.c_str(), nullptr, 10);
          if (port.size() > 5 || n < 1 || n > 65535
              || port.find_first_not_of("0123456789") != std::string::npos) {
            why = "invalid port \"" + port + "\"";
            opts.reset();
            break;
          }
          port.clear();
          if (*c == '\0')
            break;
        } else {
          port += *c;
        }
      }
    }
  }
  if (!opts) {
    while (!why.empty() && std::isspace(static_cast<unsigned char>(why.back())))
      why.pop_back();
    return make_storage_error(errc::query_failed,
                              "not a PostgreSQL connection string: " + why);
  }
  return caf::none;
}

std::string url_address(const std::string& url) {
  auto opts = parse_conninfo(url, nullptr);
  if (!opts)
    return "?";
  std::string hosts, ports;
  for (auto* o = opts.get(); o->keyword; ++o) {
    if (!o->val)
      continue;
    if (std::strcmp(o->keyword, "host") == 0
        || (hosts.empty() && std::strcmp(o->keyword, "hostaddr") == 0))
      hosts = o->val;
    else if (std::strcmp(o->keyword, "port") == 0)
      ports = o->val;
  }
  if (hosts.empty())
    hosts = "localhost";
  if (ports.empty())
    ports = "5432";
  // Multi-host: pair each host with its port (one port means all).
  auto split = [](const std::string& s) {
    std::vector<std::string> out;
    size_t from = 0;
    for (;;) {
      auto comma = s.find(',', from);
      out.push_back(s.substr(from, comma - from));
      if (comma == std::string::npos)
        return out;
      from = comma + 1;
    }
  };
  auto hs = split(hosts), ps = split(ports);
  std::string out;
  for (size_t i = 0; i < hs.size(); ++i) {
    if (i > 0)
      out += ',';
    out += (hs[i].empty() ? "localhost" : hs[i]) + ":"
           + (ps.size() == hs.size() ? ps[i] : ps[0]);
  }
  return out;
}

std::string array_literal(const std::vector<std::string>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i > 0)
      out += ',';
    out += '"';
    for (auto c : xs[i]) {
      if (c == '"' || c == '\\')
        out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string array_literal(const std::vector<int64_t>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i > 0)
      out += ',';
    out += std::to_string(xs[i]);
  }
  return out + "}";
}

} // namespace troupe::storage
