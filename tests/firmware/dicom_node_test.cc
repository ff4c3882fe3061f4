// Tests for firmware::DicomNode and SpoolStoreHandler: the node runs in-process on a free
// loopback port; instances are sent with DCMTK's DcmSCU and with the storescu binary.
#include "firmware/dicom_node.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/oflog/oflog.h>

namespace firmware {
namespace {

namespace fs = std::filesystem;

// DCMTK logs every association at INFO; keep the test output to warnings.
const bool kQuietDcmtk = [] {
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  return true;
}();

constexpr const char* kStudy = "1.2.826.0.1.3680043.10.999.1";
constexpr const char* kSeries = "1.2.826.0.1.3680043.10.999.1.2";

// A free TCP port: bind to port 0 on loopback, read it back, close (DcmSCP cannot bind 0).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A small MR slice (8x8, 16 bit) with the given UIDs.
std::unique_ptr<DcmFileFormat> make_mr_slice(const std::string& study, const std::string& series, const std::string& sop,
                                             int instance_number) {
  auto file = std::make_unique<DcmFileFormat>();
  DcmDataset* ds = file->getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
  ds->putAndInsertString(DCM_StudyInstanceUID, study.c_str());
  ds->putAndInsertString(DCM_SeriesInstanceUID, series.c_str());
  ds->putAndInsertString(DCM_PatientID, "TEST-P1");
  ds->putAndInsertString(DCM_PatientName, "Test^Phantom");
  ds->putAndInsertString(DCM_Modality, "MR");
  ds->putAndInsertString(DCM_SeriesDescription, "DWI b1000");
  ds->putAndInsertString(DCM_InstanceNumber, std::to_string(instance_number).c_str());
  ds->putAndInsertString(DCM_ImagePositionPatient, ("0\\0\\" + std::to_string(instance_number * 5)).c_str());
  ds->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  ds->putAndInsertString(DCM_PixelSpacing, "2\\2");
  ds->putAndInsertString(DCM_SliceThickness, "5");
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertUint16(DCM_Rows, 8);
  ds->putAndInsertUint16(DCM_Columns, 8);
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 12);
  ds->putAndInsertUint16(DCM_HighBit, 11);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  std::vector<Uint16> pixels(64);
  for (int i = 0; i < 64; ++i) pixels[i] = static_cast<Uint16>(i * instance_number);
  ds->putAndInsertUint16Array(DCM_PixelData, pixels.data(), 64);
  return file;
}

std::string sop_uid(int i) { return std::string(kSeries) + "." + std::to_string(i); }

class DicomNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_node_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto index = storage::Index::open((dir_ / "strokebox.db").string());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
    spool_ = std::make_unique<storage::Spool>((dir_ / "spool").string());
    handler_ = std::make_unique<SpoolStoreHandler>(*spool_, *index_, /*min_free_bytes=*/0);
    options_.ae_title = "STROKEBOX";
    options_.port = free_port();
    options_.bind_address = "127.0.0.1";
    options_.dimse_timeout_s = 5;
  }
  void TearDown() override {
    if (node_) node_->stop();
    node_.reset();
    fs::remove_all(dir_);
  }
  void start_node(StoreHandler* handler = nullptr) {
    node_ = std::make_unique<DicomNode>(options_, handler ? *handler : *handler_);
    base::Status st = node_->start();
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  std::unique_ptr<DcmSCU> connect(const std::string& called_ae = "STROKEBOX") {
    auto scu = std::make_unique<DcmSCU>();
    scu->setAETitle("TESTSCU");
    scu->setPeerAETitle(called_ae.c_str());
    scu->setPeerHostName("127.0.0.1");
    scu->setPeerPort(static_cast<Uint16>(options_.port));
    scu->setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    scu->setDIMSETimeout(10);
    scu->setACSETimeout(10);
    OFList<OFString> xfers;
    xfers.push_back(UID_LittleEndianExplicitTransferSyntax);
    xfers.push_back(UID_LittleEndianImplicitTransferSyntax);
    scu->addPresentationContext(UID_MRImageStorage, xfers);
    scu->addPresentationContext(UID_VerificationSOPClass, xfers);
    EXPECT_TRUE(scu->initNetwork().good());
    return scu;
  }
  Uint16 store(DcmSCU& scu, DcmDataset* ds) {
    T_ASC_PresentationContextID pc = scu.findPresentationContextID(UID_MRImageStorage, "");
    EXPECT_NE(pc, 0);
    Uint16 status = 0xFFFF;
    OFCondition cond = scu.sendSTORERequest(pc, "", ds, status);
    EXPECT_TRUE(cond.good()) << cond.text();
    return status;
  }
  // Waits (without a timing assertion) until pred() holds; gives up after a generous bound.
  template <typename Pred>
  static bool eventually(Pred pred) {
    for (int i = 0; i < 1000; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }

  fs::path dir_;
  std::unique_ptr<storage::Index> index_;
  std::unique_ptr<storage::Spool> spool_;
  std::unique_ptr<SpoolStoreHandler> handler_;
  DicomNodeOptions options_;
  std::unique_ptr<DicomNode> node_;
};

TEST(StoreStatus, EveryErrorCodeMapsToAFailureStatus) {
  EXPECT_EQ(store_status_for(base::Code::kOk), 0x0000);
  EXPECT_EQ(store_status_for(base::Code::kResourceExhausted), 0xA700);
  EXPECT_EQ(store_status_for(base::Code::kUnavailable), 0xA700);
  EXPECT_EQ(store_status_for(base::Code::kInvalidArgument), 0xA900);
  EXPECT_EQ(store_status_for(base::Code::kDataLoss), 0xC000);
  for (int c = 1; c <= static_cast<int>(base::Code::kPermissionDenied); ++c) {
    const uint16_t s = store_status_for(static_cast<base::Code>(c));
    // Failure classes of PS3.4 B.2.3 / PS3.7 C.4: never success or warning.
    EXPECT_TRUE(s == 0x0110 || (s & 0xF000) == 0xA000 || (s & 0xF000) == 0xC000) << "code " << c;
  }
}

TEST_F(DicomNodeTest, AnswersEcho) {
  start_node();
  auto scu = connect();
  ASSERT_TRUE(scu->negotiateAssociation().good());
  EXPECT_TRUE(scu->sendECHORequest(0).good());
  EXPECT_TRUE(scu->releaseAssociation().good());
}

TEST_F(DicomNodeTest, SuccessOnlyAfterFileIsInSpoolAndRowInIndex) {
  start_node();
  auto scu = connect();
  ASSERT_TRUE(scu->negotiateAssociation().good());
  for (int i = 1; i <= 3; ++i) {
    auto slice = make_mr_slice(kStudy, kSeries, sop_uid(i), i);
    ASSERT_EQ(store(*scu, slice->getDataset()), 0x0000);
    // The response has arrived: the file and the row must already exist.
    const fs::path file = dir_ / "spool" / kStudy / kSeries / (sop_uid(i) + ".dcm");
    ASSERT_TRUE(fs::exists(file)) << file;
    auto rows = index_->instances_of_study(kStudy);
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), static_cast<size_t>(i));
    EXPECT_EQ(rows->back().calling_ae, "TESTSCU");
    // The stored file is a complete DICOM file with the same instance.
    DcmFileFormat back;
    ASSERT_TRUE(back.loadFile(file.c_str()).good());
    OFString uid;
    back.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
    EXPECT_EQ(std::string(uid.c_str()), sop_uid(i));
  }
  // While the association is open the study is marked as such; after release it is not.
  EXPECT_EQ(handler_->studies_with_open_associations(), std::set<std::string>{kStudy});
  ASSERT_TRUE(scu->releaseAssociation().good());
  EXPECT_TRUE(eventually([&] { return handler_->studies_with_open_associations().empty(); }));
  auto study = index_->study(kStudy);
  ASSERT_TRUE(study.ok() && study->has_value());
  EXPECT_EQ((*study)->instance_count, 3);
  EXPECT_EQ((*study)->patient_id, "TEST-P1");
}

