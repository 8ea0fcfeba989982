#pragma once

#include <memory>

namespace troupe::runtime {
class node;
} // namespace troupe::runtime

namespace troupe::actors {
struct handles;
} // namespace troupe::actors

namespace troupe::http {

/// Adds the HTTP edge to the node as its last service: an event-driven
/// HTTP/1.1 server (server.hpp, Beast on Asio, a few I/O threads for every
/// connection; HTTPS when http.tls_cert and http.tls_key are set, reloaded
/// on SIGHUP) whose requests the route files (routes.hpp) turn into one
/// actor message each through a non-blocking bridge; the reply is posted
/// back to its connection. No thread waits for an actor, so an idle
/// keep-alive connection or a held long-poll costs memory only. No
/// business logic lives here. On stop it answers waiting long-polls,
/// refuses new requests, and finishes the ones in flight. `actors` are the
/// handles actors::install returned (filled before the edge starts).
void install(runtime::node& n,
             std::shared_ptr<const actors::handles> actors);

} // namespace troupe::http
