#pragma once

namespace troupe::runtime {
class node;
} // namespace troupe::runtime

namespace troupe::http {

/// Adds the HTTP edge to the node as its last service: a cpp-httplib server
/// on cfg.http.listen that parses and validates each request, authenticates
/// it (device token, or user session via the session actor), turns it into
/// one actor message, awaits the reply with a deadline, and writes API.md's
/// response. No business logic lives here. On stop it answers waiting
/// long-polls, refuses new requests and waits for in-flight ones.
void install(runtime::node& n);

} // namespace troupe::http
