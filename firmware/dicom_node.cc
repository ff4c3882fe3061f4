#include "firmware/dicom_node.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <new>

#include "base/log.h"

// DCMTK after the system headers.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scpthrd.h>

namespace firmware {
namespace {

// Transfer syntaxes accepted for storage, in order of preference (explicit first: it keeps
// the VRs the sender meant). Compressed syntaxes are not accepted yet.
const OFList<OFString>& storage_transfer_syntaxes() {
  static const OFList<OFString> list = [] {
    OFList<OFString> l;
    l.push_back(UID_LittleEndianExplicitTransferSyntax);
    l.push_back(UID_LittleEndianImplicitTransferSyntax);
    l.push_back(UID_BigEndianExplicitTransferSyntax);
    l.push_back(UID_DeflatedExplicitVRLittleEndianTransferSyntax);
    return l;
  }();
  return list;
}

std::string trim(const OFString& s) {
  std::string out(s.c_str());
  const auto first = out.find_first_not_of(' ');
  if (first == std::string::npos) return {};
  return out.substr(first, out.find_last_not_of(' ') - first + 1);
}

// DIMSE Error Comment (0000,0902) is LO: at most 64 characters.
std::string error_comment(const std::string& message) {
  std::string out;
  for (char c : message) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    out += c;
  }
  return out.size() > 64 ? out.substr(0, 61) + "..." : out;
}

// One association, on its own thread: DCMTK's SCP with C-STORE routed to the StoreHandler.
class NodeScp : public DcmThreadSCP {
 public:
  NodeScp(StoreHandler& handler, uint64_t association_id, std::string ae_title)
      : handler_(handler), association_id_(association_id), ae_title_(std::move(ae_title)) {}

 protected:
  OFCondition handleIncomingCommand(T_DIMSE_Message* message, const DcmPresentationContextInfo& info) override {
    if (message->CommandField == DIMSE_C_STORE_RQ) return handle_store(message->msg.CStoreRQ, info);
    return DcmThreadSCP::handleIncomingCommand(message, info);  // C-ECHO; others are refused
  }

  OFBool checkCalledAETitleAccepted(const OFString& called) override {
    if (trim(called) == ae_title_) return OFTrue;
    SB_LOG(kWarning) << "refusing association from " << trim(getPeerAETitle()) << ": called AE title '"
                     << trim(called) << "' is not ours ('" << ae_title_ << "')";
    return OFFalse;
  }

  void notifyAssociationAcknowledge() override {
    SB_LOG(kInfo) << "association " << association_id_ << " from " << trim(getPeerAETitle()) << " ("
                  << getPeerIP().c_str() << ") accepted";
  }
  void notifyReleaseRequest() override { released_ = true; }
  void notifyAssociationTermination() override {
    SB_LOG(kInfo) << "association " << association_id_ << (released_ ? " released" : " ended without release")
                  << ", " << stored_ << " instance(s) stored, " << refused_ << " refused";
    handler_.association_ended(association_id_, released_);
  }

 private:
  OFCondition handle_store(T_DIMSE_C_StoreRQ& request, const DcmPresentationContextInfo& info) {
    DcmDataset* received = nullptr;
    OFCondition cond = receiveSTORERequest(request, info.presentationContextID, received);
    std::unique_ptr<DcmDataset> dataset(received);
    if (cond.bad()) {
      SB_LOG(kWarning) << "C-STORE from " << trim(getPeerAETitle()) << ": receiving the data set failed: "
                       << cond.text();
      return cond;  // the association is unusable; DcmSCP aborts it
    }
    IncomingInstance in;
    in.dataset = dataset.get();
    in.transfer_syntax_uid = info.acceptedTransferSyntax.c_str();
    in.affected_sop_class_uid = request.AffectedSOPClassUID;
    in.affected_sop_instance_uid = request.AffectedSOPInstanceUID;
    in.calling_ae = trim(getPeerAETitle());
    in.peer_host = getPeerIP().c_str();
    in.association_id = association_id_;
    base::Status status;
    try {
      status = handler_.store(in);
    } catch (const std::bad_alloc&) {
      status = base::resource_exhausted("out of memory while storing the instance");
    } catch (const std::exception& e) {
      status = base::internal_error(std::string("unexpected exception while storing: ") + e.what());
    }
    const uint16_t code = store_status_for(status.code());
    DcmDataset detail;
    if (!status.ok()) {
      ++refused_;
      SB_LOG(kWarning) << "C-STORE " << request.AffectedSOPInstanceUID << " from " << in.calling_ae
                       << " refused with 0x" << std::hex << code << std::dec << ": " << status.to_string();
      detail.putAndInsertString(DCM_ErrorComment, error_comment(status.message()).c_str());
    } else {
      ++stored_;
    }
    return sendSTOREResponse(info.presentationContextID, request.MessageID, request.AffectedSOPClassUID,
                             request.AffectedSOPInstanceUID, code, status.ok() ? nullptr : &detail);
  }

