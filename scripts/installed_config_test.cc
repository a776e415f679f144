// scripts/install.sh rewrites configs/daemon.yaml for the installed layout;
// this loads the installed daemon.yaml and workflows with the daemon's own
// parser (daemon/config) and checks the model directory they name.
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/config/config.h"
#include "gtest/gtest.h"

namespace qkvshare {
namespace {

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

TEST(InstalledConfigTest, LoadsWithTheDaemonParser) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string bins = absl::StrCat(tmp, "/bins");
  const std::string prefix = absl::StrCat(tmp, "/prefix");
  ASSERT_EQ(mkdir(bins.c_str(), 0755), 0);
  {
    std::ofstream fake(bins + "/qkvshared");
    fake << "#!/bin/sh\nexit 0\n";
  }
  ASSERT_EQ(chmod((bins + "/qkvshared").c_str(), 0755), 0);
  ASSERT_EQ(std::system(absl::StrCat("cp qkvctl/qkvctl ", bins, "/qkvctl").c_str()), 0);
  ASSERT_EQ(std::system(absl::StrCat("scripts/install.sh --prefix ", prefix, " --binaries ", bins,
                                     " >", tmp, "/install.log 2>&1")
                            .c_str()),
            0);

  absl::StatusOr<daemon::DaemonConfig> cfg =
      daemon::LoadDaemonConfig(prefix + "/etc/qkvshare/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->listen, "unix:///run/qkvshare/qkvshared.sock");
  EXPECT_EQ(cfg->workflows_dir, prefix + "/etc/qkvshare/workflows");
  ASSERT_EQ(cfg->models.size(), 1u);
  const std::string model = prefix + "/share/qkvshare/models/stories260K";
  EXPECT_EQ(cfg->models[0].path, model);
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"}) {
    EXPECT_TRUE(IsFile(model + "/" + f)) << f;
  }

  absl::StatusOr<std::vector<daemon::WorkflowConfig>> workflows =
      daemon::LoadWorkflowDir(cfg->workflows_dir, *cfg);
  ASSERT_TRUE(workflows.ok()) << workflows.status();
  ASSERT_EQ(workflows->size(), 2u);
  EXPECT_EQ((*workflows)[0].name, "story");
  EXPECT_EQ((*workflows)[0].hops.size(), 3u);
}

}  // namespace
}  // namespace qkvshare
