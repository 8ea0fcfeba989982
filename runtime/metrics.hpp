#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

/// A small Prometheus registry. Components count through their probe, which
/// looks its series up once and keeps the reference; updates are lock-free.
/// `/metrics` calls render(). Thread-safe.
namespace troupe::runtime {

class counter {
public:
  void inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> v_{0};
};

class gauge {
public:
  void set(int64_t x) { v_.store(x, std::memory_order_relaxed); }
  void add(int64_t x) { v_.fetch_add(x, std::memory_order_relaxed); }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

private:
  std::atomic<int64_t> v_{0};
};

class histogram {
public:
  explicit histogram(std::vector<double> bounds);
  void observe(double x);
  void render(const std::string& name, const std::string& labels,
              std::string& out) const;

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};
};

/// Default latency buckets in seconds (0.5 ms .. 10 s).
const std::vector<double>& latency_buckets();
/// Default size buckets (1 .. 100k).
const std::vector<double>& size_buckets();

class registry {
public:
  /// `labels` is the rendered label set, e.g. `route="/x",status="200"`.
  counter& get_counter(const std::string& name, const std::string& help,
                       const std::string& labels = "");
  gauge& get_gauge(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  histogram& get_histogram(const std::string& name, const std::string& help,
                           const std::string& labels = "",
                           const std::vector<double>& bounds
                           = latency_buckets());

  /// Prometheus text exposition format.
  std::string render() const;

private:
  struct family {
    std::string help;
    std::string type;
    std::map<std::string, std::unique_ptr<counter>> counters;
    std::map<std::string, std::unique_ptr<gauge>> gauges;
    std::map<std::string, std::unique_ptr<histogram>> histograms;
  };
  family& fam(const std::string& name, const std::string& help,
              const char* type);
  mutable std::mutex mtx_;
  std::map<std::string, family> families_;
};

/// The process-wide registry.
registry& metrics();

/// Escapes a label value.
std::string label_value(const std::string& x);

} // namespace troupe::runtime
