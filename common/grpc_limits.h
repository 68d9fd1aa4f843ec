// The message limits of every gRPC endpoint of the service (mq-server's API, worker and health
// ports, mq-worker's health port, and the channels of mqctl and the worker): one owner, so that a
// message one side may send the other side may receive.
#pragma once

#include <grpcpp/server_builder.h>

namespace mq {

// A message's largest encoded size. Upload chunks carry at most 4 MiB of payload; the rest of
// the room is framing and the largest inference requests (8,192-token prompts, 1,024-image
// Classify batches), whose own limits are checked where they are parsed.
inline constexpr int kMaxGrpcMessageBytes = 8 << 20;

// Applies the limits to a server: the message size, and no decompression of incoming messages.
// gRPC 1.51 inflates a compressed message whole before it compares its size with the limit, so a
// 1 MB gzip message made the server allocate 1 GiB (and the health service takes calls without a
// token). With gzip and deflate disabled such a call ends with UNIMPLEMENTED before its message is
// read; no client of ours compresses.
void ApplyServerLimits(grpc::ServerBuilder* builder);

}  // namespace mq
