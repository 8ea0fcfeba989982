#include "runtime/supervisor.hpp"

#include <caf/all.hpp>

#include "runtime/errc.hpp"
#include "runtime/logger.hpp"
#include "runtime/metrics.hpp"

namespace troupe::runtime {

// -- restart_policy ---------------------------------------------------------

restart_policy::restart_policy(size_t max_restarts,
                               std::chrono::milliseconds window,
                               std::chrono::milliseconds base,
                               std::chrono::milliseconds cap)
  : max_restarts_(max_restarts), window_(window), base_(base), cap_(cap) {
}

std::chrono::milliseconds restart_policy::on_crash(clock::time_point now) {
  while (!crashes_.empty() && now - crashes_.front() > window_)
    crashes_.pop_front();
  crashes_.push_back(now);
  tripped_ = crashes_.size() > max_restarts_;
  if (tripped_) {
    // Start the next window afresh once the worker comes back.
    crashes_.clear();
    return window_;
  }
  auto delay = base_;
  for (size_t i = 1; i < crashes_.size() && delay < cap_; ++i)
    delay *= 2;
  return std::min(delay, cap_);
}

// -- supervisor ---------------------------------------------------------------

namespace {

using restart_atom = caf::atom_constant<caf::atom("restart")>;

struct supervisor_state {
  std::string name = "supervisor";
  worker_factory start;
  restart_policy policy{0, std::chrono::seconds(1),
                        std::chrono::milliseconds(1)};
  caf::actor worker;
  std::deque<std::pair<caf::response_promise, caf::message>> waiting;
  size_t max_waiting = 0;
  bool stopping = false;
  caf::error stop_reason;
  counter* restarts = nullptr;
  gauge* up = nullptr;
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void start_worker(supervisor_actor* self) {
  auto& st = self->state;
  st.worker = st.start(self->system());
  self->monitor(st.worker);
  st.up->set(1);
  // What waited goes to the new worker, in order.
  auto waiting = std::move(st.waiting);
  st.waiting.clear();
  for (auto& [rp, msg] : waiting)
    rp.delegate(st.worker, std::move(msg));
}

} // namespace

static caf::behavior supervise(supervisor_actor* self, std::string name,
                         worker_factory start, restart_policy policy,
                         size_t max_waiting) {
  auto& st = self->state;
  st.name = "supervisor:" + name;
  st.start = std::move(start);
  st.policy = std::move(policy);
  st.max_waiting = max_waiting;
  auto label = "worker=\"" + label_value(name) + "\"";
  st.restarts = &metrics().get_counter("troupe_supervisor_restarts_total",
                                       "Supervised workers restarted",
                                       label);
  st.up = &metrics().get_gauge("troupe_supervisor_up",
                               "1 while the supervised worker runs", label);
  self->set_exit_handler([=](caf::exit_msg& em) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
    st.stop_reason = em.reason;
    for (auto& [rp, msg] : st.waiting)
      rp.deliver(make_runtime_error(errc::shutting_down,
                                    "node is shutting down"));
    st.waiting.clear();
    if (st.worker)
      self->send_exit(st.worker, em.reason);
    else
      self->quit(em.reason);
  });
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.worker || dm.source != st.worker.address())
      return;
    st.worker = nullptr;
    st.up->set(0);
    if (st.stopping) {
      self->quit(st.stop_reason);
      return;
    }
    auto delay = st.policy.on_crash(restart_policy::clock::now());
    log().error("{} worker failed ({}); restarting in {} ms{}", st.name,
                caf::to_string(dm.reason), delay.count(),
                st.policy.tripped() ? " (too many restarts: a whole window)"
                                    : "");
    self->delayed_send(self, delay, restart_atom::value);
  });
  // Anything else is for the worker.
  self->set_default_handler(
    [](caf::scheduled_actor* ptr, caf::message_view& x)
      -> caf::result<caf::message> {
      auto self = static_cast<supervisor_actor*>(ptr);
      auto& st = self->state;
      auto msg = x.move_content_to_message();
      auto rp = self->make_response_promise();
      if (st.worker) {
        rp.delegate(st.worker, std::move(msg));
      } else if (st.stopping) {
        rp.deliver(make_runtime_error(errc::shutting_down,
                                      "node is shutting down"));
      } else if (st.waiting.size() >= st.max_waiting) {
        rp.deliver(make_runtime_error(errc::overloaded,
                                      st.name + " is restarting"));
      } else {
        st.waiting.emplace_back(std::move(rp), std::move(msg));
      }
      return caf::delegated<caf::message>{};
    });
  start_worker(self);
  return {
    [=](restart_atom) {
      auto& st = self->state;
      if (st.stopping || st.worker)
        return;
      st.restarts->inc();
      log().warn("{} worker restarted", st.name);
      start_worker(self);
    },
  };
}

caf::actor spawn_supervisor(caf::actor_system& sys, std::string name,
                            worker_factory start, restart_policy policy,
                            size_t max_waiting) {
  return sys.spawn(supervise, std::move(name), std::move(start),
                   std::move(policy), max_waiting);
}

} // namespace troupe::runtime
