#pragma once

#include <string_view>

/// The web console's built files, embedded in the executable by
/// console/embed.mjs at build time (see console/CMakeLists.txt).
namespace troupe::console {

/// One file of the console as served at `path` ("/index.html",
/// "/assets/index-3f2a1c.js").
struct asset {
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

/// Every embedded file, sorted by path.
const asset* begin();
const asset* end();

/// The file served at `path`, or nullptr.
inline const asset* find(std::string_view path) {
  for (auto* a = begin(); a != end(); ++a)
    if (a->path == path)
      return a;
  return nullptr;
}

} // namespace troupe::console
