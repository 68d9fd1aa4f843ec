// The CPU QuantAccelerator against the accelerator contract (quant_accelerator_contract.h); the
// GPU runs the same checks in cuda_quant_gpu_test. Also: the pipeline refuses a device that
// cannot run a job before touching anything, and the device names of `--device` without the CUDA
// backend.
#include <gtest/gtest.h>

#include <filesystem>

#include "quant/cpu_quant_accelerator.h"
#include "quant_accelerator_contract.h"
#include "quant/quant_device.h"
#include "quant/quant_spec.h"

namespace mq::quant {
namespace {

TEST(CpuQuantAcceleratorTest, RotationProducts) { testing::CheckRotationProducts(CpuAccelerator()); }
TEST(CpuQuantAcceleratorTest, Eigenvectors) { testing::CheckEigenvectors(CpuAccelerator()); }
TEST(CpuQuantAcceleratorTest, CalibrationMatchesNaiveStatistics) { testing::CheckCalibration(CpuAccelerator(), 1e-6); }
TEST(CpuQuantAcceleratorTest, CompareMatchesCompareModels) { testing::CheckCompare(CpuAccelerator(), 1e-12, 0, 1e-12); }

// A device that cannot run the job: the pipeline fails with its reason and writes nothing.
class RefusingAccelerator : public CpuQuantAccelerator {
 public:
  std::string name() const override { return "refusing"; }
  Status CheckSupported(const QuantSpec& spec) const override {
    return spec.scope_full ? UnimplementedError("no scope full here") : OkStatus();
  }
};

TEST(CpuQuantAcceleratorTest, UnsupportedJobIsRefusedUpFront) {
  QuantizeOptions o;
  o.model_dir = testing::RepoPath("models/mamba-tiny");
  o.calib_text_path = testing::RepoPath("models/text/calib.txt");
  o.num_samples = 2;
  o.seq_len = 32;
  o.scope = "full";
  o.output_dir = (std::filesystem::temp_directory_path() / "mq-refused-job").string();
  std::filesystem::remove_all(o.output_dir);
  RefusingAccelerator accel;
  int progress_calls = 0;
  auto r = QuantizeModel(o, [&](const Progress&) { return ++progress_calls > 0; }, &accel);
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("no scope full here"), std::string::npos);
  EXPECT_EQ(progress_calls, 0) << "the job started before the device was checked";
  EXPECT_FALSE(std::filesystem::exists(o.output_dir));
  o.scope = "linear";
  auto ok = QuantizeModel(o, nullptr, &accel);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_NE(ok->report_json.find("\"device\":\"refusing\""), std::string::npos);
  std::filesystem::remove_all(o.output_dir);
}

// The device names of `mq-engine quantize --device` in a binary without the CUDA backend (this
// test does not link it): cpu works, cuda is refused as unavailable, auto falls back and says why.
TEST(QuantDeviceTest, PicksTheCpuWithoutTheCudaBackend) {
  QuantizeOptions o;
  auto cpu = OpenQuantDevice("cpu", o);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->name(), "cpu");
  std::string why;
  auto autod = OpenQuantDevice("auto", o, &why);
  ASSERT_TRUE(autod.ok());
  EXPECT_EQ((*autod)->name(), "cpu");
  EXPECT_NE(why.find("without a CUDA toolkit"), std::string::npos) << why;
  EXPECT_EQ(OpenQuantDevice("cuda", o).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(OpenQuantDevice("gpu", o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq::quant
