#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <caf/error.hpp>

namespace troupe::storage {

/// An append-only local file of records that are acknowledged but not yet in
/// PostgreSQL. Each record is framed as [u32 length][u32 crc32][bytes] and
/// fsynced before append() returns, so a record survives a crash of the
/// process or the machine. A torn tail (crash mid-append) is detected by the
/// length or CRC and ignored: it was never acknowledged.
///
/// Owned by one importer actor; not thread-safe. Replay hands records back in
/// append order; after all are stored, clear() empties the file.
class spool {
public:
  spool(std::string path, uint64_t max_bytes);
  ~spool();

  /// Appends and fsyncs one record. spool_full when it would grow past the
  /// limit, spool_io when the write or fsync fails.
  [[nodiscard]] caf::error append(const std::string& record);

  /// Calls `fn` for each intact record in order; stops at the first error
  /// `fn` returns (and returns it). Records before it stay in the file.
  [[nodiscard]] caf::error
  replay(const std::function<caf::error(const std::string&)>& fn);

  /// Empties the file (after a successful replay).
  [[nodiscard]] caf::error clear();

  /// Whether a record of `record_bytes` would fit now.
  bool fits(uint64_t record_bytes) const {
    return size_ + record_bytes + 8 <= max_bytes_;
  }

  /// Bytes in the file.
  uint64_t size_bytes() const { return size_; }
  /// Records appended since open or the last clear (plus those found).
  uint64_t records() const { return records_; }
  bool empty() const { return size_ == 0; }
  const std::string& path() const { return path_; }

private:
  caf::error open_file();
  std::string path_;
  uint64_t max_bytes_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t records_ = 0;
};

} // namespace troupe::storage
