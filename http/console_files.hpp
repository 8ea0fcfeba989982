#pragma once

#include <string_view>
#include <utility>

namespace troupe::http {

/// One file of the web console (web/, built by Vite and embedded in the
/// executable by console_embed.mjs at build time), as served at `path`
/// ("/index.html", "/assets/index-3f2a1c.js").
struct console_file {
  std::string_view path;
  std::string_view content_type;
  std::string_view body;
  /// The gzip of body; empty when it would not be smaller.
  std::string_view gzip;
  /// A strong entity tag, quotes included.
  std::string_view etag;
  /// A content-hashed name (under /assets/): cacheable for ever.
  bool immutable;
};

/// Every embedded file, sorted by path (generated console_files.cpp).
std::pair<const console_file*, const console_file*> console_files();

/// The file served at `path`, or nullptr.
inline const console_file* find_console_file(std::string_view path) {
  auto [first, last] = console_files();
  for (auto* f = first; f != last; ++f)
    if (f->path == path)
      return f;
  return nullptr;
}

} // namespace troupe::http
