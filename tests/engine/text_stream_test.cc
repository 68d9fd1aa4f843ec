// Incremental detokenization with stop strings (serve/text_stream.h) on the bundled mamba-tiny
// tokenizer (GPT-NeoX byte-level BPE, 4096 tokens: small enough that emoji and CJK characters
// are split into single-byte tokens).
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "serve/text_stream.h"
#include "test_paths.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/utf8.h"

namespace mq::serve {
namespace {

const std::string kFFFD = "\xEF\xBF\xBD";

class TextStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = Tokenizer::LoadFromFile(::mq::testing::RepoPath("models/mamba-tiny/tokenizer.json"));
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    tokenizer_ = new Tokenizer(std::move(*loaded));
    byte_id_.assign(256, -1);
    for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
      auto b = tokenizer_->DecodeBytes({id});
      if (b.ok() && b->size() == 1) byte_id_[static_cast<uint8_t>((*b)[0])] = id;
    }
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  static const Tokenizer& tok() { return *tokenizer_; }
  // The token whose bytes are exactly {b} (byte-level BPE has one for each of the 256 bytes).
  static int32_t ByteId(uint8_t b) {
    EXPECT_GE(byte_id_[b], 0) << "no single-byte token for " << int(b);
    return byte_id_[b];
  }
  static std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tok().Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }
  static std::string Decode(const std::vector<int32_t>& ids) {
    auto text = tok().Decode(ids, /*skip_special_tokens=*/true);
    EXPECT_TRUE(text.ok()) << text.status().ToString();
    return text.ok() ? *text : "";
  }

  struct Run {
    std::vector<std::string> deltas;
    bool stopped = false;
    size_t tokens_used = 0;
  };
  // Appends ids until a stop (then Finish is not called) or the end (then Finish is). Checks the
  // invariants at every step: deltas are valid UTF-8 and concatenate to text().
  static Run Feed(TextStream& s, const std::vector<int32_t>& ids) {
    Run r;
    std::string joined;
    for (const int32_t id : ids) {
      bool stopped = false;
      auto delta = s.Append(id, &stopped);
      EXPECT_TRUE(delta.ok()) << delta.status().ToString();
      if (!delta.ok()) return r;
      ++r.tokens_used;
      r.deltas.push_back(*delta);
      joined += *delta;
      EXPECT_EQ(utf8::FindInvalid(*delta), utf8::kValid) << "delta " << r.deltas.size();
      EXPECT_EQ(joined, s.text());
      if (stopped) {
        r.stopped = true;
        return r;
      }
    }
    r.deltas.push_back(s.Finish());
    joined += r.deltas.back();
    EXPECT_EQ(utf8::FindInvalid(r.deltas.back()), utf8::kValid);
    EXPECT_EQ(joined, s.text());
    return r;
  }

  static Tokenizer* tokenizer_;
  static std::vector<int32_t> byte_id_;
};
Tokenizer* TextStreamTest::tokenizer_ = nullptr;
std::vector<int32_t> TextStreamTest::byte_id_;

using Deltas = std::vector<std::string>;

TEST_F(TextStreamTest, PerTokenBytesConcatenateToTheSequenceBytes) {
  // What lets the stream decode token by token: no decoder step looks across tokens.
  const std::vector<int32_t> ids = Encode("héllo 🙂 世界, the end. Ünïcødé\n\tx");
  std::string joined;
  for (int32_t id : ids) joined += *tok().DecodeBytes({id}, true);
  EXPECT_EQ(joined, *tok().DecodeBytes(ids, true));
}

TEST_F(TextStreamTest, MultiByteCharactersSplitAcrossTokensAreHeldUntilComplete) {
  const std::vector<int32_t> ids = Encode("héllo 🙂 世界");
  // é = C3 A9, 🙂 = F0 9F 99 82, 世 = E4 B8 96, 界 = E7 95 8C: one token per byte here.
  ASSERT_EQ(ids, (std::vector<int32_t>{73, 129, 104, 593, 80, 222, 174, 255, 249, 226, 222, 162, 118, 246, 165, 245, 236}));
  TextStream s(&tok(), {});
  const Run r = Feed(s, ids);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.deltas, (Deltas{"h", "", "é", "ll", "o", " ", "", "", "", "🙂", " ", "", "", "世", "", "", "界", ""}));
  EXPECT_EQ(s.text(), "héllo 🙂 世界");
  EXPECT_EQ(s.matched_stop(), "");
}

TEST_F(TextStreamTest, StopStringSpanningThreeTokens) {
  const std::vector<int32_t> ids = Encode(" the end. More");
  ASSERT_GE(ids.size(), 4u);
  ASSERT_EQ(*tok().DecodeBytes({ids[0]}), " the");
  ASSERT_EQ(*tok().DecodeBytes({ids[1]}), " end");
  ASSERT_EQ(*tok().DecodeBytes({ids[2]}), ".");
  // Starts inside " the", ends with ".".
  TextStream s(&tok(), {"he end."});
  const Run r = Feed(s, ids);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.tokens_used, 3u);
  EXPECT_EQ(r.deltas, (Deltas{" t", "", ""}));
  EXPECT_EQ(s.text(), " t");
  EXPECT_EQ(s.matched_stop(), "he end.");
  bool stopped = false;
  EXPECT_EQ(s.Append(ids[3], &stopped).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.Finish(), "");
  EXPECT_EQ(s.text(), " t");
}

