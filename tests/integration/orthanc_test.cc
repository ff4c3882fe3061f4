// PACS round trip against a real Orthanc on loopback (skipped without the Debian package):
// Orthanc sends a study to a DICOM node standing in for the box (/modalities/{id}/store), and
// the box's writers + outbox send SEG, overlay and SR back; Orthanc's REST API confirms the
// three objects are in the original study with the right SOP classes.
// OrthancRoundTrip.ThroughTheDaemon is the appliance version: `strokebox run` with Orthanc as a
// [[destinations]] entry receives a phantom study from Orthanc, processes it and sends the
// results back through its durable outbox.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "firmware/dicom_node.h"
#include "firmware/outbox.h"
#include "firmware/overlay_writer.h"
#include "firmware/seg_writer.h"
#include "firmware/sr_writer.h"
#include "image/dicom_series.h"
#include "tests/firmware/dicom_output_test_util.h"
#include "tests/integration/orthanc.h"
#include "tests/integration/process.h"

namespace {

namespace fs = std::filesystem;

class CollectingHandler : public firmware::StoreHandler {
 public:
  base::Status store(const firmware::IncomingInstance& in) override {
    std::lock_guard<std::mutex> lock(mu_);
    uids_.insert(in.affected_sop_instance_uid);
    return base::ok_status();
  }
  std::set<std::string> uids() {
    std::lock_guard<std::mutex> lock(mu_);
    return uids_;
  }