  StoreHandler& handler_;
  uint64_t association_id_;
  std::string ae_title_;
  bool released_ = false;
  int stored_ = 0;
  int refused_ = 0;
};

void drop_and_destroy(T_ASC_Association*& assoc) {
  if (!assoc) return;
  ASC_dropSCPAssociation(assoc);
  ASC_destroyAssociation(&assoc);
}

// DCMTK 3.6.7 always listens on INADDR_ANY. To honour bind_address, the listening socket it
// created is replaced in place (dup2 keeps the descriptor number DCMTK knows) by one bound to
// the requested address.
base::Status rebind_listen_socket(T_ASC_Network* network, const std::string& address, int port) {
  const int fd = DUL_networkSocket(network->network);
  if (fd < 0) return base::internal_error("DCMTK has no listening socket to rebind");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    return base::invalid_argument("bind address '" + address + "' is not an IPv4 address");
  }
  const int fresh = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fresh < 0) return base::internal_error(std::string("socket(): ") + std::strerror(errno));
  if (::dup2(fresh, fd) < 0) {  // closes DCMTK's 0.0.0.0 socket, fd now names the fresh one
    const int err = errno;
    ::close(fresh);
    return base::internal_error(std::string("dup2(): ") + std::strerror(err));
  }
  ::close(fresh);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::unavailable("cannot listen on " + address + ":" + std::to_string(port) + ": " + std::strerror(errno));
  }
  if (::listen(fd, 64) != 0) {
    return base::unavailable("listen() on " + address + ":" + std::to_string(port) + ": " + std::strerror(errno));
  }
  return base::Status();
}

}  // namespace

uint16_t store_status_for(base::Code code) {
  switch (code) {
    case base::Code::kOk:
      return STATUS_Success;
    case base::Code::kResourceExhausted:
    case base::Code::kUnavailable:
      return STATUS_STORE_Refused_OutOfResources;  // 0xA700
    case base::Code::kInvalidArgument:
      return STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;  // 0xA900
    case base::Code::kDataLoss:
      return STATUS_STORE_Error_CannotUnderstand;  // 0xC000
    default:
      return 0x0110;  // Processing Failure (PS3.7 C.4.1.1.1)
  }
}

// ---------------------------------------------------------------------------------------------
// DicomNode

DicomNode::DicomNode(DicomNodeOptions options, StoreHandler& handler)
    : options_(std::move(options)), handler_(handler) {}

DicomNode::~DicomNode() { stop(); }

base::Status DicomNode::start() {
  std::lock_guard lock(stop_mu_);
  if (started_) return base::failed_precondition("DICOM node already started");
  if (!dcmDataDict.isDictionaryLoaded()) {
    return base::failed_precondition(
        "the DICOM data dictionary is not loaded (install dcmtk's dicom.dic or set DCMDICTPATH)");
  }
  if (options_.max_associations < 1) return base::invalid_argument("max_associations must be at least 1");
  OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, options_.port, options_.acse_timeout_s, &network_);
  if (cond.bad()) {
    network_ = nullptr;
    return base::unavailable("cannot listen on port " + std::to_string(options_.port) + ": " + cond.text() +
                             " (is another DICOM node running, or is the port privileged?)");
  }
  if (options_.bind_address != "0.0.0.0") {
    base::Status st = rebind_listen_socket(network_, options_.bind_address, options_.port);
    if (!st.ok()) {
      ASC_dropNetwork(&network_);
      network_ = nullptr;
      return st;
    }
  }
  stop_requested_ = false;
  started_ = true;
  acceptor_ = std::thread(&DicomNode::accept_loop, this);
  return base::Status();
}

