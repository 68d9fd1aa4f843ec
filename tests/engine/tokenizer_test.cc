// Byte-level BPE tokenizer against the mamba-tiny fixture: the evaluation stream's exact token
// count and reference windows, token ids recorded from Hugging Face `tokenizers`, hand-derived
// cases, and round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/safetensors.h"
#include "test_paths.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"

namespace mq {
namespace {

using ::mq::testing::Exists;
using ::mq::testing::RepoPath;
using ::mq::testing::SharedFixture;

// The in-repo copy first; ../shared/fixtures holds the same file.
std::string FirstExisting(const std::string& repo_rel, const std::string& shared_rel) {
  if (Exists(RepoPath(repo_rel))) return RepoPath(repo_rel);
  if (Exists(SharedFixture(shared_rel))) return SharedFixture(shared_rel);
  return "";
}

std::string TokenizerPath() {
  return FirstExisting("models/mamba-tiny/tokenizer.json", "models/mamba-tiny/tokenizer.json");
}
std::string EvalTextPath() { return FirstExisting("models/text/eval.txt", "text/eval.txt"); }
std::string ReferencePath() {
  return FirstExisting("tests/data/mamba-tiny-reference.safetensors",
                       "models/mamba-tiny-reference.safetensors");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

#define MQ_REQUIRE_FILE(path, what)                                                        \
  if ((path).empty())                                                                      \
  GTEST_SKIP() << what << " not found in the repository (models/, tests/data/) nor under " \
               << MQ_SHARED_FIXTURES_DIR

class FixtureTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = TokenizerPath();
    if (path.empty()) return;
    auto loaded = Tokenizer::LoadFromFile(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    tokenizer_ = new Tokenizer(std::move(loaded).value());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "mamba-tiny tokenizer.json not found in models/ nor under "
                   << MQ_SHARED_FIXTURES_DIR;
    }
  }

  const Tokenizer& tok() const { return *tokenizer_; }

  std::vector<int32_t> Encode(const std::string& text) const {
    auto ids = tok().Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  // Expected ids written as vocabulary strings, so a case reads as the tokenization it claims.
  std::vector<int32_t> Ids(const std::vector<std::string>& tokens) const {
    std::vector<int32_t> ids;
    for (const std::string& token : tokens) {
      const auto id = tok().TokenToId(token);
      EXPECT_TRUE(id.has_value()) << "token \"" << token << "\" is not in the vocabulary";
      ids.push_back(id.value_or(-1));
    }
    return ids;
  }

  static Tokenizer* tokenizer_;
};
Tokenizer* FixtureTokenizerTest::tokenizer_ = nullptr;

// Tensor `name` of the reference file as rows of ids.
std::vector<std::vector<int32_t>> ReferenceRows(const SafetensorsFile& file,
                                                const std::string& name) {
  const TensorView* view = file.Find(name);
  EXPECT_NE(view, nullptr) << name << " missing from " << file.path();
  if (view == nullptr) return {};
  EXPECT_EQ(view->shape.size(), 2u);
  auto values = ToInt64(*view);
  EXPECT_TRUE(values.ok()) << values.status().ToString();
  if (!values.ok() || view->shape.size() != 2) return {};
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(view->shape[0]));
  const auto cols = static_cast<size_t>(view->shape[1]);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < cols; ++c)
      rows[r].push_back(static_cast<int32_t>((*values)[r * cols + c]));
  }
  return rows;
}

// Offset of `needle` in `haystack`, or -1.
int64_t FindRun(const std::vector<int32_t>& haystack, const std::vector<int32_t>& needle) {
  const auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end());
  return it == haystack.end() ? -1 : it - haystack.begin();
}

TEST_F(FixtureTokenizerTest, VocabularyAndSpecialTokens) {
  EXPECT_EQ(tok().vocab_size(), 4096);
  EXPECT_EQ(tok().TokenToId("<|endoftext|>"), 0);
  EXPECT_EQ(tok().TokenToId("<|padding|>"), 1);
  EXPECT_TRUE(tok().IsSpecialToken(0));
  EXPECT_TRUE(tok().IsSpecialToken(1));
  EXPECT_FALSE(tok().IsSpecialToken(270));
  EXPECT_EQ(tok().IdToToken(270), "Ġthe");
  EXPECT_EQ(tok().IdToToken(4095).has_value(), true);
  EXPECT_EQ(tok().IdToToken(4096), std::nullopt);
  EXPECT_EQ(tok().TokenToId("no such token"), std::nullopt);
}

