// Bad input through the real node: every DICOM test file Debian ships with python3-pydicom and
// python3-nibabel (many vendors and edge cases: big endian, deflated, JPEG, JPEG 2000, JPEG-LS,
// RLE, truncated, no meta header, bad VRs, Siemens mosaic, multi-frame, SEG, SR, RT, DICOMDIR)
// is sent by DCMTK's storescu to `strokebox run` (sim board). The node must never crash or
// hang, must answer every file it receives with a DIMSE status, and every study built from
// them must end as processed or failed with a reason. One synthetic study goes end to end
// too: DWI b0 and b1000 mixed in one series and no ADC series (ADC derived, split by b-value).
// STROKEBOX_UPDATE_DOCS=1 rewrites the corpus table in docs/bad_input.md.
#include <gtest/gtest.h>

#include <dcmtk/dcmdata/dctk.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/process.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = STROKEBOX_BINARY;
const std::string kModel = std::string(STROKEBOX_SOURCE_DIR) + "/models/demo";
const std::string kDoc = std::string(STROKEBOX_SOURCE_DIR) + "/docs/bad_input.md";

/// One corpus file and what happened to it.
struct Case {
  std::string name;     // e.g. "pydicom/test_files/CT_small.dcm"
  fs::path path;        // the file sent (decompressed copy for .gz)
  std::string study_uid;
  std::string sent;     // "stored" | "refused" | "not sent"
  std::string detail;   // DIMSE status text or storescu's reason
  std::string study;    // "processed" | "failed: reason" | "" (no study)
  std::string raw;      // storescu's output when nothing was stored
};

/// Single quotes for a shell word.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

std::string first_line_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.find(needle) != std::string::npos) return trim(line);
  return {};
}

/// Interprets storescu -v output for one file.
void classify_send(const std::string& out, Case& c) {
  const std::string response = first_line_with(out, "Received Store Response");
  if (!response.empty()) {
    // "I: Received Store Response (Success)" / "(Error: ...)" / "(Warning...)" / "(Refused...)".
    const size_t open = response.find('('), close = response.rfind(')');
    c.detail = open != std::string::npos && close > open ? response.substr(open + 1, close - open - 1) : response;
    c.sent = (c.detail.rfind("Success", 0) == 0 || c.detail.rfind("Warning", 0) == 0) ? "stored" : "refused";
    const std::string status = first_line_with(out, "DIMSE Status");
    if (!status.empty()) c.detail += " [" + status.substr(status.find("DIMSE Status")) + "]";
    return;
  }
  // The node accepts the storage SOP classes it can use (MR and a few others): for the rest it
  // rejects the presentation context during association negotiation (PS3.8 9.3.3.2), which is
  // its proper refusal; storescu then has nothing to send the file on.
  const std::string no_context = first_line_with(out, "No presentation context for:");
  if (!no_context.empty()) {
    c.sent = "refused";
    c.detail = "presentation context rejected (" + no_context.substr(no_context.find("for:") + 5) + ")";
    return;
  }
  // No response: storescu could not read or convert the file (the errors say why).
  c.sent = "not sent";
  std::istringstream in(out);
  std::string line, reason;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.rfind("E: ", 0) != 0 || line.find("Store SCU Failed") != std::string::npos) continue;
    if (line.find("Store Failed, file:") != std::string::npos) continue;
    std::string text = line.substr(3);
    const std::string path = c.path.string();  // the file is named in the table already
    for (size_t at = text.find(path); at != std::string::npos; at = text.find(path)) text.replace(at, path.size(), "(file)");
    reason += (reason.empty() ? "" : "; ") + text;
  }
  c.detail = reason.empty() ? "storescu sent nothing" : reason;
  c.raw = out;
}

/// StudyInstanceUID of a file, read leniently as storescu does (empty if unreadable).
std::string study_uid_of(const fs::path& p) {
  DcmFileFormat ff;
  if (ff.loadFile(p.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) return {};
  OFString uid;
  ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, uid);
  return uid.c_str();
}

