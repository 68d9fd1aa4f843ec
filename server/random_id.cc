#include "random_id.h"

#include <cstdlib>
#include <vector>

#include <openssl/rand.h>

namespace mq::server {

std::string RandomHex(int bytes) {
  std::vector<unsigned char> buf(static_cast<size_t>(bytes));
  // Without entropy no id is safe to hand out; this does not happen on a working system.
  if (RAND_bytes(buf.data(), bytes) != 1) abort();
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(buf.size() * 2);
  for (unsigned char b : buf) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

}  // namespace mq::server
