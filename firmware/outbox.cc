#include "firmware/outbox.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include <dcmtk/config/osconfig.h>  // must precede the other DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scu.h>

#include "base/log.h"

namespace firmware {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  destination TEXT NOT NULL,
  kind TEXT NOT NULL,
  path TEXT NOT NULL,
  sop_class_uid TEXT NOT NULL,
  sop_instance_uid TEXT NOT NULL,
  study_uid TEXT NOT NULL DEFAULT '',
  delivered INTEGER NOT NULL DEFAULT 0,  -- 0 pending, 1 confirmed, -1 dropped (file gone)
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL,
  last_error TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  delivered_at REAL,
  UNIQUE (destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered, next_attempt_at);
CREATE TABLE IF NOT EXISTS outbox_job (
  study_uid TEXT NOT NULL,
  job_id INTEGER NOT NULL,
  enqueued_at REAL NOT NULL,
  PRIMARY KEY (study_uid, job_id)
);
CREATE TABLE IF NOT EXISTS outbox_destination (
  name TEXT PRIMARY KEY,
  last_error TEXT NOT NULL DEFAULT '',
  last_error_at REAL NOT NULL DEFAULT 0,
  last_success_at REAL NOT NULL DEFAULT 0
);
)sql";

struct Item {
  int64_t id;
  std::string path, sop_class_uid, sop_instance_uid;
  int attempts;
};

/// Success (0x0000) or Warning (0x0001, 0xB000-0xBFFF): the instance is stored (PS3.4 B.2.3).
bool stored(Uint16 status) { return status == 0x0000 || status == 0x0001 || (status & 0xF000) == 0xB000; }

std::string hex(Uint16 v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04X", v);
  return buf;
}

}  // namespace

base::Result<std::vector<OutboxFile>> find_result_files(const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> candidates;  // kind, path
  if (fs::exists(out_dir + "/seg.dcm")) candidates.emplace_back("seg", out_dir + "/seg.dcm");
  std::error_code ec;
  if (fs::is_directory(out_dir + "/overlay", ec)) {
    std::vector<std::string> overlay;
    for (const auto& entry : fs::directory_iterator(out_dir + "/overlay", ec)) {
      if (entry.is_regular_file() && entry.path().extension() == ".dcm") overlay.push_back(entry.path().string());
    }
    std::sort(overlay.begin(), overlay.end());
    for (std::string& p : overlay) candidates.emplace_back("overlay", std::move(p));
  }
  if (fs::exists(out_dir + "/sr.dcm")) candidates.emplace_back("sr", out_dir + "/sr.dcm");
  std::vector<OutboxFile> files;
  for (auto& [kind, path] : candidates) {
    DcmFileFormat file;
    // The meta header is enough: it carries the SOP class and instance (PS3.10 7.1).
    OFCondition cond = file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 0, ERM_metaOnly);
    OFString sop_class, sop_instance;
    if (cond.good()) cond = file.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class);
    if (cond.good()) cond = file.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, sop_instance);
    if (cond.bad() || sop_class.empty() || sop_instance.empty()) {
      return base::data_loss("result file " + path + " has no readable DICOM meta header: " + cond.text());
    }
    files.push_back({kind, path, sop_class.c_str(), sop_instance.c_str()});
  }
  return files;
}

Outbox::Outbox(std::unique_ptr<storage::Database> db, std::vector<Destination> destinations, OutboxOptions options)
    : db_(std::move(db)), destinations_(std::move(destinations)), options_(std::move(options)) {}

Outbox::~Outbox() { stop(); }

