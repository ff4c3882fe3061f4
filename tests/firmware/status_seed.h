// Test helper: a data directory as a running daemon leaves it, built through the library
// (storage::Index, firmware::Telemetry on the sim board, firmware::Outbox) plus a telemetry
// history over the last 50 minutes and an overlay series for the last finished study. Used by
// the status report, status server and Chromium status page tests.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "base/status.h"
#include "firmware/config.h"
#include "firmware/outbox.h"
#include "firmware/telemetry.h"
#include "hal/sim_board.h"
#include "image/nifti_io.h"
#include "storage/database.h"
#include "storage/index.h"

namespace status_seed {

inline constexpr const char* kDoneStudy = "1.2.826.0.1.3680043.10.543.1";     // newest, done
inline constexpr const char* kFailedStudy = "1.2.826.0.1.3680043.10.543.2";   // failed
inline constexpr const char* kOlderStudy = "1.2.826.0.1.3680043.10.543.3";    // done, older
inline constexpr const char* kPatientId = "PAT-SECRET-42";
inline constexpr const char* kFailReason = "ADC series missing: only DWI received";
inline constexpr double kLesionMl = 12.3;
inline constexpr int kHistoryMinutes = 50;
/// Overlay frames written: 0001.dcm is 4x4, 0002.dcm (the slice with the most lesion) 6x5.
inline constexpr int kBestWidth = 6, kBestHeight = 5;

#define SEED_CHECK(expr)                                                         \
  do {                                                                           \
    ::base::Status seed_status_ = (expr);                                        \
    if (!seed_status_.ok()) return seed_status_.with_context(#expr);             \
  } while (0)

inline base::Status write_rgb_frame(const std::filesystem::path& path, int width, int height, uint8_t red) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, ("1.2.826.0.1.3680043.10.543.9." + path.stem().string()).c_str());
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 3);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "RGB");
  ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(height));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(width));
  ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  ds->putAndInsertUint16(DCM_BitsStored, 8);
  ds->putAndInsertUint16(DCM_HighBit, 7);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  std::vector<Uint8> px(static_cast<size_t>(width * height * 3), 40);
  for (size_t i = 0; i < px.size(); i += 3) px[i] = red;
  ds->putAndInsertUint8Array(DCM_PixelData, px.data(), static_cast<unsigned long>(px.size()));
  OFCondition c = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
  if (c.bad()) return base::internal_error(path.string() + ": " + c.text());
  return base::ok_status();
}

inline storage::InstanceRecord instance(const std::string& study, int n, int64_t t_ms) {
  storage::InstanceRecord r;
  r.sop_instance_uid = study + ".1." + std::to_string(n);
  r.sop_class_uid = UID_MRImageStorage;
  r.study_uid = study;
  r.series_uid = study + ".1";
  r.patient_id = kPatientId;
  r.path = "/spool/" + r.sop_instance_uid + ".dcm";
  r.size_bytes = 1000;
  r.received_at_ms = t_ms;
  r.calling_ae = "SCANNER";
  return r;
}

/// Runs one study through the index: received, queued, claimed, completed with `result`.
inline base::Status finish_study(storage::Index& index, const std::string& uid, int64_t t_ms, storage::ResultRow result) {
  for (int n = 1; n <= 3; ++n) SEED_CHECK(index.add_instance(instance(uid, n, t_ms)));
  auto queued = index.enqueue_study(uid, t_ms + 1);
  if (!queued.ok()) return queued.status();
  auto job = index.claim_next_job(t_ms + 2);
  if (!job.ok()) return job.status();
  if (!job->has_value()) return base::internal_error("no job claimed for " + uid);
  result.study_uid = uid;
  result.job_id = (*job)->id;
  result.finished_at_ms = t_ms + 3;
  return index.complete_job(**job, std::move(result));
}

