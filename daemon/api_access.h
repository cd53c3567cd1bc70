// ApiAccess: which listener reaches which API.
//
// - The unix socket (Listener::Role::kLocal) serves every API; who may use it
//   is the socket file's owner, group and mode.
// - A client port ([api] tcp, kClient) serves the OpenAI API (/v1, /v1/...,
//   and the tokenizer's /tokenize and /detokenize, which need a tenant's key
//   as /v1 does) and the health probes (/healthz, /readyz) only. Every other path, the
//   whole control API included, is 404 there, as if it did not exist.
// - A control port ([api] control_tcp, kControl) serves the control API to
//   requests carrying "Authorization: Bearer TOKEN" whose SHA-256 is the
//   configured hash (compared in constant time); without it every path but
//   the health probes is 401. The OpenAI API is not served there (404 with
//   the token): tenants' keys and the admin token never share a port.
#pragma once

#include <array>
#include <optional>
#include <string_view>

#include "daemon/http/http_server.h"

namespace tokenmill::daemon {

class ApiAccess {
 public:
  enum class Verdict { kServe, kNotFound, kUnauthorized };

  // control_token_sha256: the admin token's SHA-256 as 64 lowercase hex
  // characters (validated by the config), or "" when no token is set: then
  // nothing on a control port gets past 401.
  explicit ApiAccess(std::string_view control_token_sha256);

  // What to do with a request, from its listener's role, path and headers.
  // Thread-safe (const).
  Verdict Check(const http::HttpRequest& request) const;

 private:
  bool HasAdminToken(const http::HttpRequest& request) const;

  std::optional<std::array<unsigned char, 32>> token_sha256_;
};

// /v1, /v1/..., /tokenize and /detokenize: the OpenAI-compatible data API.
bool IsDataPath(std::string_view path);
// /healthz and /readyz.
bool IsHealthPath(std::string_view path);
// A control API request that may change the node's state (any method but
// GET and HEAD on /control/...): the daemon logs who sent it.
bool ChangesControlState(const http::HttpRequest& request);

}  // namespace tokenmill::daemon
