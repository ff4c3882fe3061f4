// Crash harness: the real daemon (`strokebox run`, simulated board, demo model) receives one new
// phantom-derived study per cycle from storescu while it is killed with SIGKILL at a random
// point: during receive, during processing, while sending results to a real Orthanc
// ([[destinations]]), or when idle; it is restarted at once and the sender resends whatever
// was not acknowledged. After every cycle: every instance the sender got Success for is indexed
// and its spool file is complete, and `PRAGMA integrity_check` is ok. At the end: every study
// reached done/failed exactly once (one finished job, one result row), and Orthanc holds no
// duplicate study or result series (resending the same SOP instance is allowed).
//
// Cycles: STROKEBOX_CRASH_CYCLES (default 3, the ctest run: about a minute);
// bench/crash_soak.sh runs 50.
// The first three cycles kill during receive, processing and sending; later kill points are
// random from STROKEBOX_CRASH_SEED (default 1; printed for a rerun). Studies keep the middle
// STROKEBOX_CRASH_SLICES (16) slices of each phantom series so that a cycle stays short.
#include <gtest/gtest.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/database.h"
#include "tests/integration/orthanc.h"
#include "tests/integration/process.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = STROKEBOX_BINARY;
const std::string kModel = std::string(STROKEBOX_SOURCE_DIR) + "/models/demo";
constexpr int kBaseSeeds[] = {401, 402};
constexpr auto kWaitLimit = std::chrono::seconds(300);  // hang guard only, never a pass criterion

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

std::string new_uid() {
  char buf[100];
  dcmGenerateUniqueIdentifier(buf, SITE_INSTANCE_UID_ROOT);
  return buf;
}

/// One study to send: its files and the SOP Instance UID of each.
struct Study {
  std::string study_uid;
  std::vector<std::string> files;
  std::map<std::string, std::string> sop_of;  // file -> SOP Instance UID
};

/// A new study made from a phantom study by giving it new study, series and instance UIDs; only
/// the middle `slices` slices of each series are kept (contiguous, so still a valid volume),
/// which keeps a cycle short on a small machine.
Study derive_study(const fs::path& base, const fs::path& out, int slices) {
  Study s;
  s.study_uid = new_uid();
  std::map<std::string, std::string> series;
  fs::create_directories(out);
  std::vector<fs::path> in;
  for (const char* sub : {"DWI", "ADC"}) {
    std::vector<fs::path> all;
    for (const auto& e : fs::directory_iterator(base / sub)) all.push_back(e.path());
    std::sort(all.begin(), all.end());  // 0001.dcm, 0002.dcm ... in slice order
    const size_t keep = std::min(all.size(), static_cast<size_t>(std::max(1, slices)));
    const size_t first = (all.size() - keep) / 2;
    in.insert(in.end(), all.begin() + static_cast<long>(first), all.begin() + static_cast<long>(first + keep));
  }
  int n = 0;
  for (const auto& f : in) {
    DcmFileFormat ff;
    if (ff.loadFile(f.c_str()).bad()) continue;
    DcmDataset* ds = ff.getDataset();
    OFString old_series;
    ds->findAndGetOFString(DCM_SeriesInstanceUID, old_series);
    auto [it, added] = series.emplace(old_series.c_str(), "");
    if (added) it->second = new_uid();
    const std::string sop = new_uid();
    ds->putAndInsertString(DCM_StudyInstanceUID, s.study_uid.c_str());
    ds->putAndInsertString(DCM_SeriesInstanceUID, it->second.c_str());
    ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
    const fs::path target = out / (std::to_string(n++) + ".dcm");
    if (ff.saveFile(target.c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0,
                    EWM_updateMeta).bad())
      continue;
    s.files.push_back(target.string());
    s.sop_of[target.string()] = sop;
  }
  return s;
}

/// storescu -v output -> files that got a Success response.
std::set<std::string> acknowledged(const std::string& output) {
  std::set<std::string> out;
  static const std::regex sending(R"(Sending file: (\S+))");
  static const std::regex response(R"(Received Store Response \(([^)]*)\))");
  std::string current;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, sending)) {
      current = m[1];
    } else if (std::regex_search(line, m, response) && !current.empty()) {
      if (m[1] == "Success") out.insert(current);
      current.clear();
    }
  }
  return out;
}

