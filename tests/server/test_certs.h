// Certificates made at test time with the openssl CLI (no key is kept in the repository): a CA
// and leaf certificates it signs, valid for localhost and 127.0.0.1, usable by servers and clients.
#pragma once

#include <string>

namespace mq::test {

struct CertFiles {
  std::string cert;  // PEM paths
  std::string key;
};

// A self-signed CA under `dir` named `name` (files name.pem, name.key). False when openssl fails.
bool MakeCa(const std::string& dir, const std::string& name, CertFiles* out);
// A leaf certificate with common name `cn` signed by `ca` (files name.pem, name.key).
bool MakeLeaf(const std::string& dir, const std::string& name, const std::string& cn, const CertFiles& ca, CertFiles* out);

}  // namespace mq::test
