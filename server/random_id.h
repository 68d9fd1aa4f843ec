// Unguessable identifiers from the OpenSSL CSPRNG (upload ids double as capabilities).
#pragma once

#include <string>

namespace mq::server {

// `bytes` random bytes as lower-case hex.
std::string RandomHex(int bytes);
inline std::string NewJobId() { return "j-" + RandomHex(8); }
inline std::string NewWorkerId() { return "w-" + RandomHex(8); }
inline std::string NewUploadId() { return RandomHex(16); }

}  // namespace mq::server
