// File: daemon/tcp_auth.h
// -----------------------------------------------------------------------------
// Authentication of the daemon's optional TCP listener. On the Unix socket,
// membership of the socket's group is the authorization; a TCP port is open
// to every local user (and, with allow_remote, to a network), so every call
// on it must carry the bearer token from `tcp_auth_token_file`:
//
//   authorization: Bearer <token>
//
// checked in constant time by a gRPC AuthMetadataProcessor attached to the
// TCP port's credentials: LocalServerCredentials(LOCAL_TCP) (loopback peers
// only) or, with a certificate and key, SslServerCredentials (TLS). Calls
// without the token, or with another one, end UNAUTHENTICATED before any
// service code runs. The Unix socket is not affected.
//
// Thread safety: the processor is immutable after construction.
#ifndef QKVSHARE_DAEMON_TCP_AUTH_H_
#define QKVSHARE_DAEMON_TCP_AUTH_H_

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace qkvshare::daemon {

// Shortest accepted token (bytes, after trailing whitespace is trimmed).
inline constexpr size_t kMinTokenBytes = 16;

// Reads a token file: a regular file (not a symlink) owned by this process's
// user with no group/other permissions, holding one token of at least
// kMinTokenBytes printable bytes (a trailing newline is trimmed).
// Errors: NotFound; FailedPrecondition naming the path and what is wrong
// (owner, mode, length).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// a == b, in time that depends on the lengths only.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Requires "authorization: Bearer <token>" on every call.
class BearerTokenProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit BearerTokenProcessor(std::string token) : token_(std::move(token)) {}
  bool IsBlocking() const override { return false; }  // a string compare
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::string token_;
};

struct TcpSecurity {
  std::string token_file;     // required
  std::string tls_cert_file;  // PEM; empty: LOCAL_TCP (loopback only)
  std::string tls_key_file;
};

// Credentials for the TCP port with the token processor attached.
// Errors: those of ReadTokenFile; NotFound / FailedPrecondition for the TLS
// files (the key must not be group/other readable).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(
    const TcpSecurity& security);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_TCP_AUTH_H_