TEST_F(DicomNodeTest, UnsafeUidIsRefusedAndNothingWritten) {
  start_node();
  auto scu = connect();
  ASSERT_TRUE(scu->negotiateAssociation().good());
  auto bad_series = make_mr_slice(kStudy, "../../x", sop_uid(1), 1);
  EXPECT_EQ(store(*scu, bad_series->getDataset()), 0xA900);
  auto bad_study = make_mr_slice("1.2.3/../../4", kSeries, sop_uid(2), 2);
  EXPECT_EQ(store(*scu, bad_study->getDataset()), 0xA900);
  auto no_study = make_mr_slice(kStudy, kSeries, sop_uid(3), 3);
  no_study->getDataset()->findAndDeleteElement(DCM_StudyInstanceUID);
  EXPECT_EQ(store(*scu, no_study->getDataset()), 0xA900);
  // The association survives refusals: a good instance still goes through.
  auto good = make_mr_slice(kStudy, kSeries, sop_uid(4), 4);
  EXPECT_EQ(store(*scu, good->getDataset()), 0x0000);
  ASSERT_TRUE(scu->releaseAssociation().good());
  EXPECT_FALSE(fs::exists(dir_ / "x"));
  EXPECT_FALSE(fs::exists(dir_ / "spool" / "x"));
  size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(dir_ / "spool")) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  auto rows = index_->instances_of_study(kStudy);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 1u);
}