/// Builds everything under config.storage.data_dir (which must not exist yet or be empty).
/// `sim` supplies the live sample (set its temperatures first to control the figures).
inline base::Status seed(const firmware::Config& config, hal::SimBoard& sim) {
  namespace fs = std::filesystem;
  fs::create_directories(config.results_dir());
  const int64_t now = storage::now_ms();
  {
    auto index = storage::Index::open(config.database_path());
    if (!index.ok()) return index.status();
    storage::ResultRow older;
    older.status = "done";
    older.lesion_volume_ml = 3.4;
    older.lesion_count = 1;
    older.model_id = "isles22-phantom";
    older.backend = "cpu-onednn";
    older.precision = "fp32";
    older.timings_json = R"({"receive": 900, "load": 400, "inference": 20000, "write": 600})";
    SEED_CHECK(finish_study(**index, kOlderStudy, now - 40 * 60'000, older));
    storage::ResultRow failed;
    failed.status = "failed";
    failed.reason = kFailReason;
    SEED_CHECK(finish_study(**index, kFailedStudy, now - 20 * 60'000, failed));
    storage::ResultRow done = older;
    done.lesion_volume_ml = kLesionMl;
    done.lesion_count = 2;
    done.timings_json = R"({"receive": 1000, "load": 500, "inference": 30000, "write": 700})";
    done.energy_j = 321.0;
    done.mean_power_mw = 10'700;
    done.peak_power_mw = 14'200;
    done.peak_temp_c = 63.5;
    SEED_CHECK(finish_study(**index, kDoneStudy, now - 5 * 60'000, done));
  }
  {
    std::vector<firmware::Destination> dests = {{"pacs-main", "PACS", "127.0.0.1", 1, {"seg", "overlay", "sr"}}};
    firmware::OutboxOptions o;
    o.acse_timeout_s = 2;
    auto box = firmware::Outbox::open(config.database_path(), dests, o);
    if (!box.ok()) return box.status();
    const fs::path seg = fs::path(config.results_dir()) / kDoneStudy / "seg.dcm";
    fs::create_directories(seg.parent_path());
    SEED_CHECK(write_rgb_frame(seg, 2, 2, 0));
    auto n = (*box)->enqueue("seg", seg.string(), UID_SecondaryCaptureImageStorage, "1.2.826.0.1.3680043.10.543.8");
    if (!n.ok()) return n.status();
    auto sent = (*box)->send_due();  // port 1 refuses: a failure with its reason
    if (!sent.ok()) return sent.status();
  }
  // The overlay of the newest finished study: the mask's lesion is on slice k = 1.
  const fs::path out = fs::path(config.results_dir()) / kDoneStudy;
  fs::create_directories(out / "overlay");
  SEED_CHECK(write_rgb_frame(out / "overlay" / "0001.dcm", 4, 4, 10));
  SEED_CHECK(write_rgb_frame(out / "overlay" / "0002.dcm", kBestWidth, kBestHeight, 250));
  SEED_CHECK(write_rgb_frame(out / "overlay" / "0003.dcm", 3, 3, 10));
  image::Grid g;
  g.dims = {4, 4, 3};
  image::VolumeU8 mask(g, 0);
  mask.at(1, 1, 1) = mask.at(2, 1, 1) = mask.at(2, 2, 1) = 1;
  mask.at(0, 0, 2) = 1;
  SEED_CHECK(image::write_nifti((out / "lesion_mask.nii.gz").string(), mask));

  // Telemetry: schema by Telemetry::open, a history written straight into the ring, then a
  // live sample and the daemon's state row (this process stands in for the daemon).
  firmware::TelemetryOptions t;
  t.db_path = config.telemetry_path();
  t.disk_path = config.storage.data_dir;
  { auto tel = firmware::Telemetry::open(t, sim); if (!tel.ok()) return tel.status(); }
  {
    auto db = storage::Database::open(config.telemetry_path());
    if (!db.ok()) return db.status();
    const int n = kHistoryMinutes * 6;  // one sample per 10 s
    for (int i = 0; i < n; ++i) {
      auto st = (*db)->prepare("INSERT INTO samples (slot, seq, t_ms, max_temp_c, vdd_in_mw) VALUES (?, ?, ?, ?, ?)");
      if (!st.ok()) return st.status();
      const double temp = 45.0 + 15.0 * std::sin(i / 40.0);  // 30..60 C
      st->bind(1, i).bind(2, i).bind(3, now - static_cast<int64_t>(n - i) * 10'000).bind(4, temp);
      if (i % 50 == 7) {
        st->bind_null(5);  // a missing reading: a gap, never 0
      } else {
        st->bind(5, static_cast<int64_t>(6000 + (i % 30) * 200));
      }
      SEED_CHECK(st->run());
    }
  }
  auto tel = firmware::Telemetry::open(t, sim);
  if (!tel.ok()) return tel.status();
  firmware::DaemonStateRow row;
  row.pid = ::getpid();
  row.version = STROKEBOX_VERSION;
  row.started_ms = now - 3 * 3600'000 - 125'000;
  row.board = sim.name();
  row.power_mode_id = 8;
  row.power_mode_name = "MODE_20W_6CORE";
  row.expected_power_mode = 8;
  (*tel)->set_daemon_state(row, [] {
    return std::string(R"({"threads": [{"name": "dicom", "stale": false}, {"name": "worker", "stale": false},)"
                       R"( {"name": "sampler", "stale": false}], "thermal_hold": false, "current_study": "",)"
                       R"( "engine": {"backend": "cpu-onednn", "precision": "fp32", "arena_bytes": 268435456}})");
  });
  auto s = (*tel)->sample_now();
  return s.status();
}

#undef SEED_CHECK

}  // namespace status_seed
