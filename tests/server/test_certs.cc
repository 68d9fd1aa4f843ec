#include "test_certs.h"

#include <fstream>

#include "test_support.h"

namespace mq::test {

bool MakeCa(const std::string& dir, const std::string& name, CertFiles* out) {
  out->cert = dir + "/" + name + ".pem";
  out->key = dir + "/" + name + ".key";
  std::string log;
  return RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-days", "1", "-subj", "/CN=" + name, "-keyout", out->key, "-out", out->cert},
                    &log) == 0;
}

bool MakeLeaf(const std::string& dir, const std::string& name, const std::string& cn, const CertFiles& ca, CertFiles* out) {
  out->cert = dir + "/" + name + ".pem";
  out->key = dir + "/" + name + ".key";
  const std::string csr = dir + "/" + name + ".csr";
  const std::string ext = dir + "/" + name + ".ext";
  std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n";
  std::string log;
  if (RunCommand({"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-subj", "/CN=" + cn, "-keyout", out->key, "-out", csr},
                 &log) != 0) {
    return false;
  }
  return RunCommand({"/usr/bin/openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
                     "-days", "1", "-out", out->cert, "-extfile", ext},
                    &log) == 0;
}

}  // namespace mq::test
