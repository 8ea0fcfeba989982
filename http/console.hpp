#pragma once

#include "http/router.hpp"
#include "http/server.hpp"

/// The web console at /: the files of web/ that console_embed.mjs put into
/// the executable (console_files.hpp), served to browsers by every node.
namespace troupe::http {

/// Whether a request no route matched is the console's: GET or HEAD of a
/// path outside /api/.
bool console_request(const request& r);

/// Serves a console file: hashed assets (/assets/...) cacheable for ever,
/// every other path gets index.html (the app routes in the browser, so deep
/// links and reloads work) revalidated by ETag; gzip when the client takes
/// it; an unknown /assets/ path is 404.
void serve_console(const call_ptr& c);

} // namespace troupe::http
