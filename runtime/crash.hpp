#pragma once

#include <string>

namespace troupe::runtime {

/// Makes a crash leave a line in the log: on SIGSEGV, SIGBUS, SIGILL, SIGFPE
/// or SIGABRT the handler writes "fatal signal" with the node id and a
/// backtrace to stderr (where the log goes), then lets the signal kill the
/// process as it would have (exit status and core dump unchanged). Call
/// once, early in main's thread. Async-signal-safe in the handler: only
/// write(2) and backtrace_symbols_fd(3).
void install_crash_handler(const std::string& node_id);

/// Gives the calling thread an alternate signal stack, so the handler also
/// runs when the thread overflowed its own stack. Call at the start of
/// every thread the node creates (CAF's threads get it from a thread hook,
/// see node.cpp); idempotent per thread.
void ensure_signal_stack();

} // namespace troupe::runtime