TEST_F(DicomNodeTest, FullDiskIsRefusedWithOutOfResources) {
  SpoolStoreHandler full(*spool_, *index_, /*min_free_bytes=*/~0ull);
  start_node(&full);
  auto scu = connect();
  ASSERT_TRUE(scu->negotiateAssociation().good());
  auto slice = make_mr_slice(kStudy, kSeries, sop_uid(1), 1);
  EXPECT_EQ(store(*scu, slice->getDataset()), 0xA700);
  EXPECT_TRUE(scu->releaseAssociation().good());
  node_->stop();  // the handler must outlive the node
  EXPECT_FALSE(fs::exists(dir_ / "spool" / kStudy));
}

TEST_F(DicomNodeTest, WrongCalledAeTitleIsRefused) {
  start_node();
  auto scu = connect("SOMEONEELSE");
  EXPECT_FALSE(scu->negotiateAssociation().good());
}

TEST_F(DicomNodeTest, AssociationsBeyondTheLimitAreRejectedTransiently) {
  options_.max_associations = 1;
  start_node();
  auto first = connect();
  ASSERT_TRUE(first->negotiateAssociation().good());
  ASSERT_TRUE(eventually([&] { return node_->active_associations() == 1; }));
  auto second = connect();
  EXPECT_FALSE(second->negotiateAssociation().good());
  ASSERT_TRUE(first->releaseAssociation().good());
  ASSERT_TRUE(eventually([&] { return node_->active_associations() == 0; }));
  auto third = connect();
  EXPECT_TRUE(third->negotiateAssociation().good());
  EXPECT_TRUE(third->releaseAssociation().good());
}

TEST_F(DicomNodeTest, StorescuWithEveryUncompressedTransferSyntax) {
  start_node();
  // -xe explicit LE, -xi implicit LE, -xb explicit BE, -xd deflated explicit LE.
  const char* flags[] = {"-xe", "-xi", "-xb", "-xd"};
  int i = 10;
  for (const char* flag : flags) {
    ++i;
    const fs::path file = dir_ / ("slice" + std::to_string(i) + ".dcm");
    ASSERT_TRUE(make_mr_slice(kStudy, kSeries, sop_uid(i), i)->saveFile(file.c_str(), EXS_LittleEndianExplicit).good());
    const std::string cmd = std::string("storescu -q ") + flag + " -aet SCANNER -aec STROKEBOX 127.0.0.1 " +
                            std::to_string(options_.port) + " " + file.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    EXPECT_TRUE(fs::exists(dir_ / "spool" / kStudy / kSeries / (sop_uid(i) + ".dcm"))) << flag;
  }
  auto rows = index_->instances_of_study(kStudy);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 4u);
  EXPECT_EQ(rows->front().calling_ae, "SCANNER");
}

TEST_F(DicomNodeTest, EchoscuSeesTheNodeAndStopFreesThePort) {
  start_node();
  const std::string echo = "echoscu -q -aec STROKEBOX 127.0.0.1 " + std::to_string(options_.port);
  EXPECT_EQ(std::system(echo.c_str()), 0);
  // stop() from another thread returns and frees the port for a new node.
  std::thread stopper([&] { node_->stop(); });
  stopper.join();
  EXPECT_NE(std::system((echo + " 2>/dev/null").c_str()), 0);
  start_node();
  EXPECT_EQ(std::system(echo.c_str()), 0);
}

TEST_F(DicomNodeTest, PortInUseIsReportedAtStart) {
  start_node();
  DicomNode second(options_, *handler_);
  base::Status st = second.start();
  EXPECT_EQ(st.code(), base::Code::kUnavailable) << st.to_string();
}

}  // namespace
}  // namespace firmware
