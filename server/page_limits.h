// How much one page of a list call (ListArtifacts, ListJobs) may hold, besides its page_size: rows
// with large metadata must not push a page past the 8 MiB message limit, or listing would fail for
// everyone. A page always holds at least one row (one row is far below this).
#pragma once

#include <cstddef>

namespace mq::server {

inline constexpr size_t kMaxListPageBytes = 4 << 20;

}  // namespace mq::server
