// Tests for storage::Spool and the atomic file helpers.
#include "storage/spool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace storage {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_spool_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST(SafeUid, AcceptsDicomUids) {
  EXPECT_TRUE(is_safe_uid("1.2.840.10008.5.1.4.1.1.4"));
  EXPECT_TRUE(is_safe_uid("0"));
  EXPECT_TRUE(is_safe_uid(std::string(64, '1')));
}

TEST(SafeUid, RejectsPathTricksAndMalformedUids) {
  EXPECT_FALSE(is_safe_uid(""));
  EXPECT_FALSE(is_safe_uid("."));
  EXPECT_FALSE(is_safe_uid(".."));
  EXPECT_FALSE(is_safe_uid("../../x"));
  EXPECT_FALSE(is_safe_uid("1.2/3"));
  EXPECT_FALSE(is_safe_uid("1..2"));
  EXPECT_FALSE(is_safe_uid(".1.2"));
  EXPECT_FALSE(is_safe_uid("1.2."));
  EXPECT_FALSE(is_safe_uid("1.2 "));
  EXPECT_FALSE(is_safe_uid(std::string("1.2\0.3", 6)));
  EXPECT_FALSE(is_safe_uid(std::string(65, '1')));
}

TEST_F(SpoolTest, StoresUnderStudySeriesSopLayout) {
  Spool spool((dir_ / "spool").string());
  // A writer that produces no file is an error.
  auto none = spool.store("1.2.3", "1.2.3.4", "1.2.3.4.5", [](const std::string&) { return base::Status(); });
  EXPECT_EQ(none.status().code(), base::Code::kInternal);
  auto good = spool.store("1.2.3", "1.2.3.4", "1.2.3.4.5", [](const std::string& temp) {
    std::ofstream(temp) << "DICM";
    return base::Status();
  });
  ASSERT_TRUE(good.ok()) << good.status().to_string();
  EXPECT_EQ(*good, (dir_ / "spool/1.2.3/1.2.3.4/1.2.3.4.5.dcm").string());
  EXPECT_EQ(read_all(*good), "DICM");
}

TEST_F(SpoolTest, RefusesUnsafeUidsAndWritesNothing) {
  Spool spool((dir_ / "spool").string());
  bool called = false;
  auto path = spool.store("1.2.3", "../../x", "1.2", [&](const std::string&) {
    called = true;
    return base::Status();
  });
  EXPECT_EQ(path.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(path.status().message().find("Series Instance UID"), std::string::npos);
  EXPECT_FALSE(called);
  EXPECT_FALSE(fs::exists(dir_ / "spool"));
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(SpoolTest, FailedWriterLeavesOldFileAndNoTemp) {
  const std::string path = (dir_ / "a/b/file.txt").string();
  ASSERT_TRUE(write_file_atomic(path, std::string_view("old")).ok());
  base::Status st = write_file_atomic(path, [](const std::string& temp) {
    std::ofstream(temp) << "half written";
    return base::Status(base::Code::kInternal, "writer broke");
  });
  EXPECT_EQ(st.code(), base::Code::kInternal);
  EXPECT_NE(st.message().find("writer broke"), std::string::npos);
  EXPECT_EQ(read_all(path), "old");
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir_ / "a/b")) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(SpoolTest, ReplacesExistingFileAtomically) {
  const std::string path = (dir_ / "f.bin").string();
  ASSERT_TRUE(write_file_atomic(path, std::string_view("one")).ok());
  ASSERT_TRUE(write_file_atomic(path, std::string_view("two")).ok());
  EXPECT_EQ(read_all(path), "two");
}

TEST_F(SpoolTest, RemovesStaleTempFilesOnly) {
  Spool spool((dir_ / "spool").string());
  fs::create_directories(dir_ / "spool/1.2/1.2.3");
  std::ofstream(dir_ / "spool/1.2/1.2.3" / (std::string(kTempPrefix) + "9.dcm.1.0")) << "partial";
  std::ofstream(dir_ / "spool/1.2/1.2.3/9.dcm") << "complete";
  auto removed = spool.remove_stale_temp_files();
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1);
  EXPECT_TRUE(fs::exists(dir_ / "spool/1.2/1.2.3/9.dcm"));
}

TEST_F(SpoolTest, SyncTreeReportsMissingDirectory) {
  EXPECT_EQ(sync_tree((dir_ / "nope").string()).code(), base::Code::kNotFound);
  fs::create_directories(dir_ / "r/s");
  std::ofstream(dir_ / "r/s/x") << "1";
  EXPECT_TRUE(sync_tree((dir_ / "r").string()).ok());
}

}  // namespace
}  // namespace storage
