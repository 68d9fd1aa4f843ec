// tokenizer.json is untrusted input: every malformed file must be refused with a status naming
// the problem, never a crash. Also pins BPE merge-rank order on a tiny synthetic vocabulary.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_paths.h"
#include "tokenizer/bpe_tokenizer.h"

namespace mq {
namespace {

using nlohmann::json;

// A minimal valid tokenizer.json in the fixture's format: byte-level characters a, b, c, Ġ
// (space) and the tokens the merges build.
json TinyTokenizer(json merges = json::array({json::array({"b", "c"}), json::array({"a", "b"})})) {
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", json::array({json{{"id", 0},
                                                 {"content", "<|endoftext|>"},
                                                 {"single_word", false},
                                                 {"lstrip", false},
                                                 {"rstrip", false},
                                                 {"normalized", false},
                                                 {"special", true}}})},
              {"normalizer", json{{"type", "NFC"}}},
              {"pre_tokenizer", json{{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"trim_offsets", true},
                                     {"use_regex", true}}},
              {"post_processor", json{{"type", "ByteLevel"},
                                      {"add_prefix_space", true},
                                      {"trim_offsets", false},
                                      {"use_regex", true}}},
              {"decoder", json{{"type", "ByteLevel"},
                               {"add_prefix_space", true},
                               {"trim_offsets", true},
                               {"use_regex", true}}},
              {"model", json{{"type", "BPE"},
                             {"dropout", nullptr},
                             {"unk_token", nullptr},
                             {"continuing_subword_prefix", nullptr},
                             {"end_of_word_suffix", nullptr},
                             {"fuse_unk", false},
                             {"byte_fallback", false},
                             {"ignore_merges", false},
                             {"vocab", json{{"<|endoftext|>", 0},
                                            {"a", 1},
                                            {"b", 2},
                                            {"c", 3},
                                            {"Ġ", 4},
                                            {"ab", 5},
                                            {"bc", 6},
                                            {"abc", 7},
                                            {"Ġa", 8}}},
                             {"merges", std::move(merges)}}}};
}

StatusOr<Tokenizer> Load(const json& j) { return Tokenizer::LoadFromJson(j.dump()); }

std::vector<int32_t> EncodeOrDie(const Tokenizer& tok, const std::string& text) {
  auto ids = tok.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status().ToString();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

// Asserts `status` has `code` and a message containing `needle`.
void ExpectError(const Status& status, StatusCode code, const std::string& needle) {
  EXPECT_EQ(status.code(), code) << status.ToString();
  EXPECT_NE(status.message().find(needle), std::string::npos)
      << "message \"" << status.message() << "\" lacks \"" << needle << "\"";
}

class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("mq_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) +
              ".json"))
                .string();
    std::ofstream(path_, std::ios::binary) << contents;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(BpeMergeOrderTest, LowestRankMergesFirst) {
  // "b c" outranks "a b": abc -> a + bc, and no merge joins a with bc.
  auto tok = Load(TinyTokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(EncodeOrDie(*tok, "abc"), (std::vector<int32_t>{1, 6}));
  // Reversed ranks: abc -> ab + c.
  auto reversed =
      Load(TinyTokenizer(json::array({json::array({"a", "b"}), json::array({"b", "c"})})));
  ASSERT_TRUE(reversed.ok()) << reversed.status().ToString();
  EXPECT_EQ(EncodeOrDie(*reversed, "abc"), (std::vector<int32_t>{5, 3}));
  // A later merge can consume an earlier result: a + bc -> abc.
  auto chained = Load(TinyTokenizer(
      json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"})})));
  ASSERT_TRUE(chained.ok()) << chained.status().ToString();
  EXPECT_EQ(EncodeOrDie(*chained, "abc"), (std::vector<int32_t>{7}));
  // A pair that occurs twice merges at both places.
  EXPECT_EQ(EncodeOrDie(*chained, "abab"), (std::vector<int32_t>{5, 5}));
  EXPECT_EQ(EncodeOrDie(*chained, "cabc"), (std::vector<int32_t>{3, 7}));
  // Words are merged separately: " a" becomes one word "Ġa", but no merge "Ġ a" exists here.
  EXPECT_EQ(EncodeOrDie(*chained, "c a"), (std::vector<int32_t>{3, 4, 1}));
}

TEST(BpeMergeOrderTest, StringFormMergesEqualPairForm) {
  auto pairs = Load(TinyTokenizer(
      json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"Ġ", "a"})})));
  auto strings = Load(TinyTokenizer(json::array({"#version: 0.2", "b c", "a b", "Ġ a"})));
  ASSERT_TRUE(pairs.ok()) << pairs.status().ToString();
  ASSERT_TRUE(strings.ok()) << strings.status().ToString();
  for (const std::string text : {"abc", "c abc", "cab a", " a", "<|endoftext|>abc"}) {
    EXPECT_EQ(EncodeOrDie(*pairs, text), EncodeOrDie(*strings, text)) << text;
  }
  EXPECT_EQ(EncodeOrDie(*strings, "c abc"), (std::vector<int32_t>{3, 8, 6}));
  EXPECT_EQ(EncodeOrDie(*strings, "<|endoftext|>abc"), (std::vector<int32_t>{0, 1, 6}));
}