/// Read-only look at the daemon's database (a fresh connection per call, like `strokebox status`).
class Db {
 public:
  explicit Db(std::string path) : path_(std::move(path)) {}
  /// Rows of `sql` as strings; empty when the file cannot be opened yet.
  std::vector<std::vector<std::string>> rows(const std::string& sql, const std::vector<std::string>& args = {}) const {
    std::vector<std::vector<std::string>> out;
    storage::Database::Options o;
    o.read_only = true;
    auto db = storage::Database::open(path_, o);
    if (!db.ok()) return out;
    auto st = (*db)->prepare(sql);
    if (!st.ok()) return out;
    for (size_t i = 0; i < args.size(); ++i) st->bind(static_cast<int>(i + 1), args[i]);
    while (true) {
      auto row = st->step();
      if (!row.ok() || !*row) break;
      std::vector<std::string> r;
      // Statement has no column count: every query here has at most 4 columns, and reading
      // past the last one gives "".
      for (int c = 0; c < 4; ++c) r.push_back(st->column_text(c));
      out.push_back(std::move(r));
    }
    return out;
  }
  std::string scalar(const std::string& sql, const std::vector<std::string>& args = {}) const {
    auto r = rows(sql, args);
    return r.empty() || r[0].empty() ? "" : r[0][0];
  }

 private:
  std::string path_;
};

