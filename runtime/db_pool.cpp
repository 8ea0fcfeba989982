#include "runtime/db_pool.hpp"

#include <deque>
#include <vector>

#include <caf/all.hpp>

#include "runtime/errc.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"

namespace troupe::runtime {

namespace {

struct worker_state {
  std::string name = "db_worker";
  std::unique_ptr<storage::connection> conn;
};

caf::behavior db_worker(caf::stateful_actor<worker_state>* self,
                        caf::actor dispatcher, std::string url,
                        int64_t connect_timeout_s) {
  self->state.conn = std::make_unique<storage::connection>(url,
                                                           connect_timeout_s);
  self->send(dispatcher, ready_atom::value,
             caf::actor_cast<caf::actor>(self));
  return {
    [=](db_job& job) -> caf::result<ok_atom> {
      auto err = job.run(*self->state.conn);
      self->send(dispatcher, ready_atom::value,
                 caf::actor_cast<caf::actor>(self));
      if (err)
        return err;
      return ok_atom::value;
    },
  };
}

struct dispatcher_state {
  std::string name = "db_dispatcher";
  std::deque<caf::actor> idle;
  std::deque<std::pair<caf::response_promise, db_job>> queued;
  size_t max_queued = 0;
  gauge* queue_depth = nullptr;
  gauge* busy = nullptr;
  counter* rejected = nullptr;
  std::vector<caf::actor> workers;
};

caf::behavior db_dispatcher(caf::stateful_actor<dispatcher_state>* self,
                            std::string url, size_t workers,
                            int64_t connect_timeout_s, size_t max_queued,
                            std::string name) {
  auto& st = self->state;
  st.max_queued = max_queued;
  auto& reg = metrics();
  auto l = "pool=\"" + name + "\"";
  st.queue_depth = &reg.get_gauge("troupe_db_pool_queued",
                                  "Database jobs waiting for a connection", l);
  st.busy = &reg.get_gauge("troupe_db_pool_busy",
                           "Database pool connections in use", l);
  reg.get_gauge("troupe_db_pool_size", "Database pool connections", l)
    .set(static_cast<int64_t>(workers));
  st.rejected = &reg.get_counter("troupe_db_pool_rejected_total",
                                 "Database jobs rejected: queue full", l);
  for (size_t i = 0; i < workers; ++i)
    st.workers.push_back(self->spawn<caf::detached + caf::linked>(
      db_worker, caf::actor_cast<caf::actor>(self), url, connect_timeout_s));
  st.busy->set(static_cast<int64_t>(workers));
  return {
    [=](db_job& job) {
      auto& st = self->state;
      if (!st.idle.empty()) {
        auto w = std::move(st.idle.front());
        st.idle.pop_front();
        st.busy->add(1);
        self->delegate(w, std::move(job));
        return;
      }
      auto rp = self->make_response_promise();
      if (st.queued.size() >= st.max_queued) {
        st.rejected->inc();
        rp.deliver(make_runtime_error(errc::overloaded,
                                      "database queue is full"));
        return;
      }
      st.queued.emplace_back(std::move(rp), std::move(job));
      st.queue_depth->set(static_cast<int64_t>(st.queued.size()));
    },
    [=](ready_atom, caf::actor& w) {
      auto& st = self->state;
      if (!st.queued.empty()) {
        auto [rp, job] = std::move(st.queued.front());
        st.queued.pop_front();
        st.queue_depth->set(static_cast<int64_t>(st.queued.size()));
        rp.delegate(w, std::move(job));
        return;
      }
      st.busy->add(-1);
      st.idle.push_back(std::move(w));
    },
  };
}

} // namespace

caf::actor spawn_db_pool(caf::actor_system& sys, const std::string& url,
                         size_t workers, int64_t connect_timeout_s,
                         size_t max_queued, const std::string& name) {
  return sys.spawn(db_dispatcher, url, workers, connect_timeout_s,
                   max_queued, name);
}

} // namespace troupe::runtime
