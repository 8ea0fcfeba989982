#pragma once

#include <functional>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "http/router.hpp"

/// The route files: one per resource, each adding its routes to the edge's
/// router. A handler is a few lines: authenticate, parse (pure functions in
/// parse.hpp), one request to an actor, render (render.hpp).
namespace troupe::http {

/// POST /api/v1/device/login, /telemetry, GET /device/commands (long-poll),
/// POST /device/commands/{id}/result.
void add_device_routes(router& r);
/// Login, logout, me; devices, their history and commands.
void add_user_routes(router& r);
/// Tenants, users, device registration, secrets, deletion (admin role).
void add_admin_routes(router& r);
/// Per-device analysis, alerts and threshold rules.
void add_analysis_routes(router& r);
/// healthz, readyz, metrics, the cluster view and drain.
void add_ops_routes(router& r);

/// A login attempt: `k` gets the 200 body or the error.
using login_attempt
  = std::function<void(std::function<void(caf::expected<nlohmann::json>)>)>;

/// Runs a login under the per-address limit (auth.*): refuses it with 429
/// while the client's address is throttled, counts a 401 against the
/// address, answers 200 with the body otherwise.
void guarded_login(const call_ptr& c, const char* kind, login_attempt attempt);

} // namespace troupe::http