TEST_F(TextStreamTest, StopStringInsideOneToken) {
  const std::vector<int32_t> ids = Encode(" the end.");
  TextStream s(&tok(), {"nd"});
  const Run r = Feed(s, ids);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.deltas, (Deltas{" the", " e"}));
  EXPECT_EQ(s.text(), " the e");
  EXPECT_EQ(s.matched_stop(), "nd");
}

TEST_F(TextStreamTest, HeldPrefixIsReleasedWhenTheTextDiverges) {
  const std::vector<int32_t> ids = Encode(" the end. the");
  TextStream s(&tok(), {" the end!"});
  const Run r = Feed(s, ids);
  EXPECT_FALSE(r.stopped);
  // " the", " end" may begin the stop string; "." rules it out. The last " the" is released by
  // Finish.
  EXPECT_EQ(r.deltas, (Deltas{"", "", " the end.", "", " the"}));
  EXPECT_EQ(s.text(), " the end. the");
  EXPECT_EQ(s.matched_stop(), "");
}

TEST_F(TextStreamTest, OverlappingPrefixesUseTheLongestCandidate) {
  // "aaab" with stop "aab": a naive matcher that restarts after a mismatch misses it.
  const std::vector<int32_t> ids = {ByteId('a'), ByteId('a'), ByteId('a'), ByteId('b'), ByteId('c')};
  TextStream s(&tok(), {"aab"});
  const Run r = Feed(s, ids);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.deltas, (Deltas{"", "", "a", ""}));
  EXPECT_EQ(s.text(), "a");
}

TEST_F(TextStreamTest, FirstCompletedStopWinsAtEqualEndTheLongest) {
  const std::vector<int32_t> abcd = {ByteId('a'), ByteId('b'), ByteId('c'), ByteId('d')};
  {
    TextStream s(&tok(), {"abcd", "bc"});  // "bc" completes first
    EXPECT_TRUE(Feed(s, abcd).stopped);
    EXPECT_EQ(s.text(), "a");
    EXPECT_EQ(s.matched_stop(), "bc");
  }
  {
    TextStream s(&tok(), {"bc", "abc"});  // both end at "c": the longer starts earlier
    EXPECT_TRUE(Feed(s, abcd).stopped);
    EXPECT_EQ(s.text(), "");
    EXPECT_EQ(s.matched_stop(), "abc");
  }
}

TEST_F(TextStreamTest, StopStringsWithMultiByteCharacters) {
  const std::vector<int32_t> ids = Encode("héllo 🙂 世界");
  {
    TextStream s(&tok(), {"世"});
    const Run r = Feed(s, ids);
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.tokens_used, 14u);  // the third byte of 世
    EXPECT_EQ(s.text(), "héllo 🙂 ");
  }
  {
    TextStream s(&tok(), {"🙂 世!", "o 🙂"});
    const Run r = Feed(s, ids);
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.tokens_used, 10u);
    EXPECT_EQ(s.text(), "héll");
    EXPECT_EQ(s.matched_stop(), "o 🙂");
  }
}

TEST_F(TextStreamTest, FinishReplacesADanglingCharacterWithOneReplacementCharacter) {
  {
    TextStream s(&tok(), {});
    const Run r = Feed(s, {73, 129});  // "h", C3
    EXPECT_EQ(r.deltas, (Deltas{"h", "", kFFFD}));
    EXPECT_EQ(s.text(), "h" + kFFFD);
    EXPECT_EQ(s.text(), Decode({73, 129}));
  }
  {
    // Finish never stops, not even on a stop string that is the replacement character itself.
    TextStream s(&tok(), {kFFFD});
    const Run r = Feed(s, {73, 129});
    EXPECT_FALSE(r.stopped);
    EXPECT_EQ(r.deltas, (Deltas{"h", "", kFFFD}));
    EXPECT_EQ(s.matched_stop(), "");
  }
  {
    TextStream s(&tok(), {});
    const Run r = Feed(s, {174, 255, 249});  // F0 9F 99: three bytes of four
    EXPECT_EQ(r.deltas, (Deltas{"", "", "", kFFFD}));
    EXPECT_EQ(s.text(), Decode({174, 255, 249}));
  }
}