TEST(BpeMergeOrderTest, MissingAlphabetCharactersAreDroppedWithoutUnkToken) {
  // As in Hugging Face: no unk_token means characters absent from the vocabulary vanish.
  auto tok = Load(TinyTokenizer());
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(EncodeOrDie(*tok, "axc"), (std::vector<int32_t>{1, 3}));
}

TEST(TokenizerCorruptTest, EmptyAndWhitespaceFiles) {
  ExpectError(Tokenizer::LoadFromJson("").status(), StatusCode::kDataLoss, "empty file");
  ExpectError(Tokenizer::LoadFromJson(" \n\t ").status(), StatusCode::kDataLoss, "empty file");
  TempFile empty("");
  const Status from_file = Tokenizer::LoadFromFile(empty.path()).status();
  ExpectError(from_file, StatusCode::kDataLoss, "empty file");
  ExpectError(from_file, StatusCode::kDataLoss, empty.path());
}

TEST(TokenizerCorruptTest, MissingFileNamesThePath) {
  const Status s = Tokenizer::LoadFromFile("/nonexistent/dir/tokenizer.json").status();
  ExpectError(s, StatusCode::kNotFound, "/nonexistent/dir/tokenizer.json");
}

TEST(TokenizerCorruptTest, TruncatedJson) {
  const std::string text = TinyTokenizer().dump();
  for (size_t cut : {size_t{1}, text.size() / 3, text.size() / 2, text.size() - 1}) {
    ExpectError(Tokenizer::LoadFromJson(text.substr(0, cut)).status(), StatusCode::kDataLoss,
                "not valid JSON");
  }
  TempFile truncated(text.substr(0, text.size() / 2));
  const Status s = Tokenizer::LoadFromFile(truncated.path()).status();
  ExpectError(s, StatusCode::kDataLoss, "not valid JSON");
  ExpectError(s, StatusCode::kDataLoss, truncated.path());
}

TEST(TokenizerCorruptTest, EveryPrefixOfTheFixtureIsRefusedWithoutCrashing) {
  const std::string path = ::mq::testing::RepoPath("models/mamba-tiny/tokenizer.json");
  if (!::mq::testing::Exists(path)) GTEST_SKIP() << path << " not found";
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  ASSERT_TRUE(Tokenizer::LoadFromJson(text).ok());
  for (size_t i = 1; i < 97; ++i) {
    const size_t cut = text.size() * i / 97;
    const Status s = Tokenizer::LoadFromJson(text.substr(0, cut)).status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "cut at " << cut << ": " << s.ToString();
  }
}

TEST(TokenizerCorruptTest, WrongTopLevelAndMissingSections) {
  ExpectError(Tokenizer::LoadFromJson("[1, 2]").status(), StatusCode::kDataLoss,
              "top level must be a JSON object");
  ExpectError(Tokenizer::LoadFromJson("\"text\"").status(), StatusCode::kDataLoss,
              "top level must be a JSON object");
  json j = TinyTokenizer();
  j.erase("model");
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "missing field model");
  j = TinyTokenizer();
  j["model"].erase("vocab");
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "missing field model.vocab");
  j = TinyTokenizer();
  j["model"].erase("merges");
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "missing field model.merges");
}

