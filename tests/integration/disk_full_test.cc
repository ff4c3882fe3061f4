// Disk full on a real small file system: the data directory of the real daemon sits on a tmpfs
// (or a loop-mounted ext4 image) the test mounts; a filler file brings free space close to
// storage.min_free_mb. storescu then sends a study: below the watermark every C-STORE is
// answered Refused: Out of Resources (0xA700), nothing partial is left in the spool, every
// acknowledged instance is on disk and indexed; once the filler is deleted the next send
// succeeds without restarting the daemon. Needs root (mount); skipped otherwise.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <dcmtk/dcmdata/dctk.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "storage/index.h"
#include "tests/integration/process.h"

namespace fs = std::filesystem;

namespace {

const std::string kBin = STROKEBOX_BINARY;
const std::string kModel = std::string(STROKEBOX_SOURCE_DIR) + "/models/demo";
constexpr int kMinFreeMb = 8;

uint64_t free_bytes(const fs::path& p) {
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string sop_instance_uid(const fs::path& file) {
  DcmFileFormat ff;
  if (ff.loadFile(file.c_str()).bad()) return "";
  OFString uid;
  ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
  return uid.c_str();
}

/// storescu -v output -> file sent -> response text ("Success", "Refused: OutOfResources" ...).
std::map<std::string, std::string> store_responses(const std::string& output) {
  std::map<std::string, std::string> out;
  static const std::regex sending(R"(Sending file: (\S+))");
  static const std::regex response(R"(Received Store Response \(([^)]*)\))");
  std::string current;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, sending)) current = m[1];
    else if (std::regex_search(line, m, response) && !current.empty()) out[current] = m[1];
  }
  return out;
}

class DiskFull : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = fs::temp_directory_path() / ("strokebox-diskfull-" + std::to_string(::getpid()));
    mnt_ = work_ / "mnt";
    fs::remove_all(work_);
    fs::create_directories(mnt_);
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a small file system needs root (id -u is " << ::geteuid() << ")";
    // tmpfs first; a loop-mounted ext4 image where tmpfs is not allowed.
    if (::mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=32m") == 0) {
      mounted_ = true;
    } else {
      const std::string tmpfs_error = std::strerror(errno);
      auto r = itest::run_command("truncate -s 48M " + (work_ / "fs.img").string() + " && mkfs.ext4 -q -F " +
                                  (work_ / "fs.img").string() + " && mount -o loop " + (work_ / "fs.img").string() +
                                  " " + mnt_.string() + " 2>&1");
      if (r.exit_code != 0) {
        GTEST_SKIP() << "cannot mount a small file system: tmpfs: " << tmpfs_error << "; loop ext4: " << r.output;
      }
      mounted_ = true;
    }
  }
  void TearDown() override {
    daemon_.reset();
    if (mounted_) ::umount2(mnt_.c_str(), MNT_DETACH);
    if (::testing::Test::HasFailure() || std::getenv("STROKEBOX_KEEP_TEST_DATA")) {
      std::printf("test data kept in %s (daemon log: %s)\n", work_.c_str(), (work_ / "daemon.log").c_str());
      return;
    }
    fs::remove_all(work_);
  }

  fs::path work_, mnt_;
  bool mounted_ = false;
  std::unique_ptr<itest::Child> daemon_;
};