TEST_F(FixtureTokenizerTest, EvalStreamHas56493TokensAndContainsReferenceWindows) {
  const std::string eval_path = EvalTextPath();
  const std::string reference_path = ReferencePath();
  MQ_REQUIRE_FILE(eval_path, "eval.txt");
  MQ_REQUIRE_FILE(reference_path, "mamba-tiny-reference.safetensors");
  const std::string text = ReadFile(eval_path);
  ASSERT_EQ(text.size(), 158719u);

  const auto start = std::chrono::steady_clock::now();
  auto stream = TokenizeDocuments(tok(), text, /*eos_id=*/0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ(stream->size(), 56493u);
  // The fixture README's protocol: 220 windows of 256 with s + 256 < total.
  EXPECT_EQ((stream->size() - 1) / 256, 220u);
  EXPECT_EQ(SplitDocuments(text).size(), 1005u);
  EXPECT_EQ(std::count(stream->begin(), stream->end(), 0), 1005);
  EXPECT_EQ(stream->back(), 0);
  // Generous bound (sanitizers, loaded CI machine); typically ~10 ms.
  EXPECT_LT(seconds, 2.0);
  RecordProperty("eval_tokenize_seconds", std::to_string(seconds));

  auto reference = SafetensorsFile::Open(reference_path);
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();
  const auto windows = ReferenceRows(**reference, "input_ids");
  ASSERT_EQ(windows.size(), 4u);
  for (size_t i = 0; i < windows.size(); ++i) {
    ASSERT_EQ(windows[i].size(), 64u);
    EXPECT_GE(FindRun(*stream, windows[i]), 0) << "input_ids row " << i << " not in the stream";
  }
  const auto prompts = ReferenceRows(**reference, "generate_prompt_ids");
  ASSERT_EQ(prompts.size(), 2u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(prompts[i].size(), 16u);
    EXPECT_GE(FindRun(*stream, prompts[i]), 0)
        << "generate_prompt_ids row " << i << " not in the stream";
  }
}

TEST_F(FixtureTokenizerTest, EvalTextRoundTrips) {
  const std::string eval_path = EvalTextPath();
  MQ_REQUIRE_FILE(eval_path, "eval.txt");
  const std::string text = ReadFile(eval_path);
  auto ids = tok().Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  auto decoded = tok().Decode(*ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(*decoded == text) << "eval.txt does not survive Decode(Encode(text))";

  // The document stream decodes to the documents joined by eos.
  auto stream = TokenizeDocuments(tok(), text, 0);
  ASSERT_TRUE(stream.ok());
  std::string joined;
  for (const std::string_view piece : SplitDocuments(text)) {
    joined.append(piece);
    joined.append("<|endoftext|>");
  }
  auto stream_text = tok().Decode(*stream);
  ASSERT_TRUE(stream_text.ok());
  EXPECT_TRUE(*stream_text == joined);
  auto without_eos = tok().Decode(*stream, /*skip_special_tokens=*/true);
  ASSERT_TRUE(without_eos.ok());
  EXPECT_EQ(without_eos->size(), text.size() - 2 * (SplitDocuments(text).size() - 1));
}

TEST_F(FixtureTokenizerTest, HandDerivedCases) {
  // Merges "Ġ t" (rank 1), "h e" (rank 5), "Ġt he" (rank 12) build the single token "Ġthe".
  EXPECT_EQ(Encode(" the"), Ids({"Ġthe"}));
  EXPECT_EQ(Encode(" the"), (std::vector<int32_t>{270}));
  // Without the leading space the word is a different token (add_prefix_space is false).
  EXPECT_EQ(Encode("the"), Ids({"the"}));
  EXPECT_EQ(Encode("Hello world"), (std::vector<int32_t>{41, 443, 80, 1704}));
  EXPECT_EQ(Encode("Hello world"), Ids({"H", "ell", "o", "Ġworld"}));

  // \s+(?!\S) leaves the last space of a run for the next word: "a  b" is "a", " ", " b".
  EXPECT_EQ(Encode("a  b"), Ids({"a", "Ġ", "Ġb"}));
  // A run that reaches the end of the text is taken whole (then merged by "Ġ Ġ").
  EXPECT_EQ(Encode("hi  "), Ids({"h", "i", "ĠĠ"}));
  // Before "x", "\t\t" splits into "\t" (\s+(?!\S)) and "\t" (the bare \s+ fallback).
  EXPECT_EQ(Encode("\t\tx"), Ids({"ĉ", "ĉ", "x"}));
  // Same for newlines; there is no "Ċ Ċ" merge in this vocabulary.
  EXPECT_EQ(Encode("a\n\nb"), Ids({"a", "Ċ", "Ċ", "b"}));
  EXPECT_EQ(Encode("a \n b"), Ids({"a", "Ġ", "Ċ", "Ġb"}));

  // Contractions are their own words; only lower-case suffixes are contractions.
  EXPECT_EQ(Encode("I'm"), Ids({"I", "'m"}));
  EXPECT_EQ(Encode("it's"), Ids({"it", "'s"}));
  EXPECT_EQ(Encode("don't"), Ids({"d", "on", "'t"}));  // "o n" merges, "d on" does not
  EXPECT_EQ(Encode("IT'S"), Ids({"I", "T", "'", "S"}));
  EXPECT_EQ(Encode("you're we've they'll I'd"),
            Ids({"y", "ou", "'re", "Ġwe", "'ve", "Ġthey", "'ll", "ĠI", "'d"}));

  // Digits form one word with an optional leading space; this vocabulary merges "Ġ 1" only.
  EXPECT_EQ(Encode(" 12345"), Ids({"Ġ1", "2", "3", "4", "5"}));
  EXPECT_EQ(Encode("3.14"), Ids({"3", ".", "1", "4"}));
  EXPECT_EQ(Encode("x1"), Ids({"x", "1"}));  // letters and digits are separate words
  EXPECT_EQ(Encode("hello, world!"), Ids({"he", "ll", "o", ",", "Ġworld", "!"}));

  // Non-ASCII: each UTF-8 byte is one byte-level character before merging.
  EXPECT_EQ(Encode("中"), Ids({"ä", "¸", "Ń"}));      // E4 B8 AD
  EXPECT_EQ(Encode("😀"), Ids({"ð", "Ł", "ĺ", "Ģ"}));  // F0 9F 98 80

  EXPECT_EQ(Encode(""), std::vector<int32_t>{});
}

TEST_F(FixtureTokenizerTest, AddedTokensAreMatchedBeforeSplitting) {
  EXPECT_EQ(Encode("<|endoftext|>"), (std::vector<int32_t>{0}));
  EXPECT_EQ(Encode("A<|endoftext|>B"), Ids({"A", "<|endoftext|>", "B"}));
  EXPECT_EQ(Encode("<|endoftext|> <|padding|>"), (std::vector<int32_t>{0, 222, 1}));
  EXPECT_EQ(Encode("<|endoftext|>hi<|padding|>"), (std::vector<int32_t>{0, 73, 74, 1}));
  // A near miss is ordinary text.
  const auto near_miss = Encode("<|endoftext|");
  EXPECT_EQ(std::count(near_miss.begin(), near_miss.end(), 0), 0);
  EXPECT_GT(near_miss.size(), 1u);
  // The text after an added token is normalized on its own: the combining acute does not
  // compose with anything and stays two bytes (CC 81).
  EXPECT_EQ(Encode("<|endoftext|>\xCC\x81"), Ids({"<|endoftext|>", "Ì", "ģ"}));
}

TEST_F(FixtureTokenizerTest, NfcNormalization) {
  // "e" + U+0301 and the precomposed U+00E9 encode identically.
  EXPECT_EQ(Encode("cafe\xCC\x81"), Encode("caf\xC3\xA9"));
  auto decoded = tok().Decode(Encode("cafe\xCC\x81"));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, "caf\xC3\xA9");
  // U+212B ANGSTROM SIGN normalizes to U+00C5.
  EXPECT_EQ(Encode("\xE2\x84\xAB"), Encode("\xC3\x85"));
}

TEST_F(FixtureTokenizerTest, RoundTrips) {
  const std::vector<std::string> texts = {
      "Hello, world! How's it going?",
      "emoji: 😀👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
      "CJK: 中文测试, 日本語のテキスト, 한국어 문장",
      "controls: \x01\x02\x1f\x7f \t tab\r\ncrlf\x0b\x0c end",
      std::string("nul\0inside", 10),
      "text with <|endoftext|> inside and <|padding|> too",
      "   leading and trailing   \n\n\n",
      "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ œ∑´®†¥¨ˆøπ“‘",
      "\u180e\u2028\u00a0\u3000 mixed spaces",
      "numbers: ١٢٣ ² ½ Ⅻ 3.14159 1,000,000",
  };
  for (const std::string& text : texts) {
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    auto decoded = tok().Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(*decoded, text);
  }
  auto ids = tok().Encode("before<|endoftext|>after");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 0), 1);
  // Combining characters come back in NFC form.
  auto combining = tok().Encode("A\xCC\x8A and o\xCC\x88");
  ASSERT_TRUE(combining.ok());
  EXPECT_EQ(*tok().Decode(*combining), "\xC3\x85 and \xC3\xB6");
}

