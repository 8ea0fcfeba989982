#include "bench/common.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

namespace troupe::bench {

namespace {

bool parse_int(const std::string& text, int64_t& out) {
  if (text.empty())
    return false;
  try {
    size_t used = 0;
    auto v = std::stoll(text, &used, 10);
    if (used != text.size())
      return false;
    out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

} // namespace

// -- options ------------------------------------------------------------------

options::options(std::string tool, std::string summary,
                 std::vector<option_spec> specs)
  : tool_(std::move(tool)),
    summary_(std::move(summary)),
    specs_(std::move(specs)) {
  for (auto& s : specs_)
    values_[s.name] = s.kind == option_spec::flag ? "false" : s.default_value;
}

const option_spec* options::find(const std::string& name) const {
  for (auto& s : specs_)
    if (s.name == name)
      return &s;
  return nullptr;
}

std::string options::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
      return "unexpected argument '" + arg + "' (options look like --name)";
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto spec = find(name);
    if (spec == nullptr)
      return "unknown option --" + name;
    if (spec->kind == option_spec::flag) {
      if (inline_value)
        return "option --" + name + " takes no value";
      values_[name] = "true";
      given_[name] = true;
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= argc)
        return "option --" + name + " needs a value";
      value = argv[++i];
    }
    if (spec->kind == option_spec::integer) {
      int64_t v = 0;
      if (!parse_int(value, v))
        return "option --" + name + " needs an integer, got '" + value + "'";
      if (v < spec->min || v > spec->max)
        return "option --" + name + " must be in [" + std::to_string(spec->min)
               + ", " + std::to_string(spec->max) + "], got " + value;
    }
    values_[name] = value;
    given_[name] = true;
  }
  return {};
}

bool options::given(const std::string& name) const {
  auto i = given_.find(name);
  return i != given_.end() && i->second;
}

std::string options::get(const std::string& name) const {
  auto i = values_.find(name);
  // Asking for an undeclared option is a bug in the tool, not user input.
  assert(i != values_.end());
  return i == values_.end() ? std::string{} : i->second;
}

int64_t options::get_int(const std::string& name) const {
  int64_t v = 0;
  parse_int(get(name), v);
  return v;
}

bool options::flag(const std::string& name) const {
  return get(name) == "true";
}

std::string options::usage() const {
  std::ostringstream out;
  out << "usage: " << tool_ << " [options]\n" << summary_ << "\n\noptions:\n";
  for (auto& s : specs_) {
    std::string lhs = "  --" + s.name;
    if (s.kind != option_spec::flag)
      lhs += s.kind == option_spec::integer ? " N" : " VALUE";
    out << lhs;
    out << std::string(lhs.size() < 28 ? 28 - lhs.size() : 1, ' ') << s.help;
    if (s.kind != option_spec::flag && !s.default_value.empty())
      out << " (default: " << s.default_value << ")";
    out << '\n';
  }
  out << "  --help                    this text\n";
  return out.str();
}

// -- HTTP clients -------------------------------------------------------------

bool valid_base_url(const std::string& url) {
  std::string rest;
  if (url.rfind("http://", 0) == 0)
    rest = url.substr(7);
  else if (url.rfind("https://", 0) == 0)
    rest = url.substr(8);
  else
    return false;
  if (!rest.empty() && rest.back() == '/')
    rest.pop_back();
  return !rest.empty() && rest.find('/') == std::string::npos;
}

std::unique_ptr<httplib::Client>
make_client(const std::string& url, int connect_timeout_s, int io_timeout_s) {
  if (!valid_base_url(url))
    return nullptr;
  auto base = url;
  if (base.back() == '/')
    base.pop_back();
  auto cli = std::make_unique<httplib::Client>(base);
  if (!cli->is_valid())
    return nullptr;
  // https: the benchmarks run against throwaway self-signed certificates.
  if (base.rfind("https://", 0) == 0)
    cli->enable_server_certificate_verification(false);
  cli->set_tcp_nodelay(true);
  cli->set_keep_alive(true);
  cli->set_connection_timeout(connect_timeout_s, 0);
  cli->set_read_timeout(io_timeout_s, 0);
  cli->set_write_timeout(io_timeout_s, 0);
  return cli;
}

uint64_t loop_stats::transport_error_count() const {
  uint64_t n = 0;
  for (auto& [_, c] : transport_errors)
    n += c;
  return n;
}

uint64_t loop_stats::count(int status) const {
  auto i = by_status.find(status);
  return i == by_status.end() ? 0 : i->second;
}

void loop_stats::merge(loop_stats&& other) {
  if (latency_us.empty()) {
    latency_us = std::move(other.latency_us);
  } else {
    latency_us.insert(latency_us.end(), other.latency_us.begin(),
                      other.latency_us.end());
  }
  for (auto& [k, v] : other.by_status)
    by_status[k] += v;
  for (auto& [k, v] : other.transport_errors)
    transport_errors[k] += v;
}

