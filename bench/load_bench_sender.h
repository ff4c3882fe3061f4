// Load generator for the DICOM node (issue 7 part 6), shared by bench/load_bench.cc and the
// NodeLoad integration test: N senders at once, each sending studies of 60..120 instances (one
// association per study, like a scanner), measuring per-instance C-STORE latency, refused
// associations, failure statuses, and afterwards checking that every acknowledged instance is
// in the node's index (no loss). Header-only so the test needs no extra target.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/scu.h>

#include "base/status.h"
#include "storage/index.h"

namespace loadbench {

struct LoadOptions {
  std::string host = "127.0.0.1";
  int port = 11112;
  std::string called_ae = "STROKEBOX";
  std::string calling_ae_prefix = "LOAD";  // sender i calls as LOAD<i>
  int senders = 4;
  double duration_s = 180;     // no new study starts after this; running ones finish
  int min_instances = 60;      // instances per study, uniform in [min, max]
  int max_instances = 120;
  uint64_t seed = 1;
  /// Source studies, each a list of files (MR Image Storage). Each sent study takes one source
  /// (round robin) and cycles through its files, replicating them (new series and SOP UIDs
  /// per copy) up to the study's instance count. Empty: 24 synthetic 64x64 slices.
  std::vector<std::vector<std::string>> sources;
  std::string uid_root = "1.2.826.0.1.3680043.10.999.7";  // + run id, sender, study
};

struct LoadReport {
  int senders = 0;
  double elapsed_s = 0;
  int studies_completed = 0;        // every instance acknowledged with success
  int studies_incomplete = 0;       // association refused/broken or an instance failed
  int64_t instances_acked = 0;      // C-STORE success
  int64_t instances_failed = 0;     // a failure status or a broken association
  int associations_opened = 0;
  int associations_refused = 0;     // A-ASSOCIATE-RJ or connection failure
  int64_t bytes_sent = 0;           // encoded data set bytes of acknowledged instances
  std::vector<double> latency_ms;   // per acknowledged instance (send + response)
  int64_t instances_missing = -1;   // acknowledged but not in the index; -1 = not checked
  std::map<std::string, std::set<std::string>> acked;  // study -> SOP instance UIDs

  double percentile(double p) const {
    if (latency_ms.empty()) return 0;
    std::vector<double> v = latency_ms;
    std::sort(v.begin(), v.end());
    const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5));
    return v[i];
  }
  double studies_per_minute() const { return elapsed_s > 0 ? studies_completed * 60.0 / elapsed_s : 0; }
};

/// A 64x64 16-bit MR slice, the synthetic source.
inline std::unique_ptr<DcmDataset> synthetic_slice(int index) {
  auto ds = std::make_unique<DcmDataset>();
  ds->putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
  ds->putAndInsertString(DCM_PatientID, "LOAD");
  ds->putAndInsertString(DCM_PatientName, "Load^Bench");
  ds->putAndInsertString(DCM_Modality, "MR");
  ds->putAndInsertString(DCM_SeriesDescription, "load bench");
  ds->putAndInsertString(DCM_ImagePositionPatient, ("0\\0\\" + std::to_string(index * 5)).c_str());
  ds->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  ds->putAndInsertString(DCM_PixelSpacing, "3\\3");
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertUint16(DCM_Rows, 64);
  ds->putAndInsertUint16(DCM_Columns, 64);
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 12);
  ds->putAndInsertUint16(DCM_HighBit, 11);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  std::vector<Uint16> pixels(64 * 64);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<Uint16>((i * 7 + index) & 0xFFF);
  ds->putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
  return ds;
}