TEST(TokenizerCorruptTest, WrongTypes) {
  struct Case {
    std::function<void(json&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"] = 5; }, "model must be a JSON object"},
      {[](json& j) { j["model"]["vocab"] = json::array({"a"}); }, "model.vocab must be an object"},
      {[](json& j) { j["model"]["vocab"]["a"] = "1"; }, "model.vocab[\"a\"] must be an integer id"},
      {[](json& j) { j["model"]["vocab"]["a"] = 1.5; }, "model.vocab[\"a\"] must be an integer id"},
      {[](json& j) { j["model"]["vocab"]["a"] = nullptr; }, "must be an integer id"},
      {[](json& j) {
         j["model"]["merges"] = json{{"a", "b"}};
       },
       "model.merges must be an array"},
      {[](json& j) { j["model"]["merges"][0] = 7; },
       "model.merges[0] must be a [left, right] pair"},
      {[](json& j) {
         j["model"]["merges"][0] = json::array({"b", "c", "d"});
       },
       "model.merges[0] must be a pair of strings"},
      {[](json& j) {
         j["model"]["merges"][1] = json::array({"a", 2});
       },
       "model.merges[1] must be a pair of strings"},
      {[](json& j) { j["model"]["merges"][0] = "bc"; }, "single space"},
      {[](json& j) { j["model"]["merges"][0] = "b c d"; }, "single space"},
      {[](json& j) { j["model"]["unk_token"] = 3; }, "model.unk_token must be a string or null"},
      {[](json& j) { j["model"]["byte_fallback"] = "yes"; },
       "model.byte_fallback must be true or false"},
      {[](json& j) {
         j["added_tokens"] = json{{"content", "x"}};
       },
       "added_tokens must be an array"},
      {[](json& j) { j["added_tokens"][0].erase("content"); },
       "missing field added_tokens[0].content"},
      {[](json& j) { j["added_tokens"][0]["id"] = "0"; },
       "added_tokens[0] (\"<|endoftext|>\") has id \"0\""},
      {[](json& j) { j["added_tokens"][0]["special"] = 1; },
       "added_tokens[0].special must be true or false"},
      {[](json& j) { j["added_tokens"][0]["content"] = ""; }, "added_tokens[0].content is empty"},
      {[](json& j) {
         j["normalizer"] = json{{"kind", "NFC"}};
       },
       "missing field normalizer.type"},
      {[](json& j) { j["normalizer"]["type"] = 3; }, "normalizer.type must be a string"},
      {[](json& j) { j["pre_tokenizer"] = "ByteLevel"; }, "pre_tokenizer is not a JSON object"},
      {[](json& j) { j["pre_tokenizer"]["add_prefix_space"] = "no"; },
       "pre_tokenizer.add_prefix_space must be true or false"},
  };
  for (const Case& c : cases) {
    json j = TinyTokenizer();
    c.edit(j);
    ExpectError(Load(j).status(), StatusCode::kDataLoss, c.needle);
  }
}

TEST(TokenizerCorruptTest, InconsistentVocabularyAndMerges) {
  json j = TinyTokenizer();
  j["model"]["merges"][0] = json::array({"b", "x"});
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "model.merges[0]: token \"x\" is not in model.vocab");
  j = TinyTokenizer();
  j["model"]["merges"][1] = "q b";
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "model.merges[1]: token \"q\" is not in model.vocab");
  // Hugging Face refuses a merge whose result is not a token, and so does this loader.
  j = TinyTokenizer();
  j["model"]["merges"].push_back(json::array({"c", "a"}));
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "model.merges[2]: merged token \"ca\" is not in model.vocab");

  j = TinyTokenizer();
  j["model"]["vocab"]["c"] = 2;  // same id as "b"
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "id 2 is used by both \"b\" and \"c\"");
  j = TinyTokenizer();
  j["model"]["vocab"]["c"] = -3;
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "model.vocab[\"c\"] has id -3, outside [0, 10000000)");
  j = TinyTokenizer();
  j["model"]["vocab"]["c"] = 4000000000u;
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "has id 4000000000, outside");
  j = TinyTokenizer();
  j["model"]["vocab"]["c"] = int64_t{1} << 40;
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "outside [0, 10000000)");
  j = TinyTokenizer();
  j["model"]["unk_token"] = "<unk>";
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "model.unk_token \"<unk>\" is not in model.vocab");
}

