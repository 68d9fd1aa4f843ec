#include "interrupt_watcher.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace mq::cli {

namespace {

int g_write_fd = -1;
struct sigaction g_old_int;
struct sigaction g_old_term;

// Async-signal-safe: one write(2) of the signal number. SA_RESETHAND makes the next signal
// take the default action (terminate), so a stuck program still stops on a second Ctrl-C.
void OnSignal(int sig) {
  const int saved = errno;
  const char c = static_cast<char>(sig);
  if (g_write_fd >= 0) (void)!::write(g_write_fd, &c, 1);
  errno = saved;
}

}  // namespace

InterruptWatcher::InterruptWatcher(std::function<void()> on_interrupt) : on_interrupt_(std::move(on_interrupt)) {
  if (::pipe2(pipe_, O_CLOEXEC) != 0) return;  // no watcher: Ctrl-C keeps its default action
  g_write_fd = pipe_[1];
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
  installed_ = true;
  thread_ = std::thread([this] {
    char c = 0;
    ssize_t n;
    do {
      n = ::read(pipe_[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1 && c != 0) {
      interrupted_.store(true);
      if (on_interrupt_) on_interrupt_();
    }
  });
}

InterruptWatcher::~InterruptWatcher() {
  if (installed_) {
    ::sigaction(SIGINT, &g_old_int, nullptr);
    ::sigaction(SIGTERM, &g_old_term, nullptr);
    const char stop = 0;
    (void)!::write(pipe_[1], &stop, 1);
    if (thread_.joinable()) thread_.join();
    g_write_fd = -1;
  }
  if (pipe_[0] >= 0) ::close(pipe_[0]);
  if (pipe_[1] >= 0) ::close(pipe_[1]);
}

}  // namespace mq::cli
