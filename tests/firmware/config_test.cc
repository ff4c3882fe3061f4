// Tests for firmware::Config: TOML parsing, defaults, strict keys, overrides.
#include "firmware/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace firmware {
namespace {

TEST(Config, EmptyFileGivesDefaults) {
  auto c = parse_config("", "empty.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->dicom.ae_title, "STROKEBOX");
  EXPECT_EQ(c->dicom.port, 11112);
  EXPECT_EQ(c->dicom.bind_address, "0.0.0.0");
  EXPECT_DOUBLE_EQ(c->dicom.study_quiet_s, 10.0);
  EXPECT_EQ(c->model.precision, "fp32");
  EXPECT_EQ(c->jobs.max_attempts, 3);
}

TEST(Config, ReadsEverySection) {
  auto c = parse_config(R"(
[dicom]
ae_title = "BOX1"
port = 4242
bind_address = "127.0.0.1"
study_quiet_s = 1          # an integer is accepted for a number of seconds
max_associations = 2

[storage]
data_dir = "/tmp/x"

[model]
dir = "/models/isles"
precision = "bf16"

[jobs]
max_attempts = 5
retry_delay_s = 0.5
)",
                        "full.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->dicom.ae_title, "BOX1");
  EXPECT_EQ(c->dicom.port, 4242);
  EXPECT_EQ(c->dicom.bind_address, "127.0.0.1");
  EXPECT_DOUBLE_EQ(c->dicom.study_quiet_s, 1.0);
  EXPECT_EQ(c->dicom.max_associations, 2);
  EXPECT_EQ(c->storage.data_dir, "/tmp/x");
  EXPECT_EQ(c->database_path(), "/tmp/x/strokebox.db");
  EXPECT_EQ(c->model.dir, "/models/isles");
  EXPECT_EQ(c->model.precision, "bf16");
  EXPECT_EQ(c->jobs.max_attempts, 5);
  EXPECT_DOUBLE_EQ(c->jobs.retry_delay_s, 0.5);
}

TEST(Config, UnknownKeyIsAnErrorNamingKeyAndLine) {
  auto c = parse_config("[dicom]\nport = 104\nprot = 11112\n", "box.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("box.toml:3"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("'prot'"), std::string::npos) << c.status().message();
}

TEST(Config, UnknownSectionIsAnError) {
  auto c = parse_config("[dicomm]\nport = 1\n", "box.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("[dicomm]"), std::string::npos) << c.status().message();
}

TEST(Config, WrongTypeAndRangeAreErrors) {
  auto t = parse_config("[dicom]\nport = \"11112\"\n", "box.toml");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("dicom.port must be an integer"), std::string::npos) << t.status().message();
  auto r = parse_config("[dicom]\nport = 70000\n", "box.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("dicom.port"), std::string::npos);
  auto ae = parse_config("[dicom]\nae_title = \"A_TITLE_THAT_IS_TOO_LONG\"\n", "box.toml");
  EXPECT_FALSE(ae.ok());
  auto p = parse_config("[model]\nprecision = \"int8\"\n", "box.toml");
  EXPECT_FALSE(p.ok());
  auto q = parse_config("[dicom]\nstudy_quiet_s = 0\n", "box.toml");
  EXPECT_FALSE(q.ok());
}

TEST(Config, SyntaxErrorReportsLine) {
  auto c = parse_config("[dicom]\nport = = 3\n", "bad.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bad.toml:2"), std::string::npos) << c.status().message();
}

TEST(Config, OverridesAreTypedAndValidated) {
  Config c;
  EXPECT_TRUE(set_config_value(c, "dicom.port", "2000").ok());
  EXPECT_EQ(c.dicom.port, 2000);
  EXPECT_TRUE(set_config_value(c, "dicom.study_quiet_s", "1.5").ok());
  EXPECT_DOUBLE_EQ(c.dicom.study_quiet_s, 1.5);
  EXPECT_TRUE(set_config_value(c, "storage.data_dir", "/data").ok());
  EXPECT_EQ(c.storage.data_dir, "/data");
  EXPECT_FALSE(set_config_value(c, "dicom.port", "20x").ok());
  EXPECT_FALSE(set_config_value(c, "dicom.bind_address", "localhost").ok());
  EXPECT_FALSE(set_config_value(c, "dicom.nope", "1").ok());
}

TEST(Config, MissingFileIsNotFound) {
  auto c = load_config("/nonexistent/strokebox.toml");
  EXPECT_EQ(c.status().code(), base::Code::kNotFound);
}

TEST(Config, LoadsFromFile) {
  const auto path = std::filesystem::temp_directory_path() / ("sb_config_" + std::to_string(::getpid()) + ".toml");
  std::ofstream(path) << "[dicom]\nae_title = \"FILEBOX\"\n";
  auto c = load_config(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->dicom.ae_title, "FILEBOX");
}

}  // namespace
}  // namespace firmware