 private:
  std::mutex mu_;
  std::set<std::string> uids_;
};

std::string uid_of(const std::string& path, const DcmTagKey& key) {
  DcmFileFormat ff;
  if (ff.loadFile(path.c_str()).bad()) return "";
  OFString v;
  ff.getDataset()->findAndGetOFString(key, v);
  return v.c_str();
}

TEST(OrthancRoundTrip, StudyComesInAndSegOverlayAndSrGoBackIntoTheStudy) {
  if (!itest::have_orthanc()) GTEST_SKIP() << "orthanc or curl is not installed";
  const fs::path dir = fs::temp_directory_path() / ("sb_orthanc_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ASSERT_TRUE(firmware::testing::write_test_mr_series(dir / "study", 32, 24, 4));

  // The box's DICOM node (stand-in for `strokebox run`).
  CollectingHandler handler;
  firmware::DicomNodeOptions node_options;
  node_options.ae_title = "STROKEBOX";
  node_options.port = itest::free_port();
  node_options.bind_address = "127.0.0.1";
  firmware::DicomNode node(node_options, handler);
  ASSERT_TRUE(node.start().ok());

  itest::Orthanc orthanc(dir / "orthanc", {{"box", {"STROKEBOX", "127.0.0.1", node_options.port}}});
  ASSERT_TRUE(orthanc.start()) << itest::read_file((dir / "orthanc" / "orthanc.log").string());

  // PACS -> box.
  auto scan = image::scan_dicom_folder((dir / "study").string());
  ASSERT_TRUE(scan.ok());
  const image::DicomSeries& dwi = scan->series.at(0);
  std::string study_id;
  for (const auto& inst : dwi.instances) {
    const nlohmann::json r = orthanc.post("/instances", "", inst.path);
    ASSERT_TRUE(r.is_object()) << "upload of " << inst.path << " failed";
    study_id = r.value("ParentStudy", "");
  }
  ASSERT_FALSE(study_id.empty());
  ASSERT_TRUE(orthanc.store_to("box", study_id));
  EXPECT_EQ(handler.uids().size(), dwi.instances.size());
  node.stop();

  // The box's outputs.
  auto stack = image::sort_slices(dwi);
  ASSERT_TRUE(stack.ok());
  auto volume = image::assemble_volume(dwi);
  ASSERT_TRUE(volume.ok());
  image::VolumeU8 mask(stack->grid, 0);
  for (int j = 5; j < 10; ++j) mask.at(10, j, 2) = 1;
  const std::string seg = (dir / "out" / "seg.dcm").string();
  fs::create_directories(dir / "out");
  ASSERT_TRUE(firmware::write_seg(dwi, mask, {"strokebox", "0.1.0", "demo"}, seg).ok());
  std::vector<firmware::WrittenInstance> overlay;
  firmware::OverlayText text;
  text.lesion_volume_ml = 0.1;
  text.lesion_count = 1;
  text.model_id = "demo";
  text.software_version = "0.1.0";
  ASSERT_TRUE(
      firmware::write_overlay_series(dwi, *volume, mask, text, (dir / "out" / "overlay").string(), {}, &overlay).ok());
  firmware::SrFacts facts;
  facts.lesion_volume_ml = 0.1;
  facts.lesion_count = 1;
  facts.model_id = "demo";
  facts.seg_sop_instance_uid = uid_of(seg, DCM_SOPInstanceUID);
  facts.seg_series_instance_uid = uid_of(seg, DCM_SeriesInstanceUID);
  const std::string sr = (dir / "out" / "sr.dcm").string();
  std::string sr_uid;
  ASSERT_TRUE(firmware::write_sr(dwi, facts, sr, {}, &sr_uid).ok());

  // Box -> PACS through the outbox.
  firmware::OutboxOptions options;
  options.calling_ae_title = "STROKEBOX";
  auto box = firmware::Outbox::open((dir / "outbox.sqlite").string(),
                                    {{"pacs", orthanc.ae_title(), "127.0.0.1", orthanc.dicom_port(), {"seg", "overlay", "sr"}}},
                                    options);
  ASSERT_TRUE(box.ok()) << box.status().to_string();
  ASSERT_TRUE((*box)->enqueue("seg", seg, UID_SegmentationStorage, facts.seg_sop_instance_uid).ok());
  for (const auto& w : overlay) ASSERT_TRUE((*box)->enqueue("overlay", w.path, w.sop_class_uid, w.sop_instance_uid).ok());
  ASSERT_TRUE((*box)->enqueue("sr", sr, UID_EnhancedSRStorage, sr_uid).ok());
  const auto send_start = std::chrono::steady_clock::now();
  auto sent = (*box)->send_due();
  const double send_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - send_start).count();
  std::printf("outbox: %zu objects confirmed by Orthanc in %.0f ms\n", overlay.size() + 2, send_ms);
  ::testing::Test::RecordProperty("outbox_send_ms", static_cast<int>(send_ms));
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  EXPECT_EQ(*sent, static_cast<int>(overlay.size()) + 2);
  auto states = (*box)->destination_states();
  ASSERT_TRUE(states.ok());
  EXPECT_EQ((*states)[0].last_error, "");

  // Orthanc has them, in the original study.
  std::set<std::string> classes;
  for (const auto& inst : orthanc.instances()) {
    if (inst.series_instance_uid == dwi.series_instance_uid) continue;
    EXPECT_EQ(inst.study_instance_uid, dwi.study.study_instance_uid) << inst.sop_class_uid;
    classes.insert(inst.sop_class_uid);
  }
  EXPECT_EQ(classes, (std::set<std::string>{UID_SegmentationStorage, UID_SecondaryCaptureImageStorage,
                                            UID_EnhancedSRStorage}));
  orthanc.stop();
  fs::remove_all(dir);
}

std::string sql(const fs::path& db, const std::string& query) {
  auto r = itest::run_command("sqlite3 -batch '" + db.string() + "' \"" + query + "\" 2>&1");
  std::string out = r.output;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

TEST(OrthancRoundTrip, ThroughTheDaemon) {
  if (!itest::have_orthanc()) GTEST_SKIP() << "orthanc or curl is not installed";
  const std::string bin = STROKEBOX_BINARY;
  const fs::path dir = fs::temp_directory_path() / ("sb_orthanc_daemon_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto made = itest::run_command(bin + " phantom --format dicom --seed 161 --out " + (dir / "study").string());
  ASSERT_EQ(made.exit_code, 0) << made.output;

  const int box_port = itest::free_port();
  itest::Orthanc orthanc(dir / "orthanc", {{"box", {"STROKEBOX", "127.0.0.1", box_port}}});
  ASSERT_TRUE(orthanc.start()) << itest::read_file((dir / "orthanc" / "orthanc.log").string());

  // The box: Orthanc as a destination, plus one that refuses every association (nothing
  // listens on its port) to see the reason recorded for `strokebox status`.
  const int dead_port = itest::free_port();
  const fs::path config = dir / "strokebox.toml";
  std::ofstream(config.string()) << "[dicom]\nae_title = \"STROKEBOX\"\nbind_address = \"127.0.0.1\"\nport = " << box_port
                                 << "\nstudy_quiet_s = 1\n[storage]\ndata_dir = \"" << (dir / "data").string()
                                 << "\"\n[model]\ndir = \"" << STROKEBOX_SOURCE_DIR << "/models/demo\"\n"
                                 << "[board]\nkind = \"sim\"\n[status]\nenabled = false\n"
                                 << "[outbox]\ninitial_backoff_s = 30\n"
                                 << "[[destinations]]\nname = \"pacs\"\nae_title = \"" << orthanc.ae_title()
                                 << "\"\nhost = \"127.0.0.1\"\nport = " << orthanc.dicom_port() << "\n"
                                 << "[[destinations]]\nname = \"dead\"\nae_title = \"NOBODY\"\nhost = \"127.0.0.1\"\n"
                                 << "port = " << dead_port << "\nobjects = [\"sr\"]\n";
  const std::string log = (dir / "daemon.log").string();
  itest::Child daemon({bin, "run", "--config", config.string()}, log);
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = itest::run_command("echoscu -aec STROKEBOX 127.0.0.1 " + std::to_string(box_port) + " 2>/dev/null").exit_code == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(up) << itest::read_file(log);

  // PACS -> box: upload the phantom into Orthanc, then Orthanc sends the study by C-STORE.
  std::string study_id;
  std::set<std::string> input_uids;
  for (const char* series : {"DWI", "ADC"}) {
    for (const auto& entry : fs::directory_iterator(dir / "study" / series)) {
      const nlohmann::json r = orthanc.post("/instances", "", entry.path().string());
      ASSERT_TRUE(r.is_object()) << "upload of " << entry.path() << " failed";
      study_id = r.value("ParentStudy", "");
      input_uids.insert(uid_of(entry.path().string(), DCM_SOPInstanceUID));
    }
  }
  ASSERT_FALSE(study_id.empty());
  const std::string study_uid = uid_of((*fs::directory_iterator(dir / "study" / "DWI")).path().string(), DCM_StudyInstanceUID);
  ASSERT_TRUE(orthanc.store_to("box", study_id)) << itest::read_file(log);

  // Wait until the box has confirmed every item for Orthanc.
  const fs::path db = dir / "data" / "strokebox.db";
  std::string counts;
  for (int i = 0; i < 1200; ++i) {
    ASSERT_TRUE(daemon.running()) << itest::read_file(log);
    counts = sql(db, "SELECT COUNT(*) || '/' || COALESCE(SUM(delivered = 1), 0) FROM outbox WHERE destination = 'pacs'");
    const auto slash = counts.find('/');
    if (slash != std::string::npos && counts.substr(0, slash) != "0" && counts.substr(0, slash) == counts.substr(slash + 1)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  const std::string total = counts.substr(0, counts.find('/'));
  ASSERT_NE(total, "0") << counts << "\n" << itest::read_file(log);
  ASSERT_EQ(counts, total + "/" + total) << itest::read_file(log);
  EXPECT_EQ(sql(db, "SELECT state FROM studies WHERE study_uid = '" + study_uid + "'"), "done");

  // The figure for the note: last instance received -> last result confirmed by Orthanc.
  const double last_received_ms = std::stod(sql(db, "SELECT last_received_ms FROM studies WHERE study_uid = '" + study_uid + "'"));
  const double last_confirmed_s = std::stod(sql(db, "SELECT MAX(delivered_at) FROM outbox WHERE destination = 'pacs'"));
  const double round_trip_ms = last_confirmed_s * 1000.0 - last_received_ms;
  std::printf("last instance received -> last result confirmed by Orthanc: %.0f ms (%s items)\n", round_trip_ms,
              total.c_str());
  ::testing::Test::RecordProperty("receive_to_confirmed_ms", static_cast<int>(round_trip_ms));
  EXPECT_GT(round_trip_ms, 0);

  // Orthanc has SEG, overlay and SR, all in the original study.
  std::map<std::string, int> classes;
  std::set<std::string> returned;
  for (const auto& inst : orthanc.instances()) {
    if (input_uids.count(inst.sop_instance_uid)) continue;
    EXPECT_EQ(inst.study_instance_uid, study_uid) << inst.sop_class_uid;
    ++classes[inst.sop_class_uid];
    returned.insert(inst.sop_instance_uid);
  }
  EXPECT_EQ(classes[UID_SegmentationStorage], 1);
  EXPECT_EQ(classes[UID_EnhancedSRStorage] + classes[UID_ComprehensiveSRStorage], 1);
  EXPECT_GE(classes[UID_SecondaryCaptureImageStorage], 3);
  EXPECT_EQ(std::to_string(returned.size()), total);

  // The refusing destination: its item stays pending with the reason, for `strokebox status`.
  EXPECT_EQ(sql(db, "SELECT COUNT(*) FROM outbox WHERE destination = 'dead' AND delivered = 0"), "1");
  EXPECT_NE(sql(db, "SELECT last_error FROM outbox_destination WHERE name = 'dead'").find("association failed"),
            std::string::npos);

  ASSERT_EQ(WEXITSTATUS(daemon.stop()), 0) << itest::read_file(log);
  orthanc.stop();
  if (::testing::Test::HasFailure()) {
    std::printf("test data kept in %s\n", dir.c_str());
  } else {
    fs::remove_all(dir);
  }
}

}  // namespace
