// VimConfig: parsing, derived geometry, range checks and the refusal of unimplemented variants.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "vim/vim_config.h"

namespace mq {
namespace {

nlohmann::json DigitsJson() {
  return nlohmann::json::parse(R"({"model_type": "vim", "img_size": 8, "patch_size": 2, "stride": 2, "in_chans": 1,
    "embed_dim": 64, "depth": 4, "d_state": 16, "d_conv": 4, "expand": 2, "d_inner": 128, "dt_rank": 4,
    "num_classes": 10, "grid_size": 4, "num_patches": 16, "seq_len": 17, "bimamba_type": "v2",
    "if_divide_out": true, "if_cls_token": true, "use_middle_cls_token": true, "cls_token_index": 8,
    "final_pool_type": "mean", "if_abs_pos_embed": true, "if_rope": false, "rms_norm": true,
    "norm_epsilon": 1e-5, "init_layer_scale": null, "input_mean": [0.3], "input_std": [0.37]})");
}

TEST(VimConfig, ParsesAndDerivesTheGeometry) {
  auto c = VimConfig::FromJson(DigitsJson(), "digits");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->grid_size(), 4);
  EXPECT_EQ(c->num_patches(), 16);
  EXPECT_EQ(c->seq_len(), 17);
  EXPECT_EQ(c->cls_token_index(), 8);
  EXPECT_EQ(c->d_inner, 128);
  EXPECT_EQ(c->dt_rank, 4);
  EXPECT_EQ(c->image_numel(), 64);
  // Round trip through the written form.
  auto again = VimConfig::FromJson(c->ToJson(), "round trip");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->seq_len(), 17);
  EXPECT_EQ(again->input_std, std::vector<double>{0.37});
}

TEST(VimConfig, AutoDtRankAndTheStrideEightGeometry) {
  nlohmann::json j = DigitsJson();
  j.erase("grid_size"), j.erase("num_patches"), j.erase("seq_len"), j.erase("cls_token_index"), j.erase("d_inner");
  j["img_size"] = 224, j["patch_size"] = 16, j["stride"] = 8, j["embed_dim"] = 200, j["dt_rank"] = "auto";
  auto c = VimConfig::FromJson(j, "s8");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_patches(), 729);  // vim-forward.md: 729 patches is 224/16/8
  EXPECT_EQ(c->cls_token_index(), 364);
  EXPECT_EQ(c->dt_rank, 13);         // ceil(200 / 16)
  EXPECT_EQ(c->d_inner, 400);
}

TEST(VimConfig, ReleasedShapes) {
  auto t = ReleasedVimConfig("tiny");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->seq_len(), 197);
  EXPECT_EQ(t->cls_token_index(), 98);
  EXPECT_EQ(t->dt_rank, 12);
  EXPECT_EQ(t->d_inner, 384);
  EXPECT_EQ(ReleasedVimConfig("small")->dt_rank, 24);
  EXPECT_EQ(ReleasedVimConfig("base")->d_inner, 1536);
  EXPECT_EQ(ReleasedVimConfig("huge").status().code(), StatusCode::kNotFound);
}

TEST(VimConfig, RejectsBadNumbers) {
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  for (const Case& k : {Case{"depth", 0}, Case{"embed_dim", -1}, Case{"patch_size", 9}, Case{"stride", 0},
                        Case{"in_chans", 100}, Case{"num_classes", 0}, Case{"d_state", 1000},
                        Case{"norm_epsilon", 0.0}, Case{"seq_len", 18}, Case{"cls_token_index", 0},
                        Case{"dt_rank", 129}, Case{"img_size", "8"}, Case{"input_std", {0.0}},
                        Case{"input_mean", {0.1, 0.2}}}) {
    nlohmann::json j = DigitsJson();
    j[k.key] = k.value;
    auto c = VimConfig::FromJson(j, "bad");
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << k.key << " = " << k.value.dump();
  }
  nlohmann::json j = DigitsJson();
  j["model_type"] = "mamba";
  EXPECT_EQ(VimConfig::FromJson(j, "x").status().code(), StatusCode::kInvalidArgument);
  j = DigitsJson();
  j.erase("img_size");
  EXPECT_EQ(VimConfig::FromJson(j, "x").status().code(), StatusCode::kInvalidArgument);
}

TEST(VimConfig, RefusesUnimplementedVariants) {
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  for (const Case& k : {Case{"bimamba_type", "v1"}, Case{"if_cls_token", false}, Case{"use_middle_cls_token", false},
                        Case{"use_double_cls_token", true}, Case{"if_rope", true}, Case{"if_bidirectional", true},
                        Case{"rms_norm", false}, Case{"init_layer_scale", 1e-6}, Case{"if_abs_pos_embed", false}}) {
    nlohmann::json j = DigitsJson();
    j[k.key] = k.value;
    EXPECT_EQ(VimConfig::FromJson(j, "variant").status().code(), StatusCode::kUnimplemented) << k.key;
  }
}

}  // namespace
}  // namespace mq
