// The configuration the Debian package installs as /etc/strokebox/strokebox.toml
// (packaging/strokebox.toml) parses, and points at the packaged model and the unit's
// StateDirectory.
#include <gtest/gtest.h>

#include <string>

#include "firmware/config.h"

namespace firmware {
namespace {

TEST(PackagedConfig, ParsesAndUsesThePackagedPaths) {
  auto c = load_config(std::string(STROKEBOX_SOURCE_DIR) + "/packaging/strokebox.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model.dir, "/usr/share/strokebox/models/default");
  EXPECT_EQ(c->storage.data_dir, "/var/lib/strokebox");
  EXPECT_EQ(c->dicom.port, 11112);
  EXPECT_EQ(c->status.bind_address, "127.0.0.1");
  EXPECT_TRUE(c->destinations.empty());
}

}  // namespace
}  // namespace firmware
