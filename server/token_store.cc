#include "token_store.h"

#include <sys/stat.h>

#include <cerrno>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "file_util.h"

namespace mq::server {
namespace {

constexpr absl::string_view kDigestPrefix = "sha256:";

std::array<uint8_t, 32> Digest(absl::string_view data) {
  std::array<uint8_t, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data());
  return out;
}

std::string Hex(const uint8_t* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[data[i] >> 4]);
    s.push_back(kHex[data[i] & 15]);
  }
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxTokenNameBytes) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<TokenEntry>> ParseTokensFile(absl::string_view content) {
  if (content.size() > kMaxTokensFileBytes) return absl::InvalidArgumentError("tokens file is over 1 MiB");
  std::vector<TokenEntry> out;
  std::set<std::array<uint8_t, 32>> digests;
  std::set<std::string> names;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("tokens file line ", line_no, ": ", why));
    };
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 3) return fail("want \"sha256:<64 hex> <role> <name>\"");
    absl::string_view digest = fields[0];
    if (digest.substr(0, kDigestPrefix.size()) != kDigestPrefix || digest.size() != kDigestPrefix.size() + 64) {
      return fail("the digest must be sha256:<64 lower-case hex>");
    }
    TokenEntry e;
    for (size_t i = 0; i < 32; ++i) {
      int hi = HexValue(digest[kDigestPrefix.size() + 2 * i]), lo = HexValue(digest[kDigestPrefix.size() + 2 * i + 1]);
      if (hi < 0 || lo < 0) return fail("the digest must be sha256:<64 lower-case hex>");
      e.digest[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    auto role = ParseRole(fields[1]);
    if (!role.has_value()) return fail("role must be admin, operator, inference or worker");
    e.role = *role;
    if (!ValidName(fields[2])) return fail("name must be 1..64 of [A-Za-z0-9._-]");
    e.name = std::string(fields[2]);
    if (!digests.insert(e.digest).second) return fail("the same token is listed twice");
    if (!names.insert(e.name).second) return fail(absl::StrCat("the name ", e.name, " is used twice"));
    if (out.size() == kMaxTokens) return fail("more than 10000 tokens");
    out.push_back(std::move(e));
  }
  return out;
}

TokenEntry EntryForSecret(absl::string_view secret, Role role, std::string name) {
  TokenEntry e;
  e.digest = Digest(secret);
  e.role = role;
  e.name = std::move(name);
  return e;
}

absl::StatusOr<std::string> MintToken() {
  uint8_t bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError("RAND_bytes failed");
  return absl::StrCat("mqt_", Hex(bytes, sizeof(bytes)));
}

std::string TokensFileLine(absl::string_view token, Role role, absl::string_view name) {
  auto d = Digest(token);
  return absl::StrCat(kDigestPrefix, Hex(d.data(), d.size()), " ", RoleName(role), " ", name);
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Create(std::string path, std::vector<TokenEntry> fixed) {
  std::unique_ptr<TokenStore> store(new TokenStore(std::move(path), std::move(fixed)));
  absl::Status s = store->Reload();
  if (!s.ok()) return s;
  return store;
}

absl::StatusOr<std::shared_ptr<const std::vector<TokenEntry>>> TokenStore::Load() const {
  std::vector<TokenEntry> all = fixed_;
  if (!path_.empty()) {
    // Whoever can write the file can add an admin token: a file writable by group or others is
    // refused (at start, and on reload, where the set in use stays).
    struct stat st;
    if (::stat(path_.c_str(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path_));
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("tokens file ", path_, " is writable by its group or others (mode ",
                                                        absl::StrFormat("%04o", st.st_mode & 0777), "): anyone who can write it can ",
                                                        "add a token; chmod go-w it"));
    }
    auto content = ReadFileToString(path_, kMaxTokensFileBytes);
    if (!content.ok()) return content.status();
    auto parsed = ParseTokensFile(*content);
    if (!parsed.ok()) return parsed.status();
    // An empty file is more likely a truncated one (an editor mid-save, a bad secret render) than
    // a wish to refuse every client: refused, so a reload keeps the set in use.
    if (parsed->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tokens file ", path_, " holds no token (every client would be refused)"));
    }
    for (TokenEntry& e : *parsed) {
      for (const TokenEntry& f : fixed_) {
        if (f.digest == e.digest) return absl::InvalidArgumentError(absl::StrCat("token ", e.name, " is also given by a flag"));
      }
      all.push_back(std::move(e));
    }
  }
  return std::make_shared<const std::vector<TokenEntry>>(std::move(all));
}

absl::Status TokenStore::Reload() {
  auto loaded = Load();
  if (!loaded.ok()) return loaded.status();
  absl::MutexLock lock(&mu_);
  current_ = *std::move(loaded);
  return absl::OkStatus();
}

std::optional<TokenIdentity> TokenStore::Find(absl::string_view token) const {
  if (token.empty() || token.size() > kMaxBearerTokenBytes) return std::nullopt;
  std::shared_ptr<const std::vector<TokenEntry>> set;
  {
    absl::MutexLock lock(&mu_);
    set = current_;
  }
  const auto digest = Digest(token);
  // Every entry compared in constant time, so timing says nothing about which digest is close.
  const TokenEntry* found = nullptr;
  for (const TokenEntry& e : *set) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) found = &e;
  }
  if (found == nullptr) return std::nullopt;
  return TokenIdentity{found->role, found->name};
}

size_t TokenStore::size() const {
  absl::MutexLock lock(&mu_);
  return current_->size();
}

}  // namespace mq::server