TEST_F(FixtureTokenizerTest, Decoding) {
  auto skipped = tok().Decode({0, 73, 74, 1}, /*skip_special_tokens=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "hi");
  EXPECT_EQ(*tok().Decode({0, 73, 74, 1}), "<|endoftext|>hi<|padding|>");
  EXPECT_EQ(*tok().Decode({}), "");

  // A character cut between tokens: raw bytes for streaming, U+FFFD for text.
  const auto emoji = Encode("😀");
  ASSERT_EQ(emoji.size(), 4u);
  const std::vector<int32_t> first_half(emoji.begin(), emoji.begin() + 2);
  EXPECT_EQ(*tok().DecodeBytes(first_half), "\xF0\x9F");
  EXPECT_EQ(*tok().Decode(first_half), "\xEF\xBF\xBD");  // one U+FFFD for the maximal subpart
  EXPECT_EQ(*tok().Decode({emoji[1], 66}),
            "\xEF\xBF\xBD"
            "a");  // 66 is "a"

  auto too_big = tok().Decode({66, 4096});
  EXPECT_EQ(too_big.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(too_big.status().message().find("id 4096 at position 1"), std::string::npos)
      << too_big.status().message();
  EXPECT_EQ(tok().Decode({-1}).status().code(), StatusCode::kOutOfRange);
}

TEST_F(FixtureTokenizerTest, ConcurrentEncodingMatchesSequential) {
  const std::string eval_path = EvalTextPath();
  MQ_REQUIRE_FILE(eval_path, "eval.txt");
  const std::string text = ReadFile(eval_path);
  const auto expected = TokenizeDocuments(tok(), text, 0);
  ASSERT_TRUE(expected.ok());
  // A fresh tokenizer, so the threads also race to fill its word cache.
  auto fresh = Tokenizer::LoadFromFile(TokenizerPath());
  ASSERT_TRUE(fresh.ok());
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      auto ids = TokenizeDocuments(*fresh, text, 0);
      if (ids.ok()) results[t] = std::move(ids).value();
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_TRUE(result == *expected);
}

TEST(DocumentStreamTest, SplitsLikePythonStrSplit) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(SplitDocuments(""), V({""}));
  EXPECT_EQ(SplitDocuments("a"), V({"a"}));
  EXPECT_EQ(SplitDocuments("a\n\nb"), V({"a", "b"}));
  EXPECT_EQ(SplitDocuments("a\n\n\nb"), V({"a", "\nb"}));
  EXPECT_EQ(SplitDocuments("a\n\n\n\nb"), V({"a", "", "b"}));
  EXPECT_EQ(SplitDocuments("\n\na\n\n"), V({"", "a", ""}));
  EXPECT_EQ(SplitDocuments("end\n"), V({"end\n"}));
}

TEST_F(FixtureTokenizerTest, DocumentStreamAppendsEosAndChecksIt) {
  auto ids = TokenizeDocuments(tok(), "a\n\n\n\nb", 0);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{66, 0, 0, 67, 0}));
  EXPECT_EQ(TokenizeDocuments(tok(), "a", 4096).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TokenizeDocuments(tok(), "a", -1).status().code(), StatusCode::kInvalidArgument);
  auto bad = TokenizeDocuments(tok(), "fine\n\nbad \xFF", 0);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("document 1"), std::string::npos) << bad.status().message();
}

// Ids recorded from Hugging Face `tokenizers` for the fixture and for synthetic tokenizer.json
// files that exercise what the fixture does not: string-form merges, add_prefix_space, Sequence
// wrappers, lstrip/rstrip/single_word/normalized added tokens, TemplateProcessing, unk_token
// with fuse_unk, continuing_subword_prefix, end_of_word_suffix, ignore_merges, byte_fallback,
// and characters missing from the vocabulary.
TEST(HuggingFaceReferenceTest, EncodeAndDecodeMatchRecordedIds) {
  const std::string cases_path = RepoPath("tests/data/tokenizer/hf_reference_cases.json");
  ASSERT_TRUE(Exists(cases_path)) << cases_path;
  const nlohmann::json recorded = nlohmann::json::parse(ReadFile(cases_path));
  size_t checked = 0;
  for (const auto& suite : recorded.at("suites")) {
    const std::string path = RepoPath(suite.at("tokenizer").get<std::string>());
    auto tokenizer = Tokenizer::LoadFromFile(path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    for (const auto& c : suite.at("cases")) {
      const std::string text = c.at("text").get<std::string>();
      const auto expected = c.at("ids").get<std::vector<int32_t>>();
      auto ids = tokenizer->Encode(text);
      ASSERT_TRUE(ids.ok()) << path << " " << ids.status().ToString();
      EXPECT_EQ(*ids, expected) << path << ": " << c.at("text").dump();
      const std::string decoded = c.value("decoded", text);
      EXPECT_EQ(*tokenizer->Decode(*ids), decoded) << path << ": " << c.at("text").dump();
      EXPECT_EQ(*tokenizer->Decode(*ids, true), c.value("decoded_skip_special", decoded))
          << path << ": " << c.at("text").dump();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 875u);
}

}  // namespace
}  // namespace mq
