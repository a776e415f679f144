#include "daemon/tcp_auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace qkvshare::daemon {

namespace {

constexpr absl::string_view kBearer = "Bearer ";

// Reads `path` opened without following a symlink, after checking that it
// is a regular file of this user (and, if `private_file`, without
// group/other permissions). At most 1 MiB.
absl::StatusOr<std::string> ReadCheckedFile(const std::string& path, absl::string_view what,
                                            bool private_file) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(absl::StrCat(what, " ", path, " not found"));
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", what, " ", path, ": ", std::strerror(error)));
  }
  struct stat st;
  absl::Status bad;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    bad = absl::FailedPreconditionError(absl::StrCat(what, " ", path, " is not a regular file"));
  } else if (st.st_uid != ::geteuid()) {
    bad = absl::FailedPreconditionError(absl::StrCat(what, " ", path, " belongs to uid ", st.st_uid,
                                                     ", not to the daemon's uid ", ::geteuid()));
  } else if (private_file && (st.st_mode & 077) != 0) {
    bad = absl::FailedPreconditionError(absl::StrFormat(
        "%s %s has mode %04o; want 0600 or 0400 (only the service user may read it)", what, path,
        st.st_mode & 07777));
  } else if (st.st_size > (1 << 20)) {
    bad = absl::FailedPreconditionError(absl::StrCat(what, " ", path, " is over 1 MiB"));
  }
  std::string text;
  if (bad.ok()) {
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    text.resize(got);
  }
  ::close(fd);
  if (!bad.ok()) return bad;
  return text;
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadCheckedFile(path, "tcp_auth_token_file", true);
  if (!text.ok()) return text.status();
  std::string token(absl::StripTrailingAsciiWhitespace(*text));
  if (token.size() < kMinTokenBytes) {
    return absl::FailedPreconditionError(absl::StrCat("tcp_auth_token_file ", path, " holds ",
                                                      token.size(), " bytes; want at least ",
                                                      kMinTokenBytes));
  }
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tcp_auth_token_file ", path, ": the token must be one word of printable characters"));
    }
  }
  return token;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

grpc::Status BearerTokenProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext*,
                                           OutputMetadata* consumed, OutputMetadata*) {
  auto it = auth_metadata.find("authorization");
  if (it == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this TCP listener needs 'authorization: Bearer <token>' (see "
                        "tcp_auth_token_file; qkvctl: --token_file or QKVSHARE_TOKEN_FILE)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, kBearer) ||
      !ConstantTimeEquals(
          std::string_view(value.data() + kBearer.size(), value.size() - kBearer.size()), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  consumed->insert({std::string(it->first.data(), it->first.size()), std::string(value)});
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(
    const TcpSecurity& security) {
  absl::StatusOr<std::string> token = ReadTokenFile(security.token_file);
  if (!token.ok()) return token.status();
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (security.tls_cert_file.empty()) {
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  } else {
    absl::StatusOr<std::string> cert =
        ReadCheckedFile(security.tls_cert_file, "tcp_tls_cert_file", false);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadCheckedFile(security.tls_key_file, "tcp_tls_key_file", true);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(options);
  }
  creds->SetAuthMetadataProcessor(std::make_shared<BearerTokenProcessor>(*std::move(token)));
  return creds;
}

}  // namespace qkvshare::daemon
