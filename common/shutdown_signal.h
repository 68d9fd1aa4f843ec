// Waits for SIGTERM or SIGINT on a dedicated thread (the signals are blocked in every other
// thread, so no handler runs in an arbitrary context).
#pragma once

namespace mq {

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread; call first in main(), before any
// thread starts, so every thread inherits the mask.
void BlockShutdownSignals();
// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForShutdownSignal();

}  // namespace mq
