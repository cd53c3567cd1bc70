#include "daemon/http/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::http {

namespace {

constexpr int kBacklog = 511;

// True when a server accepts (or would accept, with a full backlog) on path.
bool UnixSocketAnswers(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  bool answers = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
  close(fd);
  return answers;
}

}  // namespace

absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(std::string_view address_view) {
  // Abseil here has its own string_view type; work on a std::string.
  const std::string address(address_view);
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\" must look like [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\" must look like host:port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\": an IPv6 host needs brackets, [::1]:port"));
    }
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("address \"", address, "\" has no host"));
  }
  uint32_t number = 0;
  bool digits = !port.empty() && port.size() <= 5 &&
                std::all_of(port.begin(), port.end(), absl::ascii_isdigit);
  if (!digits || !absl::SimpleAtoi(port, &number) || number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" has no valid port (0-65535)"));
  }
  return std::make_pair(std::string(host), static_cast<uint16_t>(number));
}

ListenSocket::ListenSocket(uv_loop_t* loop, AcceptFn on_accept)
    : loop_(loop), on_accept_(std::move(on_accept)) {}

absl::Status ListenSocket::Bind(const Listener& spec) {
  return spec.kind == Listener::Kind::kUnix ? BindUnix(spec) : BindTcp(spec);
}

absl::Status ListenSocket::BindUnix(const Listener& spec) {
  const std::string& path = spec.address;
  // libuv 1.44 silently truncates long paths; refuse instead.
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path \"", path, "\" must be 1..",
                                                   sizeof(sockaddr_un::sun_path) - 1, " bytes"));
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; not replacing it"));
    }
    if (UnixSocketAnswers(path)) {
      return absl::FailedPreconditionError(absl::StrCat("another server is listening on ", path));
    }
    // Left behind by a server that died: nobody answers, so it is stale.
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return absl::UnavailableError(
          absl::StrCat("remove stale socket ", path, ": ", std::strerror(errno)));
    }
  }
  uv_pipe_init(loop_, &handle_.pipe, 0);
  handle_.handle.data = this;
  open_ = true;
  int rc = uv_pipe_bind(&handle_.pipe, path.c_str());
  if (rc == 0) rc = uv_listen(&handle_.stream, kBacklog, &ListenSocket::OnConnection);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("listen on unix socket ", path, ": ", uv_strerror(rc)));
  }
  if (lstat(path.c_str(), &st) == 0) {
    socket_path_ = path;
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  if (chmod(path.c_str(), static_cast<mode_t>(spec.unix_mode)) != 0) {
    return absl::UnavailableError(absl::StrCat("chmod ", path, " to ",
                                               absl::StrCat(absl::Hex(spec.unix_mode)), ": ",
                                               std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ListenSocket::BindTcp(const Listener& spec) {
  absl::StatusOr<std::pair<std::string, uint16_t>> host_port = SplitHostPort(spec.address);
  if (!host_port.ok()) return host_port.status();
  std::string host = host_port->first;
  if (absl::AsciiStrToLower(host) == "localhost") host = "127.0.0.1";
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), host_port->second, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), host_port->second, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", spec.address, "\": host must be an IP literal or localhost"));
  }
  uv_tcp_init(loop_, &handle_.tcp);
  handle_.handle.data = this;
  open_ = true;
  // libuv reports EADDRINUSE from listen rather than bind on unix.
  int rc = uv_tcp_bind(&handle_.tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(&handle_.stream, kBacklog, &ListenSocket::OnConnection);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("listen on ", spec.address, ": ", uv_strerror(rc)));
  }
  sockaddr_storage bound{};
  int length = sizeof(bound);
  rc = uv_tcp_getsockname(&handle_.tcp, reinterpret_cast<sockaddr*>(&bound), &length);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("getsockname for ", spec.address, ": ", uv_strerror(rc)));
  }
  port_ = bound.ss_family == AF_INET6
              ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
              : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  return absl::OkStatus();
}

void ListenSocket::Close() {
  if (!open_) return;
  open_ = false;
  uv_close(&handle_.handle, nullptr);
}

void ListenSocket::RemoveSocketFile() {
  if (socket_path_.empty()) return;
  struct stat st {};
  // Another server may have replaced the file since; leave that one alone.
  if (lstat(socket_path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_) {
    unlink(socket_path_.c_str());
  }
  socket_path_.clear();
}

void ListenSocket::OnConnection(uv_stream_t* server, int status) {
  if (status < 0) return;  // e.g. EMFILE; libuv keeps listening
  auto* self = static_cast<ListenSocket*>(server->data);
  self->on_accept_(server);
}

}  // namespace tokenmill::http
