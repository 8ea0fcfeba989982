#include "runtime/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace troupe::runtime {

histogram::histogram(std::vector<double> bounds)
  : bounds_(std::move(bounds)),
    counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i)
    counts_[i] = 0;
}

void histogram::observe(double x) {
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i])
    ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(std::max(0.0, x) * 1e6),
                        std::memory_order_relaxed);
}

namespace {

std::string fmt_double(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", x);
  return buf;
}

std::string with_label(const std::string& labels, const std::string& extra) {
  if (labels.empty())
    return "{" + extra + "}";
  return "{" + labels + "," + extra + "}";
}

std::string braces(const std::string& labels) {
  return labels.empty() ? "" : "{" + labels + "}";
}

} // namespace

void histogram::render(const std::string& name, const std::string& labels,
                       std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    out += name + "_bucket"
           + with_label(labels, "le=\"" + fmt_double(bounds_[i]) + "\"") + " "
           + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_[bounds_.size()].load(std::memory_order_relaxed);
  out += name + "_bucket" + with_label(labels, "le=\"+Inf\"") + " "
         + std::to_string(cumulative) + "\n";
  out += name + "_sum" + braces(labels) + " "
         + fmt_double(static_cast<double>(sum_micros_.load()) / 1e6) + "\n";
  out += name + "_count" + braces(labels) + " "
         + std::to_string(count_.load()) + "\n";
}

const std::vector<double>& latency_buckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025,  0.05,  0.1,    0.25,  0.5,
                                        1,      2.5,   5,      10};
  return b;
}

const std::vector<double>& size_buckets() {
  static const std::vector<double> b = {1,   10,   50,    100,   500,
                                        1000, 5000, 10000, 50000, 100000};
  return b;
}

registry::family& registry::fam(const std::string& name,
                                const std::string& help, const char* type) {
  auto& f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  return f;
}

counter& registry::get_counter(const std::string& name,
                               const std::string& help,
                               const std::string& labels) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = fam(name, help, "counter").counters[labels];
  if (!slot)
    slot = std::make_unique<counter>();
  return *slot;
}

gauge& registry::get_gauge(const std::string& name, const std::string& help,
                           const std::string& labels) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = fam(name, help, "gauge").gauges[labels];
  if (!slot)
    slot = std::make_unique<gauge>();
  return *slot;
}

histogram& registry::get_histogram(const std::string& name,
                                   const std::string& help,
                                   const std::string& labels,
                                   const std::vector<double>& bounds) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& slot = fam(name, help, "histogram").histograms[labels];
  if (!slot)
    slot = std::make_unique<histogram>(bounds);
  return *slot;
}

std::string registry::render() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::string out;
  out.reserve(16 * 1024);
  for (auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    for (auto& [labels, c] : f.counters)
      out += name + braces(labels) + " " + std::to_string(c->value()) + "\n";
    for (auto& [labels, g] : f.gauges)
      out += name + braces(labels) + " " + std::to_string(g->value()) + "\n";
    for (auto& [labels, h] : f.histograms)
      h->render(name, labels, out);
  }
  return out;
}

registry& metrics() {
  static registry instance;
  return instance;
}

std::string label_value(const std::string& x) {
  std::string out;
  for (auto c : x) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

} // namespace troupe::runtime