TEST(TokenizerCorruptTest, InconsistentAddedTokens) {
  // `tokenizers` re-derives added-token ids on load; a file whose ids disagree is refused.
  json j = TinyTokenizer();
  j["added_tokens"][0]["id"] = 7;
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "token \"<|endoftext|>\" has id 7 but its id in this vocabulary is 0");
  j = TinyTokenizer();
  j["added_tokens"][0]["id"] = -1;
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "has id -1, not an integer in [0, 10000000)");
  j = TinyTokenizer();
  j["added_tokens"].push_back(j["added_tokens"][0]);
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "added_tokens[1]: token \"<|endoftext|>\" is listed twice");
  // A token outside the vocabulary gets the next id past it (9 here), and only that id.
  j = TinyTokenizer();
  j["added_tokens"].push_back(json{{"id", 12}, {"content", "<pad>"}, {"special", true}});
  ExpectError(Load(j).status(), StatusCode::kDataLoss,
              "token \"<pad>\" has id 12 but its id in this vocabulary is 9");
  j["added_tokens"][1]["id"] = 9;
  auto ok = Load(j);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->vocab_size(), 10);
  EXPECT_EQ(EncodeOrDie(*ok, "a<pad>b"), (std::vector<int32_t>{1, 9, 2}));
  // A hole in the vocabulary would make that id collide with a model token.
  j = TinyTokenizer();
  j["model"]["vocab"]["Ġa"] = 9;
  j["added_tokens"].push_back(json{{"id", 9}, {"content", "<pad>"}, {"special", true}});
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "which model.vocab gives to \"Ġa\"");
}

TEST(TokenizerCorruptTest, DecodeRefusesIdsWithoutTokens) {
  json j = TinyTokenizer();
  j["model"]["vocab"]["Ġa"] = 10;  // leaves 8 and 9 unused
  auto tok = Load(j);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(tok->vocab_size(), 11);
  EXPECT_EQ(*tok->Decode({1, 10}), "a a");
  ExpectError(tok->Decode({1, 8}).status(), StatusCode::kInvalidArgument,
              "id 8 at position 1 belongs to no token");
  ExpectError(tok->Decode({11}).status(), StatusCode::kOutOfRange,
              "id 11 at position 0 is outside the vocabulary [0, 11)");
  ExpectError(tok->DecodeBytes({-5}).status(), StatusCode::kOutOfRange, "id -5");
}

