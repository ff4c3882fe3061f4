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
max_preprocessed_voxels = 1000000

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
  EXPECT_EQ(c->model.max_preprocessed_voxels, 1000000);
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
  auto v = parse_config("[model]\nmax_preprocessed_voxels = -1\n", "box.toml");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("model.max_preprocessed_voxels"), std::string::npos) << v.status().message();
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

TEST(Config, SecurityStatusFanAndOutboxSections) {
  auto c = parse_config(R"(
[dicom]
allowed_calling_aes = ["SCANNER1", "PACS"]
allowed_peers = ["127.0.0.1", "10.1.0.0/16"]
max_pdu_bytes = 32768
max_instance_mb = 64
max_instances_per_study = 400
[tls]
enabled = true
certificate = "/etc/strokebox/box.pem"
private_key = "/etc/strokebox/box.key"
trusted_ca = "/etc/strokebox/ca.pem"
[storage]
min_free_mb = 100
quota_mb = 2048
[board]
set_power_mode = true
[fan]
mode = "curve"
curve = "30:0, 60:128, 90:255"
[status]
port = 9090
show_patient_names = true
[outbox]
initial_backoff_s = 1
max_backoff_s = 60
)");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->dicom.allowed_calling_aes, (std::vector<std::string>{"SCANNER1", "PACS"}));
  EXPECT_EQ(c->dicom.allowed_peers.size(), 2u);
  EXPECT_EQ(c->dicom.max_pdu_bytes, 32768);
  EXPECT_EQ(c->dicom.max_instance_mb, 64);
  EXPECT_EQ(c->dicom.max_instances_per_study, 400);
  EXPECT_TRUE(c->tls.enabled);
  EXPECT_TRUE(c->tls.require_client_certificate);
  EXPECT_EQ(c->tls.trusted_ca, "/etc/strokebox/ca.pem");
  EXPECT_EQ(c->storage.min_free_mb, 100);
  EXPECT_EQ(c->storage.quota_mb, 2048);
  EXPECT_TRUE(c->board.set_power_mode);
  EXPECT_EQ(c->fan.mode, "curve");
  auto curve = parse_fan_curve(c->fan.curve);
  ASSERT_TRUE(curve.ok());
  ASSERT_EQ(curve->size(), 3u);
  EXPECT_EQ((*curve)[1], std::make_pair(60.0, 128));
  EXPECT_EQ(c->status.port, 9090);
  EXPECT_EQ(c->status.bind_address, "127.0.0.1");
  EXPECT_TRUE(c->status.show_patient_names);
  EXPECT_DOUBLE_EQ(c->outbox.max_backoff_s, 60);
}

TEST(Config, BadSecurityValuesAreRefused) {
  EXPECT_FALSE(parse_config("[dicom]\nallowed_peers = [\"10.0.0.0/33\"]\n").ok());
  EXPECT_FALSE(parse_config("[dicom]\nallowed_peers = [\"scanner.local\"]\n").ok());
  EXPECT_FALSE(parse_config("[dicom]\nallowed_calling_aes = [\"BAD\\\\AE\"]\n").ok());
  EXPECT_FALSE(parse_config("[dicom]\nallowed_calling_aes = \"ONE\"\n").ok());  // not an array
  EXPECT_FALSE(parse_config("[dicom]\nmax_pdu_bytes = 100\n").ok());
  EXPECT_FALSE(parse_config("[tls]\nenabled = true\n").ok());  // no certificate
  EXPECT_FALSE(parse_config("[tls]\nenabled = 1\n").ok());     // not a boolean
  EXPECT_FALSE(parse_config("[fan]\ncurve = \"60:10,50:20\"\n").ok());
  EXPECT_FALSE(parse_config("[fan]\ncurve = \"60:300\"\n").ok());
  EXPECT_FALSE(parse_config("[fan]\nmode = \"auto\"\n").ok());
  EXPECT_FALSE(parse_config("[storage]\nquota_mb = -1\n").ok());
  EXPECT_FALSE(parse_config("[status]\nbind_address = \"localhost\"\n").ok());
}

TEST(Config, DestinationsAreParsedAndChecked) {
  auto c = parse_config(R"(
[[destinations]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242

[[destinations]]
name = "console"
ae_title = "MRC"
host = "10.0.0.5"
objects = ["overlay"]
)");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_EQ(c->destinations.size(), 2u);
  EXPECT_EQ(c->destinations[0].port, 4242);
  EXPECT_EQ(c->destinations[0].objects, (std::vector<std::string>{"seg", "overlay", "sr"}));
  EXPECT_EQ(c->destinations[1].port, 104);
  EXPECT_EQ(c->destinations[1].objects, (std::vector<std::string>{"overlay"}));

  auto twice = parse_config("[[destinations]]\nname=\"a\"\nae_title=\"A\"\nhost=\"h\"\n"
                            "[[destinations]]\nname=\"a\"\nae_title=\"B\"\nhost=\"h\"\n");
  EXPECT_FALSE(twice.ok());
  auto bad_object = parse_config("[[destinations]]\nname=\"a\"\nae_title=\"A\"\nhost=\"h\"\nobjects=[\"pdf\"]\n");
  ASSERT_FALSE(bad_object.ok());
  EXPECT_NE(bad_object.status().message().find("pdf"), std::string::npos);
  auto unknown = parse_config("[[destinations]]\nname=\"a\"\nae_title=\"A\"\nhost=\"h\"\ntls=true\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown key 'tls'"), std::string::npos);
}

TEST(Config, ListAndBoolOverrides) {
  Config c;
  EXPECT_TRUE(set_config_value(c, "dicom.allowed_calling_aes", "A1, B2").ok());
  EXPECT_EQ(c.dicom.allowed_calling_aes, (std::vector<std::string>{"A1", "B2"}));
  EXPECT_TRUE(set_config_value(c, "status.enabled", "false").ok());
  EXPECT_FALSE(c.status.enabled);
  EXPECT_FALSE(set_config_value(c, "status.enabled", "yes").ok());
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

// Every ```toml block of the README and the docs is a configuration the box accepts, so the
// documentation cannot drift from the parser (unknown keys are errors).
TEST(Config, EveryTomlExampleInTheDocsParses) {
  int blocks = 0;
  for (const char* doc : {"README.md", "docs/operations.md", "docs/dicom_outputs.md"}) {
    std::ifstream in(std::string(STROKEBOX_SOURCE_DIR) + "/" + doc);
    ASSERT_TRUE(in.good()) << doc;
    std::string line, block;
    bool inside = false;
    int start = 0, n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (!inside && line.rfind("```toml", 0) == 0) {
        inside = true;
        block.clear();
        start = n;
      } else if (inside && line.rfind("```", 0) == 0) {
        inside = false;
        ++blocks;
        auto c = parse_config(block, std::string(doc) + ":" + std::to_string(start));
        EXPECT_TRUE(c.ok()) << doc << " line " << start << ": " << c.status().to_string() << "\n" << block;
      } else if (inside) {
        block += line + "\n";
      }
    }
  }
  EXPECT_GE(blocks, 5);
}

}  // namespace
}  // namespace firmware
