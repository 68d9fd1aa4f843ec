// absl::Time <-> google.protobuf.Timestamp, and milliseconds for SQLite columns.
#pragma once

#include <cstdint>

#include <google/protobuf/timestamp.pb.h>

#include "absl/time/time.h"

namespace mq::server {

inline void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts) {
  int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

inline absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

inline int64_t ToMillis(absl::Time t) { return absl::ToUnixMillis(t); }
inline absl::Time FromMillis(int64_t ms) { return absl::FromUnixMillis(ms); }

}  // namespace mq::server