TEST(TokenizerCorruptTest, UnsupportedFeaturesAreRefusedClearly) {
  struct Case {
    std::function<void(json&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"]["type"] = "WordPiece"; },
       "model type \"WordPiece\" is not supported"},
      {[](json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout = 0.1 is not supported"},
      {[](json& j) {
         j["normalizer"] = json{{"type", "Lowercase"}};
       },
       "normalizer type \"Lowercase\" is not supported"},
      {[](json& j) {
         j["normalizer"] =
             json{{"type", "Sequence"},
                  {"normalizers", json::array({json{{"type", "NFC"}}, json{{"type", "Strip"}}})}};
       },
       "normalizer.normalizers[1]: normalizer type \"Strip\""},
      {[](json& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer is null"},
      {[](json& j) {
         j["pre_tokenizer"] = json{{"type", "Whitespace"}};
       },
       "pre-tokenizer type \"Whitespace\" is not supported"},
      {[](json& j) {
         j["pre_tokenizer"] =
             json{{"type", "Sequence"},
                  {"pretokenizers", json::array({json{{"type", "Digits"}}, j["pre_tokenizer"]})}};
       },
       "pre_tokenizer Sequence with 2 steps"},
      {[](json& j) { j["decoder"] = nullptr; }, "decoder is null"},
      {[](json& j) {
         j["decoder"] = json{{"type", "WordPiece"}};
       },
       "decoder type \"WordPiece\""},
      {[](json& j) {
         j["post_processor"] = json{{"type", "BertProcessing"}};
       },
       "post-processor type \"BertProcessing\""},
      {[](json& j) {
         j["truncation"] = json{{"max_length", 512}};
       },
       "\"truncation\" is set"},
      {[](json& j) {
         j["padding"] = json{{"strategy", "BatchLongest"}};
       },
       "\"padding\" is set"},
  };
  for (const Case& c : cases) {
    json j = TinyTokenizer();
    c.edit(j);
    ExpectError(Load(j).status(), StatusCode::kUnimplemented, c.needle);
  }
}

TEST(TokenizerCorruptTest, SupportedVariantsLoad) {
  // Sequence wrappers around the supported steps, a null normalizer, and no added tokens.
  json j = TinyTokenizer();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] =
      json{{"type", "Sequence"}, {"pretokenizers", json::array({j["pre_tokenizer"]})}};
  j["decoder"] = json{{"type", "Sequence"}, {"decoders", json::array({j["decoder"]})}};
  j["post_processor"] = nullptr;
  j.erase("added_tokens");
  j["model"].erase("type");  // old files omit it
  j["model"]["dropout"] = 0.0;
  auto tok = Load(j);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(EncodeOrDie(*tok, "abc"), (std::vector<int32_t>{1, 6}));
  // Without added tokens, "<|endoftext|>" is the model token only when it is a whole word;
  // here its characters are not in the vocabulary and vanish.
  EXPECT_EQ(EncodeOrDie(*tok, "<|endoftext|>"), std::vector<int32_t>{});
}

TEST(TokenizerCorruptTest, TemplateProcessingAddsSpecialTokens) {
  json j = TinyTokenizer();
  j["post_processor"] = json{
      {"type", "TemplateProcessing"},
      {"single", json::array({json{{"SpecialToken", json{{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                              json{{"Sequence", json{{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array()},
      {"special_tokens",
       json{{"<|endoftext|>", json{{"id", "<|endoftext|>"},
                                   {"ids", json::array({0})},
                                   {"tokens", json::array({"<|endoftext|>"})}}}}}};
  auto tok = Load(j);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(EncodeOrDie(*tok, "abc"), (std::vector<int32_t>{0, 1, 6}));
  EXPECT_EQ(*tok->Encode("abc", /*add_special_tokens=*/false), (std::vector<int32_t>{1, 6}));

  j["post_processor"]["special_tokens"]["<|endoftext|>"]["ids"] = json::array({99});
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "post_processor adds id 99");
  j["post_processor"]["single"][1]["Sequence"]["id"] = "B";
  ExpectError(Load(j).status(), StatusCode::kDataLoss, "refers to sequence \"B\"");
}

TEST(TokenizerCorruptTest, SizeAndNestingBounds) {
  // Deep nesting is refused before parsing.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  ExpectError(Tokenizer::LoadFromJson(deep).status(), StatusCode::kDataLoss,
              "nests deeper than 64");
  // Brackets inside strings do not count.
  json j = TinyTokenizer();
  j["model"]["vocab"][std::string(500, '[')] = 9;
  EXPECT_TRUE(Load(j).ok());

  // A sparse file just over the bound is refused from its size, without reading it.
  TempFile big("{}");
  std::filesystem::resize_file(big.path(), Tokenizer::kMaxFileBytes + 1);
  const Status s = Tokenizer::LoadFromFile(big.path()).status();
  ExpectError(s, StatusCode::kResourceExhausted, "more than the limit");
  ExpectError(s, StatusCode::kResourceExhausted, big.path());

  // Ids at or past the vocabulary bound.
  json huge = TinyTokenizer();
  huge["model"]["vocab"] = json::object();
  for (int i = 0; i < 3; ++i) huge["model"]["vocab"][std::to_string(i)] = 10000000 + i;
  ExpectError(Load(huge).status(), StatusCode::kDataLoss, "outside [0, 10000000)");
}

TEST(TokenizerCorruptTest, NonUtf8InputToEncode) {
  auto tok = Load(TinyTokenizer());
  ASSERT_TRUE(tok.ok());
  const std::vector<std::pair<std::string, size_t>> bad = {
      {"\xFF", 0},                // never valid
      {"ab\xC3", 2},              // truncated 2-byte sequence
      {"a\xC0\xAF", 1},           // overlong '/'
      {"ab\xED\xA0\x80", 2},      // UTF-16 surrogate D800
      {"\xF4\x90\x80\x80", 0},    // past U+10FFFF
      {"abc\x80", 3},             // stray continuation byte
      {"<|endoftext|>\xFE", 13},  // after an added token
  };
  for (const auto& [text, offset] : bad) {
    const Status s = tok->Encode(text).status();
    ExpectError(s, StatusCode::kInvalidArgument, "not valid UTF-8");
    ExpectError(s, StatusCode::kInvalidArgument, "at byte " + std::to_string(offset));
  }
}

TEST(TokenizerCorruptTest, RandomMutationsNeverCrash) {
  const std::string base = TinyTokenizer().dump();
  std::mt19937 rng(20240601);
  const std::string alphabet = "{}[]\",:0123456789-abcÄ\\ \xFF";
  int loaded = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.erase(pos, 1 + rng() % 8);
          break;
        default:
          text.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
      }
      if (text.empty()) text = "{";
    }
    auto tok = Tokenizer::LoadFromJson(text);
    if (!tok.ok()) {
      EXPECT_FALSE(tok.status().message().empty());
      continue;
    }
    ++loaded;
    for (const char* input : {"abc", " a b c ", "<|endoftext|>x", "\xC3\xA9\xF0\x9F\x98\x80"}) {
      auto ids = tok->Encode(input);
      if (!ids.ok()) continue;
      for (const int32_t id : *ids) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, tok->vocab_size());
      }
      EXPECT_TRUE(tok->Decode(*ids).ok());
    }
  }
  // Most single edits land in strings or values and leave a loadable file.
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace mq
