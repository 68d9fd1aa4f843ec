// The worker's report rewriting (worker/report_paths.h): local paths become the references they
// were fetched from, in the report handed to the server and in the export's quant_report.json.
#include "report_paths.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace mq::worker {
namespace {

ExecutionRequest Request(const std::filesystem::path& root) {
  ExecutionRequest r;
  r.model_dir = (root / "blobs/models/ab12").string();
  r.calib_path = (root / "blobs/sha256/7f/7fe7").string();
  r.eval_path = (root / "blobs/sha256/a5/a598").string();
  r.output_dir = (root / "jobs/j-1/model").string();
  r.spec.set_model("mamba-small:3");
  r.spec.set_calib_dataset("calib:1");
  r.spec.set_eval_dataset("eval:2");
  return r;
}

TEST(ReportPaths, LocalPathsBecomeReferencesEverywhereInTheReport) {
  const auto root = std::filesystem::temp_directory_path() / ("report_paths_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  const ExecutionRequest r = Request(root);
  std::filesystem::create_directories(r.output_dir);
  nlohmann::json report = {
      {"model", r.model_dir},
      {"calibration", {{"text", r.calib_path}, {"samples", 8}}},
      {"evaluation", {{"text", r.eval_path}, {"float_perplexity", 81.5}}},
      {"files", {r.output_dir + "/model.safetensors", r.model_dir + "/config.json"}},
      // Not a path of this job: a prefix that is not a directory boundary, and free text.
      {"other", r.model_dir + "x"},
      {"note", "calibrated on " + r.calib_path}};
  auto out = FinalizeReport(r, report.dump(), {{"device_note", "GPU not used: busy"}});
  ASSERT_TRUE(out.ok()) << out.status();
  const auto got = nlohmann::json::parse(*out);
  EXPECT_EQ(got["model"], "mamba-small:3");
  EXPECT_EQ(got["calibration"]["text"], "calib:1");
  EXPECT_EQ(got["calibration"]["samples"], 8);
  EXPECT_EQ(got["evaluation"]["text"], "eval:2");
  EXPECT_EQ(got["evaluation"]["float_perplexity"], 81.5);
  EXPECT_EQ(got["files"][0], "<output>/model.safetensors");
  EXPECT_EQ(got["files"][1], "mamba-small:3/config.json");
  EXPECT_EQ(got["other"], r.model_dir + "x");
  EXPECT_EQ(got["device_note"], "GPU not used: busy");
  // Only whole strings are paths; a path inside free text is not rewritten (and not produced by
  // the engine's reports).
  EXPECT_EQ(got["note"], "calibrated on " + r.calib_path);
  // The export's copy says the same.
  std::ifstream in(std::filesystem::path(r.output_dir) / "quant_report.json");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(nlohmann::json::parse(text.str()), got);
  // The output directory is nowhere; the calibration file only inside the note's free text.
  EXPECT_EQ(text.str().find(r.output_dir), std::string::npos) << text.str();
  const size_t calib = text.str().find(r.calib_path);
  EXPECT_EQ(calib, text.str().find("calibrated on") + std::string("calibrated on ").size()) << text.str();
  EXPECT_EQ(text.str().find(r.calib_path, calib + 1), std::string::npos) << text.str();
  std::filesystem::remove_all(root);
}

TEST(ReportPaths, NotAnObjectIsAnError) {
  const auto root = std::filesystem::temp_directory_path() / "report_paths_test_bad";
  EXPECT_FALSE(FinalizeReport(Request(root), "[1, 2]").ok());
  EXPECT_FALSE(FinalizeReport(Request(root), "{not json").ok());
}

}  // namespace
}  // namespace mq::worker

namespace mq::worker {
namespace {

TEST(ReportPaths, PathsInFreeTextAreReplacedLongestFirst) {
  const std::vector<std::pair<std::string, std::string>> r = {
      {"/data/jobs/j-1/model", "mamba-small:3"}, {"/data/jobs/j-1", "<job>"}, {"/data", "<work>"}, {"/", "<root>"}};
  EXPECT_EQ(ReplaceLocalPathsInText("open /data/jobs/j-1/model/config.json: no; mkdir /data/jobs/j-1/out; /data/x", r),
            "open mamba-small:3/config.json: no; mkdir <job>/out; <work>/x");
  EXPECT_EQ(ReplaceLocalPathsInText("no path here", r), "no path here");
  EXPECT_EQ(ReplaceLocalPathsInText("", r), "");
}

}  // namespace
}  // namespace mq::worker