/// Runs the senders; returns when every sender has finished its last study.
/// Errors: kInvalidArgument (bad options), kNotFound (a source file that does not load).
inline base::Result<LoadReport> run_load(const LoadOptions& o) {
  if (o.senders < 1 || o.min_instances < 1 || o.max_instances < o.min_instances) {
    return base::invalid_argument("load bench: need senders >= 1 and 1 <= min_instances <= max_instances");
  }
  // Sources, loaded once; each sent instance is a copy with new UIDs.
  struct Source {
    std::vector<std::unique_ptr<DcmDataset>> datasets;
    std::vector<int> series;  // index of each file's series (distinct SeriesInstanceUID)
    int series_count = 1;
  };
  std::vector<Source> sources;
  for (const auto& files : o.sources) {
    Source src;
    std::map<std::string, int> series_index;
    for (const std::string& path : files) {
      DcmFileFormat file;
      OFCondition cond = file.loadFile(path.c_str());
      if (cond.bad()) return base::not_found("load bench: cannot load " + path + ": " + cond.text());
      std::unique_ptr<DcmDataset> ds(file.getAndRemoveDataset());
      OFString series;
      ds->findAndGetOFString(DCM_SeriesInstanceUID, series);
      auto [it, inserted] = series_index.emplace(series.c_str(), static_cast<int>(series_index.size()));
      src.series.push_back(it->second);
      src.datasets.push_back(std::move(ds));
    }
    src.series_count = std::max(1, static_cast<int>(series_index.size()));
    if (!src.datasets.empty()) sources.push_back(std::move(src));
  }
  if (sources.empty()) {
    Source src;
    for (int i = 0; i < 24; ++i) {
      src.datasets.push_back(synthetic_slice(i));
      src.series.push_back(0);
    }
    sources.push_back(std::move(src));
  }

  LoadReport report;
  report.senders = o.senders;
  std::mutex mu;
  // DCMTK's DcmItem copy constructor walks the source's element list with the list's own
  // cursor, so two senders copying one shared source dataset at once corrupt the copies
  // (elements twice or missing: a sender once failed an instance with no SOP Class UID).
  std::mutex copy_mu;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(o.duration_s * 1000));
  const std::string run_id = std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() %
      100000000);

  auto sender = [&](int id) {
    std::mt19937_64 rng(o.seed * 1000 + static_cast<uint64_t>(id));
    std::uniform_int_distribution<int> size(o.min_instances, o.max_instances);
    LoadReport mine;
    int study_no = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      const int n = size(rng);
      const std::string study = o.uid_root + "." + run_id + "." + std::to_string(id + 1) + "." + std::to_string(++study_no);
      DcmSCU scu;
      scu.setAETitle((o.calling_ae_prefix + std::to_string(id + 1)).c_str());
      scu.setPeerAETitle(o.called_ae.c_str());
      scu.setPeerHostName(o.host.c_str());
      scu.setPeerPort(static_cast<Uint16>(o.port));
      scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
      scu.setDIMSETimeout(60);
      scu.setACSETimeout(30);
      OFList<OFString> xfers;
      xfers.push_back(UID_LittleEndianExplicitTransferSyntax);
      xfers.push_back(UID_LittleEndianImplicitTransferSyntax);
      scu.addPresentationContext(UID_MRImageStorage, xfers);
      if (scu.initNetwork().bad() || scu.negotiateAssociation().bad()) {
        ++mine.associations_refused;
        ++mine.studies_incomplete;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      ++mine.associations_opened;
      const T_ASC_PresentationContextID pc = scu.findPresentationContextID(UID_MRImageStorage, "");
      const Source& source = sources[static_cast<size_t>(id + study_no) % sources.size()];
      const size_t files = source.datasets.size();
      bool complete = true;
      for (int k = 0; k < n; ++k) {
        const size_t f = static_cast<size_t>(k) % files;
        const int copy = k / static_cast<int>(files);
        std::unique_lock<std::mutex> copying(copy_mu);
        DcmDataset ds(*source.datasets[f]);
        copying.unlock();
        const std::string series = study + "." + std::to_string(1 + copy * source.series_count + source.series[f]);
        const std::string sop = series + "." + std::to_string(k + 1);
        ds.putAndInsertString(DCM_StudyInstanceUID, study.c_str());
        ds.putAndInsertString(DCM_SeriesInstanceUID, series.c_str());
        ds.putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
        ds.putAndInsertString(DCM_PatientID, ("LOAD" + std::to_string(id + 1)).c_str());
        ds.putAndInsertString(DCM_InstanceNumber, std::to_string(k + 1).c_str());
        Uint16 status = 0xFFFF;
        const auto t0 = std::chrono::steady_clock::now();
        OFCondition cond = scu.sendSTORERequest(pc, "", &ds, status);
        const auto t1 = std::chrono::steady_clock::now();
        if (cond.good() && status == STATUS_Success) {
          ++mine.instances_acked;
          mine.latency_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
          mine.bytes_sent += static_cast<int64_t>(ds.calcElementLength(EXS_LittleEndianExplicit, EET_ExplicitLength));
          mine.acked[study].insert(sop);
        } else {
          ++mine.instances_failed;
          complete = false;
          if (cond.bad()) break;  // the association is gone
        }
      }
      if (scu.isConnected()) scu.releaseAssociation();
      if (complete) {
        ++mine.studies_completed;
      } else {
        ++mine.studies_incomplete;
      }
    }
    std::lock_guard lock(mu);
    report.studies_completed += mine.studies_completed;
    report.studies_incomplete += mine.studies_incomplete;
    report.instances_acked += mine.instances_acked;
    report.instances_failed += mine.instances_failed;
    report.associations_opened += mine.associations_opened;
    report.associations_refused += mine.associations_refused;
    report.bytes_sent += mine.bytes_sent;
    report.latency_ms.insert(report.latency_ms.end(), mine.latency_ms.begin(), mine.latency_ms.end());
    for (auto& [study, sops] : mine.acked) report.acked[study].insert(sops.begin(), sops.end());
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < o.senders; ++i) threads.emplace_back(sender, i);
  for (auto& t : threads) t.join();
  report.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