void DicomNode::stop() {
  std::lock_guard lock(stop_mu_);
  if (!started_) return;
  stop_requested_ = true;
  // Wake the accept loop now rather than at its next poll: shutting the listening socket down
  // makes its select() return and accept() fail; the loop then sees stop_requested_.
  if (network_) ::shutdown(DUL_networkSocket(network_->network), SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();  // the loop joins the workers before it returns
  ASC_dropNetwork(&network_);
  network_ = nullptr;
  started_ = false;
}

void DicomNode::reap_finished_workers(bool wait_all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (wait_all || it->done->load()) {
      if (it->thread.joinable()) it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void DicomNode::accept_loop() {
  DcmSCPConfig config;
  config.setAETitle(options_.ae_title.c_str());
  config.setRespondWithCalledAETitle(OFFalse);
  config.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  config.setDIMSETimeout(static_cast<Uint32>(options_.dimse_timeout_s));
  config.setACSETimeout(static_cast<Uint32>(options_.acse_timeout_s));
  OFList<OFString> verification_syntaxes;
  verification_syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
  verification_syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
  verification_syntaxes.push_back(UID_BigEndianExplicitTransferSyntax);
  bool configured = config.addPresentationContext(UID_VerificationSOPClass, verification_syntaxes).good() &&
                    config.addPresentationContext(kMrImageStorage, storage_transfer_syntaxes()).good() &&
                    config.addPresentationContext(kEnhancedMrImageStorage, storage_transfer_syntaxes()).good();
  if (!configured) {
    SB_LOG(kError) << "DICOM node: cannot set up presentation contexts; not accepting associations";
    return;
  }
  const DcmSharedSCPConfig shared(config);

  while (!stop_requested_.load()) {
    T_ASC_Association* assoc = nullptr;
    OFCondition cond = ASC_receiveAssociation(network_, &assoc, ASC_DEFAULTMAXPDU, nullptr, nullptr, OFFalse,
                                              DUL_NOBLOCK, options_.accept_poll_s);
    reap_finished_workers(false);
    if (cond == DUL_NOASSOCIATIONREQUEST) {
      ASC_destroyAssociation(&assoc);
      continue;
    }
    if (cond.bad()) {
      if (!stop_requested_.load()) {
        SB_LOG(kWarning) << "DICOM node: receiving an association request failed: " << cond.text();
      }
      drop_and_destroy(assoc);
      continue;
    }
    if (stop_requested_.load() || active_.load() >= options_.max_associations) {
      SB_LOG(kWarning) << "DICOM node: rejecting association from " << assoc->params->DULparams.callingAPTitle
                       << (stop_requested_.load() ? " (shutting down)" : " (too many associations)");
      T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                    ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
      ASC_rejectAssociation(assoc, &reject);
      drop_and_destroy(assoc);
      continue;
    }
    const uint64_t id = next_association_id_.fetch_add(1);
    auto done = std::make_shared<std::atomic<bool>>(false);
    ++active_;
    try {
      workers_.push_back(Worker{std::thread([this, assoc, shared, id, done]() mutable {
                                  {
                                    NodeScp scp(handler_, id, options_.ae_title);
                                    scp.setSharedConfig(shared);
                                    OFCondition result = scp.run(assoc);  // scp frees assoc
                                    if (result.bad()) {
                                      SB_LOG(kWarning) << "association " << id << ": " << result.text();
                                    }
                                  }
                                  --active_;
                                  done->store(true);
                                }),
                                done});
    } catch (const std::system_error& e) {
      --active_;
      SB_LOG(kError) << "DICOM node: cannot start a thread for an association: " << e.what();
      T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                    ASC_REASON_SP_PRES_TEMPORARYCONGESTION};
      ASC_rejectAssociation(assoc, &reject);
      drop_and_destroy(assoc);
    }
  }
  reap_finished_workers(true);
}

// ---------------------------------------------------------------------------------------------
// SpoolStoreHandler

SpoolStoreHandler::SpoolStoreHandler(storage::Spool& spool, storage::Index& index, uint64_t min_free_bytes)
    : spool_(spool), index_(index), min_free_bytes_(min_free_bytes) {}

base::Status SpoolStoreHandler::store(const IncomingInstance& in) {
  DcmDataset* ds = in.dataset;
  if (!ds) return base::internal_error("no data set");
  auto get = [&](const DcmTagKey& tag) {
    OFString value;
    ds->findAndGetOFStringArray(tag, value);
    return trim(value);
  };
  const std::string sop_class = get(DCM_SOPClassUID);
  const std::string sop_instance = get(DCM_SOPInstanceUID);
  const std::string study = get(DCM_StudyInstanceUID);
  const std::string series = get(DCM_SeriesInstanceUID);
  const std::string patient = get(DCM_PatientID);

  if (in.affected_sop_class_uid != kMrImageStorage && in.affected_sop_class_uid != kEnhancedMrImageStorage) {
    return base::invalid_argument("SOP class " + in.affected_sop_class_uid +
                                  " is not accepted (MR Image Storage or Enhanced MR Image Storage only)");
  }
  if (sop_class != in.affected_sop_class_uid) {
    return base::invalid_argument("SOP Class UID in the data set ('" + sop_class +
                                  "') does not match the request ('" + in.affected_sop_class_uid + "')");
  }
  if (sop_instance != in.affected_sop_instance_uid) {
    return base::invalid_argument("SOP Instance UID in the data set ('" + sop_instance +
                                  "') does not match the request ('" + in.affected_sop_instance_uid + "')");
  }
  if (study.empty()) return base::invalid_argument("Study Instance UID (0020,000D) is missing");
  if (series.empty()) return base::invalid_argument("Series Instance UID (0020,000E) is missing");
  // Validates all three UIDs before anything touches the disk.
  SB_ASSIGN_OR_RETURN(std::string final_path, spool_.instance_path(study, series, sop_instance));

  SB_RETURN_IF_ERROR(storage::create_directories_durable(spool_.root()));
  SB_ASSIGN_OR_RETURN(uint64_t free, storage::free_bytes(spool_.root()));
  if (free < min_free_bytes_) {
    return base::resource_exhausted("spool disk almost full: " + std::to_string(free >> 20) + " MiB free, at least " +
                                    std::to_string(min_free_bytes_ >> 20) + " MiB kept in reserve");
  }

  {
    std::lock_guard lock(mu_);
    open_[in.association_id].insert(study);
  }

  const E_TransferSyntax xfer = DcmXfer(in.transfer_syntax_uid.c_str()).getXfer();
  SB_ASSIGN_OR_RETURN(std::string path, spool_.store(study, series, sop_instance, [&](const std::string& temp) {
    DcmFileFormat file(ds);  // deep copy: the node keeps ownership of the received data set
    OFCondition cond = file.saveFile(temp.c_str(), xfer == EXS_Unknown ? EXS_LittleEndianExplicit : xfer,
                                     EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0, EWM_createNewMeta);
    if (cond.bad()) {
      std::error_code ec;
      auto space = std::filesystem::space(std::filesystem::path(temp).parent_path(), ec);
      if (!ec && space.available < (1u << 20)) return base::resource_exhausted("disk full writing " + temp);
      return base::internal_error(std::string("DCMTK cannot write ") + temp + ": " + cond.text());
    }
    return base::Status();
  }));
  (void)final_path;

  std::error_code ec;
  storage::InstanceRecord record;
  record.sop_instance_uid = sop_instance;
  record.sop_class_uid = sop_class;
  record.study_uid = study;
  record.series_uid = series;
  record.patient_id = patient;
  record.path = path;
  record.size_bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  record.received_at_ms = storage::now_ms();
  record.calling_ae = in.calling_ae;
  SB_RETURN_IF_ERROR(index_.add_instance(record).with_context("recording the instance in the index"));
  return base::Status();
}

void SpoolStoreHandler::association_ended(uint64_t association_id, bool released) {
  std::lock_guard lock(mu_);
  open_.erase(association_id);
}

std::set<std::string> SpoolStoreHandler::studies_with_open_associations() const {
  std::lock_guard lock(mu_);
  std::set<std::string> out;
  for (const auto& [id, studies] : open_) out.insert(studies.begin(), studies.end());
  return out;
}

}  // namespace firmware
