// mq-engine tokenize: text to ids (--text/--file) or ids to text (--decode).
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_tokenizer.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {
namespace {

StatusOr<std::vector<int32_t>> ParseIds(std::string s) {
  for (char& c : s)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream in(s);
  std::vector<int32_t> ids;
  std::string tok;
  while (in >> tok) {
    try {
      size_t used = 0;
      const long long v = std::stoll(tok, &used);
      if (used != tok.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument("bad");
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return InvalidArgumentError("--decode: \"" + tok + "\" is not a token id");
    }
  }
  return ids;
}

}  // namespace

int RunTokenizeCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"}, {"model", "text", "file", "decode"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  if (!model_dir.ok()) return ReportError(model_dir.status());
  const int sources = cl->Has("text") + cl->Has("file") + cl->Has("decode");
  if (sources != 1) return ReportError(InvalidArgumentError("give exactly one of --text, --file or --decode"));
  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());

  if (cl->Has("decode")) {
    auto ids = ParseIds(*cl->Get("decode"));
    if (!ids.ok()) return ReportError(ids.status());
    auto text = tokenizer->Decode(*ids);
    if (!text.ok()) return ReportError(text.status());
    if (cl->Has("json")) {
      std::printf("%s\n", nlohmann::json({{"ids", *ids}, {"text", *text}}).dump().c_str());
    } else {
      // The text's bytes as they are: it may hold NUL (a token can decode to one).
      std::fwrite(text->data(), 1, text->size(), stdout);
      std::fputc('\n', stdout);
    }
    return 0;
  }
  std::string text;
  if (cl->Has("file")) {
    auto t = ReadTextFile(*cl->Get("file"));
    if (!t.ok()) return ReportError(t.status());
    text = std::move(*t);
  } else {
    text = *cl->Get("text");
  }
  auto ids = tokenizer->Encode(text);
  if (!ids.ok()) return ReportError(ids.status());
  if (cl->Has("json")) {
    std::printf("%s\n", nlohmann::json({{"ids", *ids}, {"count", ids->size()}}).dump().c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids->size(); ++i) line += (i ? " " : "") + std::to_string((*ids)[i]);
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

}  // namespace mq::tools