base::Result<std::unique_ptr<Outbox>> Outbox::open(const std::string& db_path, std::vector<Destination> destinations,
                                                   OutboxOptions options) {
  std::set<std::string> names;
  for (const Destination& d : destinations) {
    if (d.name.empty() || !names.insert(d.name).second) {
      return base::invalid_argument("outbox: destination names must be unique and non-empty ('" + d.name + "')");
    }
    if (d.port < 1 || d.port > 65535) {
      return base::invalid_argument("outbox: destination '" + d.name + "' has port " + std::to_string(d.port) +
                                    " (must be 1..65535)");
    }
    if (d.ae_title.empty() || d.ae_title.size() > 16 || d.host.empty()) {
      return base::invalid_argument("outbox: destination '" + d.name + "' needs an AE title (1-16 characters) and a host");
    }
    for (const std::string& o : d.objects) {
      if (o != "seg" && o != "overlay" && o != "sr") {
        return base::invalid_argument("outbox: destination '" + d.name + "' lists object '" + o +
                                      "' (known: seg, overlay, sr)");
      }
    }
  }
  SB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db, storage::Database::open(db_path));
  SB_RETURN_IF_ERROR(db->exec(kSchema));
  {  // outbox tables from before study_uid existed
    SB_ASSIGN_OR_RETURN(storage::Statement st, db->prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'study_uid'"));
    SB_ASSIGN_OR_RETURN(bool has_column, st.step());
    if (!has_column) SB_RETURN_IF_ERROR(db->exec("ALTER TABLE outbox ADD COLUMN study_uid TEXT NOT NULL DEFAULT ''"));
  }
  SB_RETURN_IF_ERROR(db->exec("CREATE INDEX IF NOT EXISTS outbox_study ON outbox (study_uid, delivered)"));
  for (const Destination& d : destinations) {
    SB_ASSIGN_OR_RETURN(storage::Statement st, db->prepare("INSERT OR IGNORE INTO outbox_destination (name) VALUES (?)"));
    SB_RETURN_IF_ERROR(st.bind(1, d.name).run());
  }
  return std::unique_ptr<Outbox>(new Outbox(std::move(db), std::move(destinations), std::move(options)));
}

double Outbox::now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

base::Status Outbox::insert_items_locked(const std::string& study_uid, const OutboxFile& file, int& queued) {
  if (file.path.empty() || file.sop_class_uid.empty() || file.sop_instance_uid.empty()) {
    return base::invalid_argument("outbox: enqueue needs a path, a SOP class UID and a SOP instance UID");
  }
  const double t = now();
  for (const Destination& d : destinations_) {
    if (d.objects.count(file.kind) == 0) continue;
    SB_ASSIGN_OR_RETURN(storage::Statement st,
                        db_->prepare("INSERT OR IGNORE INTO outbox (destination, kind, path, sop_class_uid, "
                                     "sop_instance_uid, study_uid, next_attempt_at, created_at) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    SB_RETURN_IF_ERROR(st.bind(1, d.name).bind(2, file.kind).bind(3, file.path).bind(4, file.sop_class_uid)
                           .bind(5, file.sop_instance_uid).bind(6, study_uid).bind(7, t).bind(8, t).run());
    queued += db_->changes();
  }
  return base::Status();
}

void Outbox::wake_sender() {
  std::lock_guard<std::mutex> lock(wake_mu_);
  wake_requested_ = true;
  wake_.notify_all();
}

base::Result<int> Outbox::enqueue(const std::string& kind, const std::string& path, const std::string& sop_class_uid,
                                  const std::string& sop_instance_uid) {
  int queued = 0;
  {
    std::lock_guard<std::mutex> lock(db_mu_);
    SB_ASSIGN_OR_RETURN(storage::Database::Transaction tx, db_->begin());
    SB_RETURN_IF_ERROR(insert_items_locked("", {kind, path, sop_class_uid, sop_instance_uid}, queued));
    SB_RETURN_IF_ERROR(tx.commit());
  }
  if (queued > 0) wake_sender();
  return queued;
}

base::Result<int> Outbox::enqueue_result(const std::string& study_uid, int64_t job_id,
                                         const std::vector<OutboxFile>& files) {
  int queued = 0;
  {
    std::lock_guard<std::mutex> lock(db_mu_);
    SB_ASSIGN_OR_RETURN(storage::Database::Transaction tx, db_->begin());
    for (const OutboxFile& f : files) SB_RETURN_IF_ERROR(insert_items_locked(study_uid, f, queued));
    SB_ASSIGN_OR_RETURN(storage::Statement st,
                        db_->prepare("INSERT OR IGNORE INTO outbox_job (study_uid, job_id, enqueued_at) VALUES (?, ?, ?)"));
    SB_RETURN_IF_ERROR(st.bind(1, study_uid).bind(2, job_id).bind(3, now()).run());
    SB_RETURN_IF_ERROR(tx.commit());
  }
  if (queued > 0) wake_sender();
  return queued;
}

base::Result<bool> Outbox::result_enqueued(const std::string& study_uid, int64_t job_id) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db_->prepare("SELECT 1 FROM outbox_job WHERE study_uid = ? AND job_id = ?"));
  st.bind(1, study_uid).bind(2, job_id);
  return st.step();
}

base::Result<bool> Outbox::has_pending(const std::string& study_uid) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db_->prepare("SELECT 1 FROM outbox WHERE study_uid = ? AND delivered = 0 LIMIT 1"));
  st.bind(1, study_uid);
  return st.step();
}