namespace {

template <class Send>
httplib::Result timed(Send send, loop_stats& stats) {
  auto t0 = bench_clock::now();
  auto res = send();
  auto t1 = bench_clock::now();
  if (!res) {
    ++stats.transport_errors[httplib::to_string(res.error())];
    return res;
  }
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0);
  stats.latency_us.push_back(
    static_cast<uint32_t>(std::min<int64_t>(us.count(), UINT32_MAX)));
  ++stats.by_status[res->status];
  return res;
}

} // namespace

httplib::Result timed_post(httplib::Client& cli, const std::string& path,
                           const httplib::Headers& headers,
                           const std::string& body,
                           const std::string& content_type, loop_stats& stats) {
  return timed([&] { return cli.Post(path, headers, body, content_type); },
               stats);
}

httplib::Result timed_get(httplib::Client& cli, const std::string& path,
                          const httplib::Headers& headers, loop_stats& stats) {
  return timed([&] { return cli.Get(path, headers); }, stats);
}

latency_summary summarise(std::vector<uint32_t>& us) {
  latency_summary s;
  if (us.empty())
    return s;
  std::sort(us.begin(), us.end());
  auto rank = [&](double q) {
    auto idx = static_cast<size_t>(std::ceil(q * us.size()));
    idx = std::clamp<size_t>(idx, 1, us.size());
    return us[idx - 1] / 1000.0;
  };
  s.p50 = rank(0.50);
  s.p90 = rank(0.90);
  s.p99 = rank(0.99);
  s.max = us.back() / 1000.0;
  double sum = 0;
  for (auto v : us)
    sum += v;
  s.mean = sum / us.size() / 1000.0;
  return s;
}

nlohmann::ordered_json to_json(const latency_summary& s) {
  nlohmann::ordered_json j;
  j["p50"] = round_to(s.p50, 3);
  j["p90"] = round_to(s.p90, 3);
  j["p99"] = round_to(s.p99, 3);
  j["max"] = round_to(s.max, 3);
  j["mean"] = round_to(s.mean, 3);
  return j;
}

nlohmann::ordered_json to_json(const std::map<int, uint64_t>& by_status) {
  auto j = nlohmann::ordered_json::object();
  for (auto& [k, v] : by_status)
    j[std::to_string(k)] = v;
  return j;
}

double round_to(double x, int digits) {
  if (!std::isfinite(x))
    return 0;
  auto f = std::pow(10.0, digits);
  return std::round(x * f) / f;
}

void honour_retry_after(const httplib::Response& res, bench_clock::duration cap,
                        bench_clock::time_point deadline) {
  bench_clock::duration wait = std::chrono::milliseconds{100};
  if (res.has_header("Retry-After")) {
    int64_t s = 0;
    if (parse_int(res.get_header_value("Retry-After"), s) && s >= 0)
      wait = std::chrono::seconds{s};
  }
  wait = std::min(wait, cap);
  auto now = bench_clock::now();
  if (now >= deadline)
    return;
  wait = std::min<bench_clock::duration>(wait, deadline - now);
  if (wait.count() > 0)
    std::this_thread::sleep_for(wait);
}

// -- processes ----------------------------------------------------------------

std::optional<double> process_cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in)
    return std::nullopt;
  std::string line;
  std::getline(in, line);
  // The command name (field 2) may hold spaces and parentheses: skip past
  // the last ')'. Fields 14 and 15 are utime and stime in clock ticks.
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  std::string field;
  // After ')' come field 3 (state) onwards; utime is the 12th of those.
  uint64_t utime = 0;
  uint64_t stime = 0;
  for (int i = 3; i <= 15; ++i) {
    if (!(fields >> field))
      return std::nullopt;
    if (i == 14 || i == 15) {
      int64_t v = 0;
      if (!parse_int(field, v))
        return std::nullopt;
      (i == 14 ? utime : stime) = static_cast<uint64_t>(v);
    }
  }
  auto ticks = sysconf(_SC_CLK_TCK);
  if (ticks <= 0)
    return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

// -- output -------------------------------------------------------------------

void print_result(const nlohmann::ordered_json& j) {
  std::cout << "RESULT " << j.dump() << std::endl;
}

std::string random_hex(size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::random_device rd;
  std::mt19937_64 gen{
    (static_cast<uint64_t>(rd()) << 32) ^ rd()
    ^ static_cast<uint64_t>(bench_clock::now().time_since_epoch().count())};
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i)
    out.push_back(digits[gen() % 16]);
  return out;
}

std::string sample_body_1k() {
  // The shape of a telemetry batch; 20 points come to about 1 KiB.
  std::string body = R"({"batch_id":1,"points":[)";
  for (int i = 0; i < 20; ++i) {
    if (i > 0)
      body += ',';
    body += R"({"metric":"m)" + std::to_string(i % 2)
            + R"(","value":21.5,"ts":)" + std::to_string(1763805600000LL + i)
            + '}';
  }
  body += "]}";
  while (body.size() < 1024)
    body.insert(body.size() - 2, " ");
  return body;
}

double seconds_since(bench_clock::time_point t0) {
  return std::chrono::duration<double>(bench_clock::now() - t0).count();
}

} // namespace troupe::bench
