#include "daemon/rpc_limits.h"

#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "qkvshare/v1/admin.grpc.pb.h"

namespace qkvshare::daemon {
namespace {

// GetStatus blocks until released, holding its server thread.
class BlockingAdmin final : public v1::AdminService::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::Status* resp) override {
    const int now = ++in_handler_;
    int seen = max_in_handler_.load();
    while (now > seen && !max_in_handler_.compare_exchange_weak(seen, now)) {
    }
    release_.WaitForNotification();
    --in_handler_;
    resp->set_version("ok");
    return grpc::Status::OK;
  }
  void Release() { release_.Notify(); }
  int in_handler() const { return in_handler_.load(); }
  int max_in_handler() const { return max_in_handler_.load(); }

 private:
  absl::Notification release_;
  std::atomic<int> in_handler_{0};
  std::atomic<int> max_in_handler_{0};
};

TEST(RpcLimitsTest, CallsBeyondTheThreadCapAreResourceExhausted) {
  // /tmp: a Unix socket path has at most 107 bytes.
  const std::string address = absl::StrCat("unix:/tmp/qkv-rpc-limits.", ::getpid(), ".sock");
  BlockingAdmin admin;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  constexpr int kThreads = 4;  // the smallest limits.max_rpc_threads
  ApplyRpcLimits(kThreads, 1 << 20, builder);
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::AdminService::NewStub(channel);

  // Far more concurrent calls than threads: the ones past the cap are refused
  // at once while the others wait in the handler.
  constexpr int kCalls = 16;
  std::vector<grpc::StatusCode> codes(kCalls, grpc::StatusCode::UNKNOWN);
  std::atomic<int> refused{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kCalls; ++i) {
    clients.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      v1::GetStatusRequest req;
      v1::Status resp;
      codes[i] = stub->GetStatus(&ctx, req, &resp).error_code();
      if (codes[i] == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
    });
  }
  // Wait until every call is either in the handler or refused.
  const auto start = std::chrono::steady_clock::now();
  while (admin.in_handler() + refused.load() < kCalls &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(refused.load(), 0);
  EXPECT_LT(admin.max_in_handler(), kThreads);  // the pollers take threads too
  EXPECT_GT(admin.max_in_handler(), 0);
  admin.Release();
  for (std::thread& t : clients) t.join();
  int ok = 0;
  for (grpc::StatusCode c : codes) {
    EXPECT_TRUE(c == grpc::StatusCode::OK || c == grpc::StatusCode::RESOURCE_EXHAUSTED) << c;
    ok += c == grpc::StatusCode::OK;
  }
  EXPECT_EQ(ok + refused.load(), kCalls);
  // With the threads free again, a call goes through.
  grpc::ClientContext ctx;
  v1::Status resp;
  EXPECT_TRUE(stub->GetStatus(&ctx, v1::GetStatusRequest(), &resp).ok());
  EXPECT_EQ(resp.version(), "ok");
  server->Shutdown();
}

}  // namespace
}  // namespace qkvshare::daemon
