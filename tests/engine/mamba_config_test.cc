// config.json parsing: the Hugging Face defaults and the refusals.
#include "model/mamba_config.h"

#include <gtest/gtest.h>

#include "test_paths.h"

namespace mq {
namespace {

TEST(MambaConfigTest, ReadsTheTinyFixture) {
  auto c = MambaConfig::FromFile(testing::RepoPath("models/mamba-tiny/config.json"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->time_step_rank, 4);
  EXPECT_EQ(c->state_size, 16);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->vocab_size, 4096);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->residual_in_fp32);
  EXPECT_DOUBLE_EQ(c->layer_norm_epsilon, 1e-5);
}

TEST(MambaConfigTest, AppliesHuggingFaceDefaults) {
  auto c = MambaConfig::FromJsonText(R"({"model_type":"mamba","hidden_size":2560,"time_step_rank":"auto"})", "cfg");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->intermediate_size, 5120);   // expand · hidden
  EXPECT_EQ(c->time_step_rank, 160);       // ceil(2560 / 16)
  EXPECT_EQ(c->vocab_size, 50280);
  EXPECT_EQ(c->num_hidden_layers, 32);
  EXPECT_EQ(c->conv_kernel, 4);
  EXPECT_TRUE(c->tie_word_embeddings);
  auto odd = MambaConfig::FromJsonText(R"({"model_type":"mamba","hidden_size":100})", "cfg");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->time_step_rank, 7);  // ceil(100 / 16)
}

TEST(MambaConfigTest, RefusesOtherModelTypesClearly) {
  auto c = MambaConfig::FromJsonText(R"({"model_type":"mamba2"})", "x/config.json");
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("mamba2"), std::string::npos);
  EXPECT_NE(c.status().message().find("x/config.json"), std::string::npos);
  EXPECT_EQ(MambaConfig::FromJsonText(R"({"hidden_size":64})", "c").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MambaConfig::FromJsonText(R"({"model_type":"llama"})", "c").status().code(), StatusCode::kUnimplemented);
}

TEST(MambaConfigTest, RefusesBadValues) {
  for (const char* text : {
           "not json", "[]", R"({"model_type":"mamba","hidden_size":-4})", R"({"model_type":"mamba","hidden_size":"64"})",
           R"({"model_type":"mamba","time_step_rank":"big"})", R"({"model_type":"mamba","num_hidden_layers":0})",
           R"({"model_type":"mamba","hidden_act":"gelu"})", R"({"model_type":"mamba","vocab_size":10,"eos_token_id":12})",
           R"({"model_type":"mamba","layer_norm_epsilon":-1})", R"({"model_type":"mamba","residual_in_fp32":"yes"})"}) {
    auto c = MambaConfig::FromJsonText(text, "c");
    EXPECT_FALSE(c.ok()) << text;
  }
  EXPECT_EQ(MambaConfig::FromFile("/nonexistent/config.json").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace mq