base::Status Outbox::record_dropped(const std::string& destination, int64_t id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db_->prepare("UPDATE outbox SET delivered = -1, last_error = ? WHERE id = ?"));
  SB_RETURN_IF_ERROR(st.bind(1, reason).bind(2, id).run());
  SB_ASSIGN_OR_RETURN(storage::Statement ds,
                      db_->prepare("UPDATE outbox_destination SET last_error = ?, last_error_at = ? WHERE name = ?"));
  return ds.bind(1, reason).bind(2, now()).bind(3, destination).run();
}

base::Status Outbox::record_failure(const std::string& destination, int64_t id, int attempts,
                                    const std::string& reason) {
  const double t = now();
  const double backoff =
      std::min(options_.max_backoff_s, options_.initial_backoff_s * std::pow(2.0, std::max(0, attempts - 1)));
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db_->prepare("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"));
  SB_RETURN_IF_ERROR(st.bind(1, attempts).bind(2, t + backoff).bind(3, reason).bind(4, id).run());
  SB_ASSIGN_OR_RETURN(storage::Statement ds,
                      db_->prepare("UPDATE outbox_destination SET last_error = ?, last_error_at = ? WHERE name = ?"));
  return ds.bind(1, reason).bind(2, t).bind(3, destination).run();
}

base::Status Outbox::record_success(const std::string& destination, int64_t id) {
  const double t = now();
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db_->prepare("UPDATE outbox SET delivered = 1, delivered_at = ?, last_error = '', "
                                   "attempts = attempts + 1 WHERE id = ?"));
  SB_RETURN_IF_ERROR(st.bind(1, t).bind(2, id).run());
  SB_ASSIGN_OR_RETURN(storage::Statement ds,
                      db_->prepare("UPDATE outbox_destination SET last_error = '', last_success_at = ? WHERE name = ?"));
  return ds.bind(1, t).bind(2, destination).run();
}

base::Result<int> Outbox::send_due() {
  std::lock_guard<std::mutex> send_lock(send_mu_);
  int confirmed = 0;
  for (const Destination& d : destinations_) {
    std::vector<Item> items;
    {
      std::lock_guard<std::mutex> lock(db_mu_);
      SB_ASSIGN_OR_RETURN(storage::Statement st,
                          db_->prepare("SELECT id, path, sop_class_uid, sop_instance_uid, attempts FROM outbox "
                                       "WHERE destination = ? AND delivered = 0 AND next_attempt_at <= ? "
                                       "ORDER BY id LIMIT ?"));
      st.bind(1, d.name).bind(2, now()).bind(3, options_.max_items_per_association);
      while (true) {
        SB_ASSIGN_OR_RETURN(bool row, st.step());
        if (!row) break;
        items.push_back({st.column_int64(0), st.column_text(1), st.column_text(2), st.column_text(3),
                         static_cast<int>(st.column_int64(4))});
      }
    }
    // A file that is gone (removed by hand or by retention) can never be sent: drop its item
    // with the reason instead of retrying it forever.
    std::vector<Item> sendable;
    for (Item& it : items) {
      if (::access(it.path.c_str(), R_OK) == 0) {
        sendable.push_back(std::move(it));
      } else {
        const std::string reason = "dropped: " + it.path + " is missing (" + std::strerror(errno) + ")";
        SB_LOG(kError) << "outbox: " << d.name << ": " << it.sop_instance_uid << " " << reason;
        SB_RETURN_IF_ERROR(record_dropped(d.name, it.id, reason));
      }
    }
    items = std::move(sendable);
    if (items.empty()) continue;

    const std::string peer = d.name + " (" + d.ae_title + "@" + d.host + ":" + std::to_string(d.port) + ")";
    auto fail_all = [&](const std::string& reason) -> base::Status {
      SB_LOG(kWarning) << "outbox: " << peer << ": " << reason << "; " << items.size() << " item(s) retried later";
      for (const Item& it : items) SB_RETURN_IF_ERROR(record_failure(d.name, it.id, it.attempts + 1, reason));
      return base::ok_status();
    };

    DcmSCU scu;
    scu.setAETitle(options_.calling_ae_title.c_str());
    scu.setPeerAETitle(d.ae_title.c_str());
    scu.setPeerHostName(d.host.c_str());
    scu.setPeerPort(static_cast<Uint16>(d.port));
    scu.setACSETimeout(static_cast<Uint32>(options_.acse_timeout_s));
    scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    scu.setDIMSETimeout(static_cast<Uint32>(options_.dimse_timeout_s));
    scu.setVerbosePCMode(OFFalse);
    std::set<std::string> classes;
    for (const Item& it : items) classes.insert(it.sop_class_uid);
    OFList<OFString> syntaxes;
    syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
    syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
    for (const std::string& c : classes) scu.addPresentationContext(c.c_str(), syntaxes);
    OFCondition cond = scu.initNetwork();
    if (cond.good()) cond = scu.negotiateAssociation();
    if (cond.bad()) {
      SB_RETURN_IF_ERROR(fail_all(std::string("association failed: ") + cond.text()));
      continue;
    }
    for (const Item& it : items) {
      const T_ASC_PresentationContextID pc = scu.findPresentationContextID(it.sop_class_uid.c_str(), "");
      std::string reason;
      Uint16 status = 0;
      if (pc == 0) {
        reason = "refused: the destination does not accept SOP class " + it.sop_class_uid;
      } else {
        cond = scu.sendSTORERequest(pc, it.path.c_str(), nullptr, status);
        if (cond.bad()) {
          reason = std::string("C-STORE of ") + it.path + " failed: " + cond.text();
        } else if (!stored(status)) {
          reason = "refused: C-STORE status " + hex(status) + " (" + DU_cstoreStatusString(status) + ")";
        }
      }
      if (options_.on_progress) options_.on_progress();
      if (reason.empty()) {
        SB_RETURN_IF_ERROR(record_success(d.name, it.id));
        ++confirmed;
        SB_LOG(kDebug) << "outbox: " << peer << " stored " << it.sop_instance_uid;
      } else {
        SB_LOG(kWarning) << "outbox: " << peer << ": " << it.sop_instance_uid << ": " << reason;
        SB_RETURN_IF_ERROR(record_failure(d.name, it.id, it.attempts + 1, reason));
        if (cond.bad() && !scu.isConnected()) break;  // association lost: the rest is retried later
      }
    }
    if (scu.isConnected()) scu.releaseAssociation();
    // Items skipped after a lost association keep their next_attempt_at and are tried on the next pass.
  }
  return confirmed;
}