TEST_F(TextStreamTest, IllFormedBytesBecomeReplacementCharacters) {
  struct Case {
    std::vector<uint8_t> bytes;
    Deltas deltas;
  };
  const std::vector<Case> cases = {
      {{0xA9, 'x'}, {kFFFD, "x", ""}},                // stray continuation byte
      {{0xC0, 0xAF}, {kFFFD, kFFFD, ""}},             // overlong '/'
      {{0xE4, 'A'}, {"", kFFFD + "A", ""}},           // lead byte cut by ASCII
      {{0xF0, 0x9F, 'A'}, {"", "", kFFFD + "A", ""}},  // one U+FFFD for the maximal subpart F0 9F
      {{0xED, 0xA0, 0x80}, {"", kFFFD + kFFFD, kFFFD, ""}},  // a surrogate: three, as Python's
      {{0xFF}, {kFFFD, ""}},
  };
  for (const Case& c : cases) {
    std::vector<int32_t> ids;
    for (uint8_t b : c.bytes) ids.push_back(ByteId(b));
    TextStream s(&tok(), {});
    const Run r = Feed(s, ids);
    EXPECT_EQ(r.deltas, c.deltas) << "case starting " << int(c.bytes[0]);
    EXPECT_EQ(s.text(), Decode(ids));
  }
}

TEST_F(TextStreamTest, SpecialTokensAddNoText) {
  ASSERT_TRUE(tok().IsSpecialToken(0));  // <|endoftext|>
  TextStream s(&tok(), {"<|endoftext|>"});
  // Between the two bytes of é too: skipped, like Decode(skip_special_tokens=true).
  const Run r = Feed(s, {73, 0, 129, 0, 104, 1});
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.deltas, (Deltas{"h", "", "", "", "é", "", ""}));
  EXPECT_EQ(s.text(), "hé");
}

TEST_F(TextStreamTest, NegativeTokenIsAnErrorAndIdsPastTheTokenizerAddNoText) {
  TextStream s(&tok(), {"lo"});
  bool stopped = true;
  EXPECT_EQ(*s.Append(73, &stopped), "h");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(*s.Append(ByteId('l'), &stopped), "");
  // A model's embedding rows past the tokenizer (vocabularies padded to a multiple of 8, as in
  // the released Mamba checkpoints) are tokens without text, as HF decode skips them.
  EXPECT_EQ(*s.Append(tok().vocab_size(), &stopped), "");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(s.Append(-1, &stopped).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*s.Append(ByteId('o'), &stopped), "");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(s.text(), "h");
}

TEST_F(TextStreamTest, RandomStreamsMatchTheWholeDecode) {
  // Random ids (many single high bytes, so characters split and break), a stop string cut out of
  // the decoded text (or none): the stream's text is the whole decode up to the first occurrence.
  std::mt19937 rng(1234);
  int stops_hit = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      const uint32_t kind = rng() % 4;
      if (kind == 0) ids.push_back(ByteId(static_cast<uint8_t>(0x80 + rng() % 0x80)));
      else if (kind == 1) ids.push_back(static_cast<int32_t>(rng() % 4));  // specials and low ids
      else ids.push_back(static_cast<int32_t>(rng() % tok().vocab_size()));
    }
    // Valid multi-byte text too: a few whole characters.
    if (trial % 3 == 0) {
      const std::vector<int32_t> more = Encode("世界🙂é the");
      ids.insert(ids.begin() + static_cast<long>(rng() % ids.size()), more.begin(), more.end());
    }
    const std::string full = Decode(ids);
    std::vector<std::string> stops;
    if (trial % 4 != 0 && !full.empty()) {
      // A substring on character boundaries.
      std::vector<size_t> bounds;
      for (size_t p = 0; p < full.size(); p = p + utf8::SequenceLength(full, p)) bounds.push_back(p);
      bounds.push_back(full.size());
      const size_t a = rng() % (bounds.size() - 1);
      const size_t b = std::min(bounds.size() - 1, a + 1 + rng() % 4);
      stops.push_back(full.substr(bounds[a], bounds[b] - bounds[a]));
      if (trial % 2 == 0) stops.push_back("\x01never\x02");
    }
    TextStream s(&tok(), stops);
    const Run r = Feed(s, ids);
    // Finish never stops: the U+FFFD of a character cut off at the very end is no match.
    const std::string raw = *tok().DecodeBytes(ids, true);
    size_t body_end = raw.size();
    for (size_t back = 1; back <= 3 && back <= raw.size(); ++back) {
      const size_t p = raw.size() - back;
      const auto lead = static_cast<uint8_t>(raw[p]);
      size_t bad = 0;
      if (lead >= 0xC2 && lead <= 0xF4 && utf8::SequenceLength(raw, p, &bad) == 0 && p + bad == raw.size()) body_end = p;
    }
    const std::string body = utf8::RepairLossy(std::string_view(raw).substr(0, body_end));
    const size_t at = stops.empty() ? std::string::npos : body.find(stops[0]);
    ASSERT_EQ(r.stopped, at != std::string::npos)
        << "trial " << trial << " stop " << ::testing::PrintToString(stops) << " full " << ::testing::PrintToString(full)
        << " text " << ::testing::PrintToString(s.text());
    if (r.stopped) {
      ++stops_hit;
      EXPECT_EQ(s.text(), full.substr(0, at)) << "trial " << trial;
      EXPECT_EQ(s.matched_stop(), stops[0]);
    } else {
      EXPECT_EQ(s.text(), full) << "trial " << trial;
    }
  }
  EXPECT_GT(stops_hit, 200);
}

}  // namespace
}  // namespace mq::serve
