#include "runtime/local_entities.hpp"

namespace troupe::runtime {

caf::actor local_entities::find(const std::string& key) const {
  if (lease_
      && (!lease_->valid()
          || lease_->fences() != applied_.load(std::memory_order_acquire)))
    return {};
  auto& s = stripe_of(key);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.entities.find(key);
  return i == s.entities.end() ? caf::actor{} : i->second;
}

void local_entities::publish(const std::string& key, caf::actor entity) {
  auto& s = stripe_of(key);
  std::lock_guard<std::mutex> guard{s.mtx};
  s.entities.insert_or_assign(key, std::move(entity));
}

void local_entities::withdraw(const std::string& key) {
  auto& s = stripe_of(key);
  std::lock_guard<std::mutex> guard{s.mtx};
  s.entities.erase(key);
}

void local_entities::clear() {
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    s.entities.clear();
  }
}

} // namespace troupe::runtime