void Outbox::start() {
  std::lock_guard<std::mutex> lock(wake_mu_);
  if (sender_.joinable()) return;
  stop_requested_ = false;
  sender_ = std::thread([this] { run(); });
}

void Outbox::stop() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_requested_ = true;
    wake_.notify_all();
  }
  if (sender_.joinable()) sender_.join();
}

void Outbox::run() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(wake_mu_);
      if (stop_requested_) return;
      wake_requested_ = false;
    }
    if (options_.on_progress) options_.on_progress();
    base::Result<int> sent = send_due();
    if (!sent.ok()) SB_LOG(kError) << "outbox: " << sent.status().to_string();
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::duration<double>(options_.idle_poll_s),
                   [this] { return stop_requested_ || wake_requested_; });
    if (stop_requested_) return;
  }
}

base::Result<DestinationState> read_destination_state(storage::Database& db, const std::string& name) {
  DestinationState s;
  s.name = name;
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db.prepare("SELECT COALESCE(SUM(delivered = 0), 0), COALESCE(SUM(delivered = 1), 0), "
                                 "COALESCE(MIN(CASE WHEN delivered = 0 THEN next_attempt_at END), 0) "
                                 "FROM outbox WHERE destination = ?"));
  st.bind(1, name);
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (row) {
    s.pending = st.column_int64(0);
    s.delivered = st.column_int64(1);
    s.next_attempt_at = st.column_double(2);
  }
  SB_ASSIGN_OR_RETURN(storage::Statement ds, db.prepare("SELECT last_error, last_error_at, last_success_at "
                                                        "FROM outbox_destination WHERE name = ?"));
  ds.bind(1, name);
  SB_ASSIGN_OR_RETURN(bool drow, ds.step());
  if (drow) {
    s.last_error = ds.column_text(0);
    s.last_error_at = ds.column_double(1);
    s.last_success_at = ds.column_double(2);
  }
  return s;
}

base::Result<std::vector<DestinationState>> Outbox::destination_states() {
  std::lock_guard<std::mutex> lock(db_mu_);
  std::vector<DestinationState> out;
  for (const Destination& d : destinations_) {
    SB_ASSIGN_OR_RETURN(DestinationState s, read_destination_state(*db_, d.name));
    out.push_back(std::move(s));
  }
  return out;
}

base::Result<int64_t> Outbox::pending_count() {
  std::lock_guard<std::mutex> lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Statement st, db_->prepare("SELECT COUNT(*) FROM outbox WHERE delivered = 0"));
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  return row ? st.column_int64(0) : 0;
}

}  // namespace firmware
