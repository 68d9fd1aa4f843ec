// Where the tests find their data: in-repo copies first, ../shared/fixtures for the large ones.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace mq::testing {

// $MQ_SOURCE_DIR, when set, replaces the source directory compiled in (a test binary built on one
// machine and run from another checkout: tests/gpu/service.sh).
inline std::string RepoPath(const std::string& rel) {
  const char* dir = std::getenv("MQ_SOURCE_DIR");
  return std::string(dir != nullptr ? dir : MQ_SOURCE_DIR) + "/" + rel;
}
inline std::string SharedFixture(const std::string& rel) { return std::string(MQ_SHARED_FIXTURES_DIR) + "/" + rel; }
inline bool Exists(const std::string& p) { return std::filesystem::exists(p); }

// The model directory and reference file of fixture `name` ("tiny" or "small"); empty if absent.
struct FixturePaths {
  std::string model_dir;
  std::string reference;
};
// MQ_FIXTURES_DIR, when set, is looked at first (the GPU machine gets mamba-small there, from
// tests/gpu/run.sh, without ../shared).
inline FixturePaths Fixture(const std::string& name) {
  if (name == "tiny") return {RepoPath("models/mamba-tiny"), RepoPath("tests/data/mamba-tiny-reference.safetensors")};
  if (const char* dir = std::getenv("MQ_FIXTURES_DIR")) {
    FixturePaths p{std::string(dir) + "/mamba-" + name, std::string(dir) + "/mamba-" + name + "-reference.safetensors"};
    if (Exists(p.model_dir) && Exists(p.reference)) return p;
  }
  FixturePaths p{SharedFixture("models/mamba-" + name), SharedFixture("models/mamba-" + name + "-reference.safetensors")};
  if (!Exists(p.model_dir) || !Exists(p.reference)) return {};
  return p;
}

}  // namespace mq::testing

// Skips a test whose fixture lives only in ../shared/fixtures when that directory is absent.
#define MQ_REQUIRE_FIXTURE(paths, name)                                                          \
  if ((paths).model_dir.empty())                                                                 \
  GTEST_SKIP() << "fixture mamba-" << (name) << " not found under " MQ_SHARED_FIXTURES_DIR       \
               << " (it is too large for the repository; only mamba-tiny is bundled)"