TEST_F(DiskFull, BelowWatermarkStoresAreRefusedWithA700AndRecoverWhenSpaceReturns) {
  const fs::path study = work_ / "study";
  ASSERT_EQ(itest::run_command(kBin + " phantom --format dicom --seed 301 --out " + study.string()).exit_code, 0);
  const fs::path data = mnt_ / "data";
  const int port = itest::free_port();
  {
    std::ofstream config(work_ / "strokebox.toml");
    config << "[dicom]\nport = " << port << "\nbind_address = \"127.0.0.1\"\nae_title = \"STROKEBOX\"\n"
           << "study_quiet_s = 3600\n"  // nothing is processed during the test: only receiving matters
           << "[storage]\ndata_dir = \"" << data.string() << "\"\nmin_free_mb = " << kMinFreeMb << "\n"
           << "[model]\ndir = \"" << kModel << "\"\n[board]\nkind = \"sim\"\n[status]\nenabled = false\n";
  }
  daemon_ = std::make_unique<itest::Child>(
      std::vector<std::string>{kBin, "run", "--config", (work_ / "strokebox.toml").string()},
      (work_ / "daemon.log").string());
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = itest::run_command("echoscu -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " 2>/dev/null").exit_code == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << itest::read_file((work_ / "daemon.log").string());

  // Leave room for about ten instances above the watermark.
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(study / "DWI")) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 20u);
  const uint64_t instance = fs::file_size(files[0]);
  const uint64_t target_free = (static_cast<uint64_t>(kMinFreeMb) << 20) + 10 * instance;
  const uint64_t free_now = free_bytes(mnt_);
  ASSERT_GT(free_now, target_free + (1u << 20)) << "file system too small";
  {
    std::ofstream filler(mnt_ / "filler", std::ios::binary);
    const std::string chunk(1 << 16, '\0');
    for (uint64_t left = free_now - target_free; left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, chunk.size());
      filler.write(chunk.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
    ASSERT_TRUE(filler.good());
  }

  // Send the whole DWI series, not halting on a refusal.
  auto sent = itest::run_command("storescu -v -nh -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " " +
                                 [&] {
                                   std::string s;
                                   for (const auto& f : files) s += f.string() + " ";
                                   return s;
                                 }() + " 2>&1");
  const auto responses = store_responses(sent.output);
  ASSERT_EQ(responses.size(), files.size()) << sent.output;
  std::set<std::string> acked, refused;
  for (const auto& [file, status] : responses) {
    if (status == "Success") {
      acked.insert(file);
    } else {
      refused.insert(file);
      // DCMTK prints 0xA700 as "Refused: OutOfResources".
      EXPECT_EQ(status, "Refused: OutOfResources") << file;
    }
  }
  std::printf("acknowledged %zu, refused %zu of %zu instances; %llu bytes free at the end\n", acked.size(),
              refused.size(), files.size(), static_cast<unsigned long long>(free_bytes(mnt_)));
  EXPECT_GE(acked.size(), 1u) << sent.output;
  EXPECT_GE(refused.size(), 1u) << sent.output;
  // Once refused, everything after is refused too (the watermark does not flicker).
  EXPECT_TRUE(refused.empty() || *refused.begin() > *acked.rbegin()) << sent.output;

  // Nothing partial in the spool: no temp file, only complete .dcm files.
  for (const auto& e : fs::recursive_directory_iterator(data / "spool")) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    EXPECT_FALSE(name.rfind(".tmp-", 0) == 0) << "temp file left: " << e.path();
    EXPECT_EQ(e.path().extension(), ".dcm") << e.path();
  }

  // Every acknowledged instance is indexed and its file is complete; no refused one is.
  auto check_index = [&](const std::set<std::string>& must_have, const std::set<std::string>& must_not_have) {
    auto index = storage::Index::open_read_only((data / "strokebox.db").string());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    DcmFileFormat ff;
    ASSERT_TRUE(ff.loadFile(files[0].c_str()).good());
    OFString study_uid;
    ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study_uid);
    auto instances = (*index)->instances_of_study(study_uid.c_str());
    ASSERT_TRUE(instances.ok());
    std::map<std::string, std::string> path_of;
    for (const auto& in : *instances) path_of[in.sop_instance_uid] = in.path;
    for (const auto& f : must_have) {
      const std::string sop = sop_instance_uid(f);
      ASSERT_TRUE(path_of.count(sop)) << "acknowledged but not indexed: " << f;
      EXPECT_EQ(sop_instance_uid(path_of[sop]), sop) << "spool file unreadable: " << path_of[sop];
    }
    for (const auto& f : must_not_have) EXPECT_FALSE(path_of.count(sop_instance_uid(f))) << "refused but indexed: " << f;
    EXPECT_EQ(path_of.size(), must_have.size());
  };
  check_index(acked, refused);

  // Space returns: the same daemon accepts the rest.
  fs::remove(mnt_ / "filler");
  ASSERT_TRUE(daemon_->running()) << itest::read_file((work_ / "daemon.log").string());
  std::string rest;
  for (const auto& f : refused) rest += f + " ";
  auto resent = itest::run_command("storescu -v -nh -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " " + rest +
                                   " 2>&1");
  for (const auto& [file, status] : store_responses(resent.output)) {
    EXPECT_EQ(status, "Success") << file;
    acked.insert(file);
  }
  EXPECT_EQ(resent.exit_code, 0) << resent.output;
  check_index(acked, {});
  EXPECT_EQ(acked.size(), files.size());
  EXPECT_NE(itest::read_file((work_ / "daemon.log").string()).find("almost full"), std::string::npos);
}

}  // namespace