class Crash : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = fs::temp_directory_path() / ("strokebox-crash-" + std::to_string(::getpid()));
    fs::remove_all(work_);
    fs::create_directories(work_);
    data_ = work_ / "data";
  }
  void TearDown() override {
    daemon_.reset();
    if (orthanc_) orthanc_->stop();
    if (::testing::Test::HasFailure() || std::getenv("STROKEBOX_KEEP_TEST_DATA")) {
      std::printf("test data kept in %s\n", work_.c_str());
      return;
    }
    fs::remove_all(work_);
  }

  void write_config() {
    std::ofstream c(work_ / "strokebox.toml");
    c << "[dicom]\nport = " << port_ << "\nbind_address = \"127.0.0.1\"\nae_title = \"STROKEBOX\"\n"
      << "study_quiet_s = 2\n"
      << "[storage]\ndata_dir = \"" << data_.string() << "\"\nmin_free_mb = 16\n"
      << "[model]\ndir = \"" << kModel << "\"\n[board]\nkind = \"sim\"\n[status]\nenabled = false\n"
      << "[jobs]\nmax_attempts = 3\nretry_delay_s = 0.5\n"
      << "[outbox]\ninitial_backoff_s = 0.5\nmax_backoff_s = 2\n";
    if (orthanc_) {
      c << "[[destinations]]\nname = \"pacs\"\nae_title = \"" << orthanc_->ae_title() << "\"\nhost = \"127.0.0.1\"\n"
        << "port = " << orthanc_->dicom_port() << "\n";
    }
  }

  bool echo() const {
    return itest::run_command("echoscu -to 2 -aec STROKEBOX 127.0.0.1 " + std::to_string(port_) + " 2>/dev/null")
               .exit_code == 0;
  }

  /// Starts the daemon (appending to its log) and waits for C-ECHO.
  void start_daemon() {
    const std::string log = (work_ / ("daemon." + std::to_string(starts_++) + ".log")).string();
    daemon_ = std::make_unique<itest::Child>(
        std::vector<std::string>{kBin, "run", "--config", (work_ / "strokebox.toml").string()}, log);
    const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
    while (!echo()) {
      ASSERT_TRUE(daemon_->running()) << "daemon exited at start:\n" << itest::read_file(log);
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "daemon did not answer C-ECHO";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  /// Sends `study` until every file is acknowledged, resending the rest after failures.
  void send_all(const Study& study, std::atomic<bool>& abort) {
    std::set<std::string> pending(study.files.begin(), study.files.end());
    while (!pending.empty() && !abort) {
      std::string cmd = "storescu -v -nh -to 5 -ta 5 -aec STROKEBOX 127.0.0.1 " + std::to_string(port_);
      for (const auto& f : pending) cmd += " " + f;
      auto r = itest::run_command(cmd + " 2>&1");
      for (const auto& f : acknowledged(r.output)) {
        std::lock_guard lock(mu_);
        acked_[f] = study.sop_of.at(f);
        pending.erase(f);
      }
      if (!pending.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  /// Every acknowledged instance so far is indexed with a complete spool file; integrity ok.
  /// No temporary file is left unless `temp_files_allowed`: right after a SIGKILL a write that
  /// was cut off legitimately leaves its `.tmp-` file, which the next start removes (checked at
  /// the end of the cycle, after the restart).
  void check_durable(const std::string& when, bool temp_files_allowed = false) {
    Db db((data_ / "strokebox.db").string());
    EXPECT_EQ(db.scalar("PRAGMA integrity_check"), "ok") << when;
    std::map<std::string, std::string> acked;
    {
      std::lock_guard lock(mu_);
      acked = acked_;
    }
    std::map<std::string, std::string> path_of;
    for (const auto& r : db.rows("SELECT sop_instance_uid, path FROM instances")) path_of[r[0]] = r[1];
    for (const auto& [file, sop] : acked) {
      auto it = path_of.find(sop);
      ASSERT_NE(it, path_of.end()) << when << ": acknowledged instance " << sop << " (" << file << ") is not indexed";
      std::error_code ec;
      const uintmax_t size = fs::file_size(it->second, ec);
      ASSERT_FALSE(ec) << when << ": spool file of acknowledged instance " << sop << " is missing: " << it->second;
      auto verified = verified_size_.find(sop);
      if (verified == verified_size_.end()) {
        // First sight: the whole file must parse and carry the instance's UID.
        DcmFileFormat ff;
        ASSERT_TRUE(ff.loadFile(it->second.c_str()).good()) << when << ": spool file unreadable: " << it->second;
        OFString uid;
        ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
        ASSERT_EQ(std::string(uid.c_str()), sop) << it->second;
        verified_size_[sop] = size;
      } else {
        ASSERT_EQ(size, verified->second) << when << ": spool file changed size: " << it->second;
      }
    }
    for (const auto& e : fs::recursive_directory_iterator(data_ / "spool")) {
      if (e.path().filename().string().rfind(".tmp-", 0) != 0) continue;
      if (temp_files_allowed) {
        ++temp_files_after_kill_;
      } else {
        ADD_FAILURE() << when << ": temp file " << e.path();
      }
    }
    ++checks_;
  }

  std::string state_of(const std::string& uid) const {
    return Db((data_ / "strokebox.db").string()).scalar("SELECT state FROM studies WHERE study_uid = ?1", {uid});
  }
  int pending_sends(const std::string& uid) const {
    if (!orthanc_) return 0;
    const std::string n = Db((data_ / "strokebox.db").string())
                              .scalar("SELECT COUNT(*) FROM outbox WHERE study_uid = ?1 AND delivered = 0", {uid});
    return n.empty() ? 0 : std::stoi(n);
  }
  int queued_sends(const std::string& uid) const {
    if (!orthanc_) return 0;
    const std::string n =
        Db((data_ / "strokebox.db").string()).scalar("SELECT COUNT(*) FROM outbox WHERE study_uid = ?1", {uid});
    return n.empty() ? 0 : std::stoi(n);
  }

  fs::path work_, data_;
  int port_ = 0;
  int starts_ = 0;
  int checks_ = 0;
  int temp_files_after_kill_ = 0;  // cut-off writes seen right after a SIGKILL (removed at restart)
  std::unique_ptr<itest::Child> daemon_;
  std::unique_ptr<itest::Orthanc> orthanc_;
  std::mutex mu_;
  std::map<std::string, std::string> acked_;  // sent file -> SOP Instance UID, acknowledged
  std::map<std::string, uintmax_t> verified_size_;  // SOP Instance UID -> spool file size once parsed
};

TEST_F(Crash, SigkillAtRandomPointsLosesNothingAndProcessesEachStudyOnce) {
  const int cycles = env_int("STROKEBOX_CRASH_CYCLES", 3);
  const unsigned seed = static_cast<unsigned>(env_int("STROKEBOX_CRASH_SEED", 1));
  const int slices = env_int("STROKEBOX_CRASH_SLICES", 16);
  std::mt19937 rng(seed);
  std::printf("crash harness: %d cycles, seed %u\n", cycles, seed);
  std::fflush(stdout);  // before any fork: a child's stdio must not repeat the buffer

  for (int s : kBaseSeeds) {
    auto r = itest::run_command(kBin + " phantom --format dicom --seed " + std::to_string(s) + " --out " +
                                (work_ / ("base" + std::to_string(s))).string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  if (itest::have_orthanc()) {
    orthanc_ = std::make_unique<itest::Orthanc>(work_ / "orthanc", std::map<std::string, itest::Orthanc::Modality>{});
    ASSERT_TRUE(orthanc_->start()) << itest::read_file((work_ / "orthanc" / "orthanc.log").string());
  } else {
    std::printf("no Orthanc (Debian package orthanc): kills while sending are not exercised\n");
  }
  port_ = itest::free_port();
  write_config();
  start_daemon();
  if (HasFatalFailure()) return;

  std::map<std::string, int> kills;  // phase -> count
  std::vector<Study> studies;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    const int base = kBaseSeeds[cycle % 2];
    studies.push_back(derive_study(work_ / ("base" + std::to_string(base)), work_ / ("study" + std::to_string(cycle)),
                                   slices));
    const Study& study = studies.back();
    ASSERT_GE(study.files.size(), 2u * std::min(slices, 20));

    std::atomic<bool> abort{false};
    std::thread sender([&] { send_all(study, abort); });

    // Where this cycle's kill lands. "sending" only with a destination.
    // The first three cycles cover receive, processing and sending; then the point is random.
    const char* phases[] = {"receive", "processing", "sending", "idle"};
    std::string phase = phases[cycle < 3 ? cycle : std::uniform_int_distribution<int>(0, 3)(rng)];
    if (!orthanc_ && phase == "sending") phase = "processing";
    const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
    auto wait_for = [&](const std::function<bool()>& condition) {
      while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return true;
    };
    bool killed = true;
    if (phase == "receive") {
      // Somewhere inside the transfer (about 100 ms per instance here: three fsyncs each).
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 2000)(rng)));
    } else if (phase == "processing") {
      ASSERT_TRUE(wait_for([&] { return state_of(study.study_uid) == "running"; })) << "study never ran";
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    } else if (phase == "sending") {
      ASSERT_TRUE(wait_for([&] { return queued_sends(study.study_uid) > 0 || state_of(study.study_uid) == "failed"; }));
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 800)(rng)));
    } else {
      killed = false;
    }
    if (killed) {
      const std::string state = state_of(study.study_uid);
      daemon_->kill_hard();
      ++kills[phase];
      std::printf("cycle %d: SIGKILL during %s (study %s, outbox %d pending)\n", cycle, phase.c_str(),
                  state.empty() ? "not yet indexed" : state.c_str(), pending_sends(study.study_uid));
      std::fflush(stdout);
      check_durable("cycle " + std::to_string(cycle) + " right after SIGKILL", /*temp_files_allowed=*/true);
      start_daemon();
      if (HasFatalFailure()) {
        abort = true;
        sender.join();
        return;
      }
    }
    sender.join();
    // The cycle ends when the study is final and its results are delivered.
    ASSERT_TRUE(wait_for([&] {
      const std::string s = state_of(study.study_uid);
      return (s == "done" || s == "failed") && pending_sends(study.study_uid) == 0 &&
             (s == "failed" || !orthanc_ || queued_sends(study.study_uid) > 0);
    })) << "study " << study.study_uid << " is " << state_of(study.study_uid) << " with "
        << pending_sends(study.study_uid) << " item(s) unsent after " << kWaitLimit.count() << " s";
    check_durable("end of cycle " + std::to_string(cycle));
    if (HasFatalFailure()) return;
  }

  // Exactly once: one finished job and one result row per study, all instances indexed.
  Db db((data_ / "strokebox.db").string());
  std::map<std::string, std::string> final_state;
  for (const Study& s : studies) {
    const std::string state = state_of(s.study_uid);
    final_state[s.study_uid] = state;
    EXPECT_TRUE(state == "done" || state == "failed") << s.study_uid << " is " << state;
    EXPECT_EQ(db.scalar("SELECT COUNT(*) FROM jobs WHERE study_uid = ?1", {s.study_uid}), "1") << s.study_uid;
    EXPECT_EQ(db.scalar("SELECT COUNT(*) FROM jobs WHERE study_uid = ?1 AND state IN ('done', 'failed')",
                        {s.study_uid}), "1") << s.study_uid;
    EXPECT_EQ(db.scalar("SELECT COUNT(*) FROM results WHERE study_uid = ?1", {s.study_uid}), "1") << s.study_uid;
    EXPECT_EQ(db.scalar("SELECT COUNT(*) FROM instances WHERE study_uid = ?1", {s.study_uid}),
              std::to_string(s.files.size())) << s.study_uid;
  }
  EXPECT_EQ(db.scalar("SELECT COUNT(*) FROM studies"), std::to_string(studies.size()));

  int done = 0, failed = 0;
  for (const auto& [uid, state] : final_state) (state == "done" ? done : failed)++;
  std::printf("crash harness: %d cycles, kills: receive %d, processing %d, sending %d (idle cycles %d); "
              "%d daemon starts; %d durability checks; %zu instances acknowledged, all indexed; "
              "studies done %d, failed %d; %d cut-off temp file(s) seen after a kill, all removed at restart\n",
              cycles, kills["receive"], kills["processing"], kills["sending"],
              cycles - kills["receive"] - kills["processing"] - kills["sending"], starts_, checks_, acked_.size(), done,
              failed, temp_files_after_kill_);

  if (orthanc_) {
    // No duplicate studies (Orthanc keys studies by Study Instance UID: a result sent under a new
    // study would be a new study) and no result series twice (a second processing would send
    // SEG, SR and overlay again under new series UIDs).
    const json orthanc_studies = orthanc_->get("/studies?expand");
    ASSERT_TRUE(orthanc_studies.is_array());
    std::map<std::string, std::string> uid_of_id;
    for (const auto& s : orthanc_studies) uid_of_id[s["ID"]] = s["MainDicomTags"].value("StudyInstanceUID", "");
    std::map<std::string, std::map<std::string, int>> series_per_study;  // study -> modality -> series
    const json series = orthanc_->get("/series?expand");
    ASSERT_TRUE(series.is_array());
    size_t instances = 0;
    for (const auto& s : series) {
      series_per_study[uid_of_id[s["ParentStudy"]]][s["MainDicomTags"].value("Modality", "?")]++;
      instances += s["Instances"].size();
    }
    EXPECT_EQ(orthanc_studies.size(), static_cast<size_t>(done)) << orthanc_studies.dump();
    for (const auto& [uid, modalities] : series_per_study) {
      ASSERT_TRUE(final_state.count(uid)) << "Orthanc holds study " << uid << " that was never sent to the box";
      EXPECT_EQ(final_state[uid], "done") << uid;
      int total = 0;
      for (const auto& [modality, n] : modalities) {
        total += n;
        if (modality == "SEG" || modality == "SR") {
          EXPECT_EQ(n, 1) << uid << ": " << modality << " series sent " << n << " times";
        }
      }
      EXPECT_EQ(total, 3) << uid << ": expected SEG, SR and one overlay series";
    }
    std::printf("destination: %zu studies, %zu series, %zu instances in Orthanc, no duplicates\n",
                orthanc_studies.size(), series.size(), instances);
  }
  daemon_->stop();
}

}  // namespace
