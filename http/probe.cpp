#include "http/probe.hpp"

namespace troupe::http {

using runtime::label_value;
using runtime::metrics;

edge_probe::edge_probe()
  : in_flight(metrics().get_gauge("troupe_http_in_flight",
                                  "Requests being served")),
    long_polls(metrics().get_gauge("troupe_http_long_polls",
                                   "Long-polls being held")),
    connections(metrics().get_gauge("troupe_http_connections",
                                    "HTTP connections open")),
    moved_retries(metrics().get_counter("troupe_http_moved_retries_total",
                                        "Requests retried because their "
                                        "shard was moving")),
    remote_calls(metrics().get_histogram(
      "troupe_cluster_remote_call_seconds",
      "Latency of requests served by another node (forwarded over CAF)")) {
}

void edge_probe::request_done(const std::string& route,
                              std::string_view method, unsigned status,
                              double seconds) {
  auto key = route + '|' + std::string{method} + '|'
             + std::to_string(status);
  runtime::counter* c;
  runtime::histogram* h;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& cs = requests_[key];
    if (!cs)
      cs = &metrics().get_counter(
        "troupe_http_requests_total", "HTTP requests by route and status",
        "route=\"" + label_value(route) + "\",method=\""
          + label_value(std::string{method}) + "\",status=\""
          + std::to_string(status) + "\"");
    c = cs;
    auto& hs = latency_[route];
    if (!hs)
      hs = &metrics().get_histogram("troupe_http_request_duration_seconds",
                                    "HTTP request latency",
                                    "route=\"" + label_value(route) + "\"");
    h = hs;
  }
  c->inc();
  h->observe(seconds);
}

void edge_probe::refused(std::string_view reason) {
  std::string key{reason};
  runtime::counter* c;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& cs = refusals_[key];
    if (!cs)
      cs = &metrics().get_counter("troupe_http_refused_total",
                                  "Connections or requests refused or closed "
                                  "by the server's limits, by reason",
                                  "reason=\"" + label_value(key) + "\"");
    c = cs;
  }
  c->inc();
}

} // namespace troupe::http
