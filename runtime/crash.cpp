#include "runtime/crash.hpp"

#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cstdlib>

namespace troupe::runtime {

namespace {

// Written once before any handler can run, read only in the handler.
char node_id[128] = "?";

void write_str(const char* s) {
  auto n = strlen(s);
  while (n > 0) {
    auto w = write(STDERR_FILENO, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void write_int(long v) {
  char buf[24];
  int i = sizeof(buf) - 1;
  buf[i] = '\0';
  bool neg = v < 0;
  unsigned long u = neg ? static_cast<unsigned long>(-v)
                        : static_cast<unsigned long>(v);
  do {
    buf[--i] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u > 0 && i > 1);
  if (neg)
    buf[--i] = '-';
  write_str(buf + i);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGABRT:
      return "SIGABRT";
    default:
      return "signal";
  }
}

void on_fatal(int sig, siginfo_t* info, void*) {
  write_str("[critical] [troupe.runtime] node=");
  write_str(node_id);
  write_str(" fatal signal ");
  write_int(sig);
  write_str(" (");
  write_str(signal_name(sig));
  write_str(") address=");
  write_int(info ? reinterpret_cast<long>(info->si_addr) : 0);
  write_str(" thread=");
  write_int(static_cast<long>(gettid()));
  write_str("; backtrace:\n");
  void* frames[64];
  auto n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  write_str("[critical] [troupe.runtime] the process dies now\n");
  // SA_RESETHAND restored the default action: die as the signal would.
  raise(sig);
}

} // namespace

void ensure_signal_stack() {
  thread_local bool done = false;
  if (done)
    return;
  done = true;
  // Leaked on purpose: the stack must outlive any handler run on this
  // thread, and threads live as long as the process here.
  constexpr size_t size = 64 * 1024;
  stack_t ss{};
  ss.ss_sp = std::malloc(size);
  if (!ss.ss_sp)
    return;
  ss.ss_size = size;
  ss.ss_flags = 0;
  sigaltstack(&ss, nullptr);
}

void install_crash_handler(const std::string& id) {
  strncpy(node_id, id.c_str(), sizeof(node_id) - 1);
  // backtrace() loads libgcc on first use (malloc): not in the handler.
  void* warm[4];
  (void) backtrace(warm, 4);
  ensure_signal_stack();
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (auto sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT})
    sigaction(sig, &sa, nullptr);
}

} // namespace troupe::runtime
