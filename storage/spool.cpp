#include "storage/spool.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <zlib.h>

#include "storage/errc.hpp"
#include "storage/logger.hpp"

namespace troupe::storage {

namespace {

void put_u32(unsigned char* p, uint32_t x) {
  p[0] = static_cast<unsigned char>(x >> 24);
  p[1] = static_cast<unsigned char>(x >> 16);
  p[2] = static_cast<unsigned char>(x >> 8);
  p[3] = static_cast<unsigned char>(x);
}

uint32_t get_u32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16)
         | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint32_t crc_of(const std::string& s) {
  return static_cast<uint32_t>(
    crc32(0, reinterpret_cast<const Bytef*>(s.data()),
          static_cast<uInt>(s.size())));
}

caf::error io_error(const std::string& what) {
  return make_storage_error(errc::spool_io, what + ": " + strerror(errno));
}

} // namespace

spool::spool(std::string path, uint64_t max_bytes)
  : path_(std::move(path)), max_bytes_(max_bytes) {
  if (auto err = open_file())
    log().error("cannot open spool {}: errno={}", path_, errno);
}

spool::~spool() {
  if (fd_ >= 0)
    close(fd_);
}

caf::error spool::open_file() {
  std::error_code ec;
  std::filesystem::create_directories(
    std::filesystem::path(path_).parent_path(), ec);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0)
    return io_error("open " + path_);
  struct stat st {};
  fstat(fd_, &st);
  size_ = static_cast<uint64_t>(st.st_size);
  return caf::none;
}

caf::error spool::append(const std::string& record) {
  if (fd_ < 0)
    if (auto err = open_file())
      return err;
  auto total = record.size() + 8;
  if (size_ + total > max_bytes_)
    return make_storage_error(errc::spool_full,
                              "spool is full (" + std::to_string(size_)
                                + " bytes)");
  std::string frame(8, '\0');
  put_u32(reinterpret_cast<unsigned char*>(&frame[0]),
          static_cast<uint32_t>(record.size()));
  put_u32(reinterpret_cast<unsigned char*>(&frame[4]), crc_of(record));
  frame += record;
  size_t off = 0;
  while (off < frame.size()) {
    auto n = ::write(fd_, frame.data() + off, frame.size() - off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      auto err = io_error("write " + path_);
      // Cut off the partial frame so the file stays well-formed.
      (void) ftruncate(fd_, static_cast<off_t>(size_));
      return err;
    }
    off += static_cast<size_t>(n);
  }
  if (fdatasync(fd_) != 0) {
    auto err = io_error("fdatasync " + path_);
    (void) ftruncate(fd_, static_cast<off_t>(size_));
    return err;
  }
  size_ += total;
  ++records_;
  return caf::none;
}

caf::error
spool::replay(const std::function<caf::error(const std::string&)>& fn) {
  auto rfd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (rfd < 0)
    return errno == ENOENT ? caf::none : io_error("open " + path_);
  uint64_t pos = 0;
  caf::error result;
  unsigned char head[8];
  while (true) {
    auto n = pread(rfd, head, 8, static_cast<off_t>(pos));
    if (n < 8)
      break; // end, or a torn header
    auto len = get_u32(head);
    auto crc = get_u32(head + 4);
    std::string rec(len, '\0');
    auto got = pread(rfd, rec.data(), len, static_cast<off_t>(pos + 8));
    if (got < 0 || static_cast<uint32_t>(got) != len || crc_of(rec) != crc) {
      log().warn("spool {}: torn or corrupt record at offset {}, ignoring "
                 "the tail",
                 path_, pos);
      break;
    }
    if ((result = fn(rec)))
      break;
    pos += 8 + len;
  }
  ::close(rfd);
  return result;
}

caf::error spool::clear() {
  if (fd_ < 0)
    if (auto err = open_file())
      return err;
  if (ftruncate(fd_, 0) != 0)
    return io_error("truncate " + path_);
  if (fsync(fd_) != 0)
    return io_error("fsync " + path_);
  size_ = 0;
  records_ = 0;
  return caf::none;
}

} // namespace troupe::storage
