#include "daemon/api_access.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"

namespace tokenmill::daemon {
namespace {

// The token of "Bearer TOKEN" (scheme case-insensitive), or "" when the
// header is missing or another scheme.
std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return {};
  std::string scheme(authorization.substr(0, kScheme.size()));
  absl::AsciiStrToLower(&scheme);
  if (scheme != kScheme) return {};
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  return token;
}

}  // namespace

ApiAccess::ApiAccess(std::string_view control_token_sha256) {
  if (control_token_sha256.size() != 64) return;
  const std::string bytes = absl::HexStringToBytes(
      absl::string_view(control_token_sha256.data(), control_token_sha256.size()));
  if (bytes.size() != 32) return;
  std::array<unsigned char, 32> hash{};
  for (size_t i = 0; i < hash.size(); ++i) hash[i] = static_cast<unsigned char>(bytes[i]);
  token_sha256_ = hash;
}

bool ApiAccess::HasAdminToken(const http::HttpRequest& request) const {
  if (!token_sha256_) return false;
  const std::string_view token = BearerToken(request.Header("authorization"));
  if (token.empty()) return false;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(token.data(), token.size(), digest, &size, EVP_sha256(), nullptr) != 1 ||
      size != token_sha256_->size()) {
    return false;
  }
  // Hashes of equal length compared in constant time: the time taken tells
  // nothing about how much of the token was right.
  return CRYPTO_memcmp(digest, token_sha256_->data(), size) == 0;
}

ApiAccess::Verdict ApiAccess::Check(const http::HttpRequest& request) const {
  switch (request.origin.role) {
    case http::Listener::Role::kLocal:
      return Verdict::kServe;
    case http::Listener::Role::kClient:
      return IsDataPath(request.path) || IsHealthPath(request.path) ? Verdict::kServe
                                                                    : Verdict::kNotFound;
    case http::Listener::Role::kControl:
      if (IsHealthPath(request.path)) return Verdict::kServe;
      if (!HasAdminToken(request)) return Verdict::kUnauthorized;
      return IsDataPath(request.path) ? Verdict::kNotFound : Verdict::kServe;
  }
  return Verdict::kNotFound;
}

bool IsDataPath(std::string_view path) {
  return path == "/v1" || path.starts_with("/v1/") || path == "/tokenize" || path == "/detokenize";
}

bool IsHealthPath(std::string_view path) { return path == "/healthz" || path == "/readyz"; }

bool ChangesControlState(const http::HttpRequest& request) {
  return request.path.starts_with("/control/") && request.method != "GET" &&
         request.method != "HEAD";
}

}  // namespace tokenmill::daemon
