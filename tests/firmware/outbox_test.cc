// Tests of firmware/outbox: items are delivered by C-STORE to DCMTK's storescp on loopback;
// with the receiver down they wait with backoff (also across a reopen) and go out once it is
// up; a refusing receiver (our DicomNode with a failing handler) gets its reason recorded.
#include "firmware/outbox.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "firmware/dicom_node.h"
#include "image/dicom_series.h"
#include "tests/firmware/dicom_output_test_util.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

/// The value, or `fallback` when `r` holds an error.
template <typename T>
T or_else(const base::Result<T>& r, T fallback) {
  return r.ok() ? *r : fallback;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool port_open(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// DCMTK's storescp on loopback, started and stopped by the test (its own pid only).
class StoreScp {
 public:
  StoreScp(int port, fs::path dir) : port_(port), dir_(std::move(dir)) {}
  ~StoreScp() { stop(); }
  bool start() {
    fs::create_directories(dir_);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string port = std::to_string(port_);
      ::execl("/usr/bin/storescp", "storescp", "-aet", "DEST", "-od", dir_.c_str(), port.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !port_open(port_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return port_open(port_);
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  size_t received() const {
    size_t n = 0;
    if (fs::exists(dir_)) {
      for (const auto& e : fs::directory_iterator(dir_)) n += e.is_regular_file();
    }
    return n;
  }

 private:
  int port_;
  fs::path dir_;
  pid_t pid_ = -1;
};

class RefusingHandler : public StoreHandler {
 public:
  base::Status store(const IncomingInstance&) override { return base::resource_exhausted("disk full (test)"); }
};

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/bin/storescp")) GTEST_SKIP() << "dcmtk (storescp) is not installed";
    dir_ = fs::temp_directory_path() /
           ("sb_outbox_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(testing::write_test_mr_series(dir_ / "files", 8, 8, 3));
    auto scan = image::scan_dicom_folder((dir_ / "files").string());
    ASSERT_TRUE(scan.ok());
    instances_ = scan->series.at(0).instances;
    port_ = free_port();
  }
  void TearDown() override { fs::remove_all(dir_); }

  Destination pacs() const { return {"pacs", "DEST", "127.0.0.1", port_, {"seg", "overlay", "sr"}}; }
  OutboxOptions fake_clock_options() {
    OutboxOptions o;
    o.initial_backoff_s = 30;
    o.acse_timeout_s = 5;
    o.dimse_timeout_s = 10;
    o.clock = [this] { return clock_; };
    return o;
  }
  std::string db() const { return (dir_ / "outbox.sqlite").string(); }
  void enqueue_all(Outbox& box, const std::string& kind) {
    for (const auto& inst : instances_) {
      auto n = box.enqueue(kind, inst.path, inst.sop_class_uid, inst.sop_instance_uid);
      ASSERT_TRUE(n.ok()) << n.status().to_string();
    }
  }

  fs::path dir_;
  std::vector<image::DicomInstance> instances_;
  int port_ = 0;
  double clock_ = 1000.0;
};

TEST_F(OutboxTest, DeliversEveryItemToStoreScp) {
  StoreScp scp(port_, dir_ / "received");
  ASSERT_TRUE(scp.start());
  auto box = Outbox::open(db(), {pacs()}, fake_clock_options());
  ASSERT_TRUE(box.ok()) << box.status().to_string();
  enqueue_all(**box, "overlay");
  // The same instance twice is queued once.
  auto again = (*box)->enqueue("overlay", instances_[0].path, instances_[0].sop_class_uid, instances_[0].sop_instance_uid);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
  auto sent = (*box)->send_due();
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  EXPECT_EQ(*sent, 3);
  EXPECT_EQ(scp.received(), 3u);
  EXPECT_EQ(*(*box)->pending_count(), 0);
  auto states = (*box)->destination_states();
  ASSERT_TRUE(states.ok());
  ASSERT_EQ(states->size(), 1u);
  EXPECT_EQ((*states)[0].delivered, 3);
  EXPECT_EQ((*states)[0].last_error, "");
  EXPECT_EQ((*states)[0].last_success_at, 1000.0);
}

TEST_F(OutboxTest, OnlyDestinationsListingTheKindGetTheItem) {
  Destination sr_only = pacs();
  sr_only.name = "reports";
  sr_only.objects = {"sr"};
  auto box = Outbox::open(db(), {pacs(), sr_only}, fake_clock_options());
  ASSERT_TRUE(box.ok());
  auto n = (*box)->enqueue("overlay", instances_[0].path, instances_[0].sop_class_uid, instances_[0].sop_instance_uid);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  n = (*box)->enqueue("sr", instances_[1].path, instances_[1].sop_class_uid, instances_[1].sop_instance_uid);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(or_else<int>((*box)->enqueue("pdf", instances_[2].path, "1.2", "1.2.3"), -1), 0);
}

TEST_F(OutboxTest, RetriesWithBackoffAcrossReopenUntilTheReceiverIsUp) {
  {
    auto box = Outbox::open(db(), {pacs()}, fake_clock_options());
    ASSERT_TRUE(box.ok());
    enqueue_all(**box, "seg");
    auto sent = (*box)->send_due();  // nobody listens
    ASSERT_TRUE(sent.ok());
    EXPECT_EQ(*sent, 0);
    auto states = (*box)->destination_states();
    ASSERT_TRUE(states.ok());
    EXPECT_EQ((*states)[0].pending, 3);
    EXPECT_NE((*states)[0].last_error.find("association failed"), std::string::npos) << (*states)[0].last_error;
    EXPECT_EQ((*states)[0].next_attempt_at, 1030.0);  // first backoff: 30 s
  }
  StoreScp scp(port_, dir_ / "received");
  ASSERT_TRUE(scp.start());
  auto box = Outbox::open(db(), {pacs()}, fake_clock_options());  // "after a restart"
  ASSERT_TRUE(box.ok());
  clock_ = 1029.0;  // not due yet
  EXPECT_EQ(or_else<int>((*box)->send_due(), -1), 0);
  EXPECT_EQ(scp.received(), 0u);
  clock_ = 1030.0;
  EXPECT_EQ(or_else<int>((*box)->send_due(), -1), 3);
  EXPECT_EQ(scp.received(), 3u);
  auto states = (*box)->destination_states();
  ASSERT_TRUE(states.ok());
  EXPECT_EQ((*states)[0].pending, 0);
  EXPECT_EQ((*states)[0].last_error, "");
}

TEST_F(OutboxTest, BackoffDoublesPerFailureUpToTheCap) {
  OutboxOptions o = fake_clock_options();
  o.max_backoff_s = 100;
  auto box = Outbox::open(db(), {pacs()}, o);
  ASSERT_TRUE(box.ok());
  auto n = (*box)->enqueue("sr", instances_[0].path, instances_[0].sop_class_uid, instances_[0].sop_instance_uid);
  ASSERT_TRUE(n.ok());
  const double expected_waits[] = {30, 60, 100, 100};
  for (double wait : expected_waits) {
    ASSERT_TRUE((*box)->send_due().ok());
    auto states = (*box)->destination_states();
    ASSERT_TRUE(states.ok());
    EXPECT_EQ((*states)[0].next_attempt_at, clock_ + wait);
    clock_ += wait;
  }
}

TEST_F(OutboxTest, RefusalReasonIsRecordedAndItemKept) {
  RefusingHandler handler;
  DicomNodeOptions node_options;
  node_options.ae_title = "DEST";
  node_options.port = port_;
  node_options.bind_address = "127.0.0.1";
  DicomNode node(node_options, handler);
  ASSERT_TRUE(node.start().ok());
  auto box = Outbox::open(db(), {pacs()}, fake_clock_options());
  ASSERT_TRUE(box.ok());
  auto n = (*box)->enqueue("seg", instances_[0].path, instances_[0].sop_class_uid, instances_[0].sop_instance_uid);
  ASSERT_TRUE(n.ok());
  // An SOP class the node does not accept (Secondary Capture): no presentation context.
  n = (*box)->enqueue("overlay", instances_[1].path, UID_SecondaryCaptureImageStorage, "1.2.3.4.5");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(or_else<int>((*box)->send_due(), -1), 0);
  node.stop();
  auto states = (*box)->destination_states();
  ASSERT_TRUE(states.ok());
  EXPECT_EQ((*states)[0].pending, 2);
  EXPECT_NE((*states)[0].last_error.find("refused"), std::string::npos) << (*states)[0].last_error;
  EXPECT_EQ(or_else<int64_t>((*box)->pending_count(), -1), 2);
}

TEST_F(OutboxTest, SenderThreadDeliversWhatIsEnqueued) {
  StoreScp scp(port_, dir_ / "received");
  ASSERT_TRUE(scp.start());
  OutboxOptions o;
  o.idle_poll_s = 0.2;
  auto box = Outbox::open(db(), {pacs()}, o);
  ASSERT_TRUE(box.ok());
  (*box)->start();
  enqueue_all(**box, "overlay");
  for (int i = 0; i < 300 && or_else<int64_t>((*box)->pending_count(), -1) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  (*box)->stop();
  EXPECT_EQ(or_else<int64_t>((*box)->pending_count(), -1), 0);
  EXPECT_EQ(scp.received(), 3u);
}

TEST_F(OutboxTest, ResultOfAJobIsQueuedOnceAndTrackedPerStudy) {
  // A result folder laid out like the pipeline's: seg.dcm, overlay/*.dcm, sr.dcm.
  const fs::path out = dir_ / "results" / "1.2.3";
  fs::create_directories(out / "overlay");
  fs::copy_file(instances_[0].path, out / "seg.dcm");
  fs::copy_file(instances_[1].path, out / "overlay" / "0001.dcm");
  fs::copy_file(instances_[2].path, out / "sr.dcm");
  std::ofstream((out / "report.json").string()) << "{}";
  auto files = find_result_files(out.string());
  ASSERT_TRUE(files.ok()) << files.status().to_string();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].kind, "seg");
  EXPECT_EQ((*files)[1].kind, "overlay");
  EXPECT_EQ((*files)[2].kind, "sr");
  EXPECT_EQ((*files)[0].sop_instance_uid, instances_[0].sop_instance_uid);
  EXPECT_EQ((*files)[2].sop_class_uid, instances_[2].sop_class_uid);

  StoreScp scp(port_, dir_ / "received");
  ASSERT_TRUE(scp.start());
  auto box = Outbox::open(db(), {pacs()}, fake_clock_options());
  ASSERT_TRUE(box.ok());
  EXPECT_FALSE(or_else<bool>((*box)->result_enqueued("1.2.3", 7), true));
  EXPECT_EQ(or_else<int>((*box)->enqueue_result("1.2.3", 7, *files), -1), 3);
  EXPECT_TRUE(or_else<bool>((*box)->result_enqueued("1.2.3", 7), false));
  EXPECT_FALSE(or_else<bool>((*box)->result_enqueued("1.2.3", 8), true));  // a later job is a new result
  EXPECT_EQ(or_else<int>((*box)->enqueue_result("1.2.3", 7, *files), -1), 0);  // idempotent
  EXPECT_TRUE(or_else<bool>((*box)->has_pending("1.2.3"), false));
  EXPECT_FALSE(or_else<bool>((*box)->has_pending("9.9"), true));
  EXPECT_EQ(or_else<int>((*box)->send_due(), -1), 3);
  EXPECT_FALSE(or_else<bool>((*box)->has_pending("1.2.3"), true));
  EXPECT_EQ(scp.received(), 3u);
}

TEST_F(OutboxTest, NotDicomResultFileIsAnError) {
  const fs::path out = dir_ / "results" / "bad";
  fs::create_directories(out);
  std::ofstream((out / "seg.dcm").string()) << "not dicom";
  auto files = find_result_files(out.string());
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), base::Code::kDataLoss);
  EXPECT_NE(files.status().message().find("seg.dcm"), std::string::npos);
}

TEST_F(OutboxTest, MissingFileIsDroppedWithItsReasonNotRetriedForever) {
  StoreScp scp(port_, dir_ / "received");
  ASSERT_TRUE(scp.start());
  auto box = Outbox::open(db(), {pacs()}, fake_clock_options());
  ASSERT_TRUE(box.ok());
  const fs::path gone = dir_ / "gone.dcm";
  fs::copy_file(instances_[0].path, gone);
  ASSERT_EQ(or_else<int>((*box)->enqueue("seg", gone.string(), instances_[0].sop_class_uid, "1.2.3.4.5"), -1), 1);
  fs::remove(gone);
  EXPECT_EQ(or_else<int>((*box)->send_due(), -1), 0);
  EXPECT_EQ(or_else<int64_t>((*box)->pending_count(), -1), 0);
  auto states = (*box)->destination_states();
  ASSERT_TRUE(states.ok());
  EXPECT_NE((*states)[0].last_error.find("missing"), std::string::npos) << (*states)[0].last_error;
  EXPECT_EQ(scp.received(), 0u);
}

TEST(OutboxOpenTest, RejectsBadDestinations) {
  const std::string db = (fs::temp_directory_path() / ("sb_outbox_bad_" + std::to_string(::getpid()))).string();
  EXPECT_EQ(Outbox::open(db, {{"a", "AE", "h", 0, {"seg"}}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(Outbox::open(db, {{"a", "AE", "h", 104, {"pdf"}}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(Outbox::open(db, {{"a", "AE", "h", 104, {"seg"}}, {"a", "AE2", "h", 104, {"seg"}}}).status().code(),
            base::Code::kInvalidArgument);
  EXPECT_FALSE(fs::exists(db));
}

}  // namespace
}  // namespace firmware