/// storescu's flag proposing the file's own (compressed) transfer syntax next to the
/// uncompressed ones; by default storescu proposes only uncompressed ones and would try to
/// decompress the file itself.
std::string propose_flag_for(const fs::path& p) {
  DcmFileFormat ff;
  if (ff.loadFile(p.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) return "";
  switch (ff.getDataset()->getOriginalXfer()) {
    case EXS_RLELossless: return "-xr";
    case EXS_JPEGProcess14SV1: return "-xs";
    case EXS_JPEGProcess1: return "-xy";
    case EXS_JPEGProcess2_4: return "-xx";
    case EXS_JPEGLSLossless: return "-xt";
    case EXS_JPEGLSLossy: return "-xu";
    case EXS_JPEG2000LosslessOnly: return "-xv";
    case EXS_JPEG2000: return "-xw";
    case EXS_DeflatedLittleEndianExplicit: return "-xd";
    default: return "";
  }
}

/// Rows of `sql` on the daemon's database as "a|b|c" lines (sqlite3, read-only).
std::vector<std::string> query(const fs::path& db, const std::string& sql) {
  auto r = itest::run_command("sqlite3 -readonly " + quote(db.string()) + " " + quote(sql) + " 2>&1");
  std::vector<std::string> rows;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(line);
  return rows;
}

/// Writes a b=0 series into `dwi_dir` next to the phantom's b=1000 images, same series: S0 =
/// S1000 * exp(b * ADC) from the phantom's ADC slice at the same position, each file with its
/// own rescale slope so that the larger S0 fits 16 bits.
void add_b0_to_dwi_series(const fs::path& dwi_dir, const fs::path& adc_dir) {
  std::map<std::string, fs::path> adc_by_position;
  for (const auto& e : fs::directory_iterator(adc_dir)) {
    DcmFileFormat ff;
    ASSERT_TRUE(ff.loadFile(e.path().c_str()).good());
    OFString ipp;
    ff.getDataset()->findAndGetOFStringArray(DCM_ImagePositionPatient, ipp);
    adc_by_position[ipp.c_str()] = e.path();
  }
  std::vector<fs::path> dwi_files;
  for (const auto& e : fs::directory_iterator(dwi_dir)) dwi_files.push_back(e.path());
  int n = 0;
  for (const fs::path& file : dwi_files) {
    DcmFileFormat dwi, adc;
    ASSERT_TRUE(dwi.loadFile(file.c_str()).good());
    DcmDataset& d = *dwi.getDataset();
    OFString ipp;
    d.findAndGetOFStringArray(DCM_ImagePositionPatient, ipp);
    ASSERT_TRUE(adc_by_position.count(ipp.c_str())) << "no ADC slice at " << ipp;
    ASSERT_TRUE(adc.loadFile(adc_by_position[ipp.c_str()].c_str()).good());
    DcmDataset& a = *adc.getDataset();
    const auto rescale = [](DcmDataset& ds, double& slope, double& intercept) {
      slope = 1;
      intercept = 0;
      ds.findAndGetFloat64(DCM_RescaleSlope, slope);
      ds.findAndGetFloat64(DCM_RescaleIntercept, intercept);
    };
    double ds_, di, as, ai;
    rescale(d, ds_, di);
    rescale(a, as, ai);
    const Uint16 *pd = nullptr, *pa = nullptr;
    unsigned long count = 0, count_a = 0;
    ASSERT_TRUE(d.findAndGetUint16Array(DCM_PixelData, pd, &count).good());
    ASSERT_TRUE(a.findAndGetUint16Array(DCM_PixelData, pa, &count_a).good());
    ASSERT_EQ(count, count_a);
    std::vector<double> s0(count);
    double max_s0 = 1;
    for (unsigned long p = 0; p < count; ++p) {
      const double s1000 = pd[p] * ds_ + di, adc_um = std::max(0.0, pa[p] * as + ai);
      s0[p] = s1000 * std::exp(1000.0 * adc_um * 1e-6);
      max_s0 = std::max(max_s0, s0[p]);
    }
    char slope_text[32];
    std::snprintf(slope_text, sizeof slope_text, "%.8g", max_s0 / 60000.0);
    const double slope = std::stod(slope_text);  // quantise with exactly the slope written
    std::vector<Uint16> stored(count);
    for (unsigned long p = 0; p < count; ++p) stored[p] = static_cast<Uint16>(std::lround(std::max(0.0, s0[p]) / slope));
    char uid[100];
    d.putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
    d.putAndInsertFloat64(DCM_DiffusionBValue, 0.0);
    d.putAndInsertString(DCM_RescaleSlope, slope_text);
    d.putAndInsertString(DCM_RescaleIntercept, "0");
    d.putAndInsertString(DCM_InstanceNumber, std::to_string(1000 + n).c_str());
    d.putAndInsertUint16Array(DCM_PixelData, stored.data(), count);
    ASSERT_TRUE(dwi.saveFile((dwi_dir / ("b0_" + std::to_string(n++) + ".dcm")).c_str(), EXS_LittleEndianExplicit).good());
  }
}

class BadInput : public ::testing::Test {
 protected:
  static inline fs::path work_;
  static inline std::vector<Case> cases_;
  static inline std::string daemon_log_;
  static inline bool alive_after_ = false;
  static inline std::map<std::string, std::pair<std::string, std::string>> studies_;  // uid -> (status, reason)
  static inline std::map<std::string, std::string> study_state_;                       // uid -> studies.state
  static inline std::string derived_uid_;
  static inline json derived_report_;

  static void collect_corpus() {
    std::vector<std::string> listed;
    for (const std::string& cmd :
         {std::string("dpkg -L python3-pydicom | grep -E '\\.dcm$|/test_files/'"),
          std::string("dpkg -L python3-nibabel | grep -i dicom"),
          std::string("dpkg -L python3-nibabel | grep '/nicom/tests/data/'")}) {
      std::istringstream in(itest::run_command(cmd + " 2>/dev/null").output);
      std::string line;
      while (std::getline(in, line)) listed.push_back(trim(line));
    }
    std::set<std::string> seen;
    for (const std::string& file : listed) {
      std::error_code ec;
      if (!fs::is_regular_file(file, ec) || !seen.insert(file).second) continue;
      if (file.ends_with(".py") || file.rfind("/usr/bin/", 0) == 0 || file.rfind("/usr/share/man/", 0) == 0) continue;
      Case c;
      const size_t at = file.find("dist-packages/");
      c.name = at == std::string::npos ? file : file.substr(at + 14);
      c.path = file;
      if (file.ends_with(".gz")) {  // nibabel keeps some files gzipped: send the content
        c.path = work_ / "gunzip" / std::to_string(cases_.size()) / fs::path(file).stem();
        fs::create_directories(c.path.parent_path());
        itest::run_command("gzip -dc " + quote(file) + " > " + quote(c.path.string()));
      }
      cases_.push_back(c);
    }
  }

  static void SetUpTestSuite() {
    work_ = fs::temp_directory_path() / ("strokebox-badinput-" + std::to_string(::getpid()));
    fs::remove_all(work_);
    fs::create_directories(work_);
    collect_corpus();
    ASSERT_GT(cases_.size(), 150u) << "python3-pydicom/python3-nibabel test data not installed";

    // A usable synthetic study: phantom DWI at b1000 plus b0 images in the same series, no ADC.
    const fs::path derived = work_ / "derived";
    auto ph = itest::run_command(kBin + " phantom --format dicom --seed 171 --out " + derived.string());
    ASSERT_EQ(ph.exit_code, 0) << ph.output;
    add_b0_to_dwi_series(derived / "DWI", derived / "ADC");
    if (HasFatalFailure()) return;
    derived_uid_ = study_uid_of(*fs::directory_iterator(derived / "DWI"));

    const int port = itest::free_port();
    const fs::path config = work_ / "strokebox.toml";
    std::ofstream(config) << "[dicom]\nae_title = \"STROKEBOX\"\nport = " << port
                          << "\nbind_address = \"127.0.0.1\"\nstudy_quiet_s = 1\n"
                          << "[storage]\ndata_dir = \"" << (work_ / "data").string() << "\"\n"
                          << "[model]\ndir = \"" << kModel << "\"\n[board]\nkind = \"sim\"\n[status]\nenabled = false\n";
    daemon_log_ = (work_ / "daemon.log").string();
    itest::Child daemon({kBin, "run", "--config", config.string()}, daemon_log_);
    const std::string echo = "echoscu -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " 2>/dev/null";
    bool up = false;
    for (int i = 0; i < 300 && !up; ++i) {
      up = itest::run_command(echo).exit_code == 0;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ASSERT_TRUE(up) << "daemon did not answer C-ECHO:\n" << itest::read_file(daemon_log_);

    // The derived-ADC study first (it is the only one that runs the network).
    auto s = itest::run_command("storescu -aec STROKEBOX +sd 127.0.0.1 " + std::to_string(port) + " " +
                                (derived / "DWI").string() + " 2>&1");
    ASSERT_EQ(s.exit_code, 0) << s.output;

    // One storescu per corpus file (its own association, the file's own transfer syntax
    // proposed next to the uncompressed ones), four at a time.
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&] {
        for (size_t i = next++; i < cases_.size(); i = next++) {
          Case& c = cases_[i];
          auto r = itest::run_command("storescu -v " + propose_flag_for(c.path) + " -aec STROKEBOX 127.0.0.1 " +
                                      std::to_string(port) + " " + quote(c.path.string()) + " 2>&1");
          classify_send(r.output, c);
        }
      });
    }
    for (auto& t : workers) t.join();
    for (Case& c : cases_)
      if (c.sent == "stored") c.study_uid = study_uid_of(c.path);

    alive_after_ = daemon.running() && itest::run_command(echo).exit_code == 0;
    ASSERT_TRUE(alive_after_) << "daemon died or stopped answering:\n" << itest::read_file(daemon_log_);

    // Wait until every study the node indexed has a final result. The derived-ADC study runs
    // the network first and the worker takes one study at a time: on a loaded 2-core machine
    // that alone takes minutes, so the bound is generous (it only stops a hung daemon).
    const fs::path db = work_ / "data" / "strokebox.db";
    for (int i = 0; i < 4800; ++i) {
      study_state_.clear();
      for (const std::string& row : query(db, "SELECT study_uid, state FROM studies")) {
        const size_t bar = row.rfind('|');
        if (bar != std::string::npos) study_state_[row.substr(0, bar)] = row.substr(bar + 1);
      }
      const bool all_final = !study_state_.empty() &&
                             std::all_of(study_state_.begin(), study_state_.end(),
                                         [](const auto& kv) { return kv.second == "done" || kv.second == "failed"; });
      if (all_final) break;
      ASSERT_TRUE(daemon.running()) << "daemon died:\n" << itest::read_file(daemon_log_);
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    for (const std::string& row : query(db, "SELECT study_uid, status, replace(reason, char(10), ' ') FROM results")) {
      const size_t a = row.find('|'), b = row.find('|', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      studies_[row.substr(0, a)] = {row.substr(a + 1, b - a - 1), row.substr(b + 1)};
    }
    for (Case& c : cases_) {
      if (c.sent != "stored") continue;
      auto it = studies_.find(c.study_uid);
      if (it == studies_.end()) continue;
      c.study = it->second.first == "done" ? "processed" : "failed: " + it->second.second;
    }
    const fs::path report = work_ / "data" / "results" / derived_uid_ / "report.json";
    if (fs::exists(report)) derived_report_ = json::parse(itest::read_file(report.string()));
    ASSERT_TRUE(itest::run_command(echo).exit_code == 0) << "daemon stopped answering after processing";
    ASSERT_EQ(WEXITSTATUS(daemon.stop()), 0) << "daemon did not shut down cleanly:\n" << itest::read_file(daemon_log_);
    write_table();
  }

  /// The corpus table, in the test folder and (STROKEBOX_UPDATE_DOCS=1) in docs/bad_input.md
  /// between its markers.
  static void write_table() {
    std::ostringstream t;
    std::map<std::string, int> totals;
    for (const Case& c : cases_) {
      if (c.sent != "stored") ++totals[c.sent];
      else if (c.study.rfind("processed", 0) == 0) ++totals["stored, study processed"];
      else if (c.study.rfind("failed", 0) == 0) ++totals["stored, study failed with a reason"];
      else ++totals["stored, no study result"];
    }
    t << cases_.size() << " files: ";
    bool first = true;
    for (const auto& [k, v] : totals) {
      t << (first ? "" : ", ") << v << " " << k;
      first = false;
    }
    t << ".\n\n| file | node answer | study outcome |\n|---|---|---|\n";
    const auto cell = [](std::string s) {
      for (char& ch : s)
        if (ch == '|') ch = '/';
      if (s.size() > 240) s = s.substr(0, 237) + "...";
      return s;
    };
    std::vector<Case> sorted = cases_;
    std::sort(sorted.begin(), sorted.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
    for (const Case& c : sorted)
      t << "| `" << c.name << "` | " << c.sent << ": " << cell(c.detail) << " | " << cell(c.study) << " |\n";
    std::ofstream(work_ / "bad_input_table.md") << t.str();
    if (std::getenv("STROKEBOX_UPDATE_DOCS")) {
      std::string doc = itest::read_file(kDoc);
      const std::string begin = "<!-- corpus table: generated by BadInput (tests/integration/bad_input_test.cc) -->\n";
      const std::string end = "<!-- end of corpus table -->";
      const size_t b = doc.find(begin), e = doc.find(end);
      if (b != std::string::npos && e != std::string::npos && e > b) {
        doc = doc.substr(0, b + begin.size()) + t.str() + doc.substr(e);
        std::ofstream(kDoc) << doc;
      }
    }
  }

  static void TearDownTestSuite() {
    if (!::testing::UnitTest::GetInstance()->Passed() || std::getenv("STROKEBOX_KEEP_TEST_DATA")) {
      std::printf("test data kept in %s\n", work_.c_str());
      return;
    }
    fs::remove_all(work_);
  }
};

TEST_F(BadInput, NodeSurvivesTheWholeCorpusAndStillAnswersEcho) { EXPECT_TRUE(alive_after_); }

TEST_F(BadInput, EveryFileSentGotADimseStatus) {
  int stored = 0, refused = 0, not_sent = 0;
  for (const Case& c : cases_) {
    ASSERT_FALSE(c.sent.empty()) << c.name;
    if (c.sent == "refused") {
      EXPECT_FALSE(c.detail.empty()) << c.name;
    }
    if (c.sent == "stored") ++stored;
    if (c.sent == "refused") ++refused;
    if (c.sent == "not sent") {
      ++not_sent;
      // storescu could not read or convert the file: nothing reached the node. A rejected or
      // aborted association, or a request left without an answer, would be the node's fault.
      for (const char* fault : {"Association Rejected", "Peer aborted", "Association Request Failed", "timeout"})
        EXPECT_EQ(c.raw.find(fault), std::string::npos) << c.name << ": " << c.raw;
    }
  }
  std::printf("corpus: %zu files, %d stored, %d refused (DIMSE status or rejected context), %d not sent by storescu\n", cases_.size(),
              stored, refused, not_sent);
  EXPECT_GE(stored, 20);                   // the MR and other accepted images
  EXPECT_GE(stored + refused, 150);        // the rest could not even be read by storescu
}

TEST_F(BadInput, EveryStudyEndsProcessedOrFailedWithAReason) {
  ASSERT_FALSE(study_state_.empty());
  for (const auto& [uid, state] : study_state_) {
    EXPECT_TRUE(state == "done" || state == "failed") << uid << " is still " << state;
    auto it = studies_.find(uid);
    ASSERT_NE(it, studies_.end()) << "no result row for study " << uid;
    if (it->second.first == "failed") {
      EXPECT_FALSE(it->second.second.empty()) << "failed without a reason: " << uid;
    }
  }
  for (const Case& c : cases_)
    if (c.sent == "stored" && !c.study_uid.empty()) {
      EXPECT_FALSE(c.study.empty()) << c.name << " study " << c.study_uid;
    }
}

TEST_F(BadInput, B0AndB1000InOneSeriesWithoutAdcIsProcessedWithADerivedAdc) {
  ASSERT_FALSE(derived_report_.is_null()) << "no report for the derived-ADC study";
  EXPECT_EQ(derived_report_["status"], "done") << derived_report_.dump(2);
  EXPECT_EQ(derived_report_["adc_derived"], true);
  EXPECT_EQ(derived_report_["dwi_b_value"], 1000.0);
  EXPECT_NE(derived_report_["series_selection"].get<std::string>().find("ADC derived from b=0"), std::string::npos);
}

}  // namespace
