#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

namespace troupe::runtime {

/// The restart-intensity window of one supervised worker: each crash waits
/// `base` doubled per earlier crash in the window (at most `cap`); more
/// than `max_restarts` crashes within `window` trip it, and the worker
/// stays down for a whole window. Owner: a supervisor, per worker. Not
/// thread-safe.
class restart_policy {
public:
  using clock = std::chrono::steady_clock;

  restart_policy(size_t max_restarts, std::chrono::milliseconds window,
                 std::chrono::milliseconds base,
                 std::chrono::milliseconds cap = std::chrono::seconds(30));

  /// Records a crash at `now`; returns the delay before the restart.
  std::chrono::milliseconds on_crash(clock::time_point now);

  /// Whether the last crash exceeded the intensity (the delay was a
  /// window).
  bool tripped() const { return tripped_; }

private:
  size_t max_restarts_;
  std::chrono::milliseconds window_;
  std::chrono::milliseconds base_;
  std::chrono::milliseconds cap_;
  std::deque<clock::time_point> crashes_;
  bool tripped_ = false;
};

/// Starts one worker; called again for every restart.
using worker_factory = std::function<caf::actor(caf::actor_system&)>;

/// Spawns a supervisor: a stable handle for a worker that is restarted with
/// backoff (`policy`) when it fails. Every message sent to the handle is
/// delegated to the current worker, so the worker's answer goes straight
/// to the sender; while the worker is down, messages wait in the
/// supervisor (at most `max_waiting`, beyond that errc::overloaded) and go
/// to the next worker. Requests the failed worker held are its own to
/// answer (a worker should answer them from its exception handler).
///
/// Stops when it receives an exit message: it passes the reason on to the
/// worker, waits for it to finish (a worker may flush on exit), then quits
/// with the same reason.
///
/// Metrics: troupe_supervisor_restarts_total{worker="<name>"},
/// troupe_supervisor_up{worker="<name>"}.
caf::actor spawn_supervisor(caf::actor_system& sys, std::string name,
                            worker_factory start, restart_policy policy,
                            size_t max_waiting = 100'000);

} // namespace troupe::runtime