/// Counts acknowledged instances that are not in the index at `db_path` (read-only; the node
/// may still be running). Sets report.instances_missing.
inline base::Status check_index(const std::string& db_path, LoadReport& report) {
  SB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Index> index, storage::Index::open_read_only(db_path));
  int64_t missing = 0;
  for (const auto& [study, sops] : report.acked) {
    SB_ASSIGN_OR_RETURN(std::vector<storage::InstanceRecord> rows, index->instances_of_study(study));
    std::set<std::string> have;
    for (const auto& r : rows) {
      if (std::filesystem::exists(r.path)) have.insert(r.sop_instance_uid);
    }
    for (const auto& sop : sops) missing += have.count(sop) ? 0 : 1;
  }
  report.instances_missing = missing;
  return base::Status();
}

/// The table printed by the benchmark.
inline void print_report(const LoadReport& r, FILE* out = stdout) {
  std::fprintf(out, "%-34s %12s\n", "metric", "value");
  auto row = [&](const char* name, const std::string& value) { std::fprintf(out, "%-34s %12s\n", name, value.c_str()); };
  auto num = [](double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
    return std::string(buf);
  };
  row("senders", std::to_string(r.senders));
  row("elapsed s", num(r.elapsed_s, 1));
  row("studies completed", std::to_string(r.studies_completed));
  row("studies incomplete", std::to_string(r.studies_incomplete));
  row("studies per minute", num(r.studies_per_minute(), 1));
  row("instances acknowledged", std::to_string(r.instances_acked));
  row("instances failed", std::to_string(r.instances_failed));
  row("instances per second", num(r.elapsed_s > 0 ? r.instances_acked / r.elapsed_s : 0, 1));
  row("MB/s (data sets)", num(r.elapsed_s > 0 ? r.bytes_sent / 1e6 / r.elapsed_s : 0, 2));
  row("associations opened", std::to_string(r.associations_opened));
  row("associations refused", std::to_string(r.associations_refused));
  row("store latency median ms", num(r.percentile(50), 2));
  row("store latency p99 ms", num(r.percentile(99), 2));
  row("store latency max ms", num(r.percentile(100), 2));
  row("acknowledged but not indexed", r.instances_missing < 0 ? "unchecked" : std::to_string(r.instances_missing));
}

}  // namespace loadbench
