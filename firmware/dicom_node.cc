#include "firmware/dicom_node.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <new>

#include "base/log.h"
#include "firmware/config.h"

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
#include <dcmtk/dcmtls/tlslayer.h>

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
    // Compressed images are stored as received and decoded when the study is read
    // (image/dicom_series.cc registers DCMTK's RLE, JPEG and JPEG-LS decoders). JPEG 2000 is
    // accepted too, so the study ends failed with the reason (no J2K codec in Debian's DCMTK)
    // instead of the scanner seeing an unexplained refusal.
    l.push_back(UID_RLELosslessTransferSyntax);
    l.push_back(UID_JPEGProcess14SV1TransferSyntax);
    l.push_back(UID_JPEGProcess14TransferSyntax);
    l.push_back(UID_JPEGProcess1TransferSyntax);
    l.push_back(UID_JPEGProcess2_4TransferSyntax);
    l.push_back(UID_JPEGLSLosslessTransferSyntax);
    l.push_back(UID_JPEGLSLossyTransferSyntax);
    l.push_back(UID_JPEG2000LosslessOnlyTransferSyntax);
    l.push_back(UID_JPEG2000TransferSyntax);
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
  // `release_slot` frees the association's place under max_associations; it is called once,
  // as soon as the association is known to end.
  NodeScp(StoreHandler& handler, uint64_t association_id, std::string ae_title, uint64_t max_instance_bytes,
          std::function<void()> release_slot)
      : handler_(handler),
        association_id_(association_id),
        ae_title_(std::move(ae_title)),
        max_instance_bytes_(max_instance_bytes),
        release_slot_(std::move(release_slot)) {}

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
  // DCMTK calls this before it answers A-RELEASE-RP: freeing the slot here means a sender
  // that releases and at once opens its next association (a scanner sending study after
  // study) is never refused for a slot that is about to be free.
  void notifyReleaseRequest() override {
    released_ = true;
    release_slot_();
  }
  void notifyAbortRequest() override { release_slot_(); }
  // Any other end of the command loop, the DIMSE timeout of an idle association included:
  // DCMTK aborts the association next (and may wait up to the ACSE timeout for the peer to
  // close the connection); the slot is free from now.
  void notifyDIMSEError(const OFCondition& cond) override {
    if (cond == DIMSE_NODATAAVAILABLE) {
      SB_LOG(kWarning) << "association " << association_id_ << " from " << trim(getPeerAETitle())
                       << ": idle longer than dicom.dimse_timeout_s, aborting";
    }
    release_slot_();
  }

  // Called by DCMTK after each PDV of a data set with the bytes received so far. Beyond the
  // instance size limit the association is aborted at once: the data set is received into
  // memory, so waiting for its end to answer 0xA700 would let one sender fill the memory.
  void notifyRECEIVEProgress(const unsigned long byte_count) override {
    if (max_instance_bytes_ == 0 || oversize_ || byte_count <= max_instance_bytes_) return;
    oversize_ = true;
    SB_LOG(kWarning) << "association " << association_id_ << " from " << trim(getPeerAETitle())
                     << ": instance exceeds dicom.max_instance_mb (" << (max_instance_bytes_ >> 20)
                     << " MiB); aborting the association, nothing stored";
    abortAssociation();
  }
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
      if (!oversize_) {
        SB_LOG(kWarning) << "C-STORE from " << trim(getPeerAETitle()) << ": receiving the data set failed: "
                         << cond.text();
      }
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
  uint64_t max_instance_bytes_;
  std::function<void()> release_slot_;
  bool oversize_ = false;
  bool released_ = false;
  int stored_ = 0;
  int refused_ = 0;
};

// The peer's IPv4 address as DCMTK recorded it when it accepted the connection (numeric, since
// start() disables reverse DNS); empty when unknown. IPv4-mapped IPv6 is unwrapped.
std::string peer_ipv4(T_ASC_Association* assoc) {
  if (!assoc || !assoc->params) return {};
  std::string peer = trim(assoc->params->DULparams.callingPresentationAddress);
  if (peer.rfind("::ffff:", 0) == 0) peer = peer.substr(7);
  return peer;
}

void reject(T_ASC_Association* assoc, T_ASC_RejectParametersResult result, T_ASC_RejectParametersSource source,
            T_ASC_RejectParametersReason reason) {
  T_ASC_RejectParameters params{result, source, reason};
  ASC_rejectAssociation(assoc, &params);
}

int clamp_pdu(int bytes) { return std::clamp(bytes, ASC_MINIMUMPDUSIZE, ASC_MAXIMUMPDUSIZE); }

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

base::Result<Ipv4Block> parse_ipv4_block(std::string_view text) {
  const std::string s(text);
  const auto slash = s.find('/');
  const std::string address = s.substr(0, slash);
  int prefix = 32;
  if (slash != std::string::npos) {
    const std::string bits = s.substr(slash + 1);
    if (bits.empty() || bits.size() > 2 || bits.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(bits) > 32) {
      return base::invalid_argument("'" + s + "' is not an IPv4 address or CIDR block (prefix length 0..32)");
    }
    prefix = std::stoi(bits);
  }
  in_addr a{};
  if (::inet_pton(AF_INET, address.c_str(), &a) != 1) {
    return base::invalid_argument("'" + s + "' is not an IPv4 address or CIDR block (a.b.c.d or a.b.c.d/n)");
  }
  Ipv4Block block;
  block.mask = prefix == 0 ? 0u : ~0u << (32 - prefix);
  block.network = ntohl(a.s_addr);
  if ((block.network & ~block.mask) != 0) {
    return base::invalid_argument("'" + s + "' has host bits set beyond the /" + std::to_string(prefix) + " prefix");
  }
  return block;
}

bool peer_allowed(const std::vector<Ipv4Block>& blocks, std::string_view ipv4) {
  if (blocks.empty()) return true;
  in_addr a{};
  if (::inet_pton(AF_INET, std::string(ipv4).c_str(), &a) != 1) return false;
  const uint32_t host = ntohl(a.s_addr);
  return std::any_of(blocks.begin(), blocks.end(),
                     [&](const Ipv4Block& b) { return (host & b.mask) == b.network; });
}

DicomNodeOptions node_options_from(const Config& config) {
  DicomNodeOptions o;
  const DicomConfig& d = config.dicom;
  o.ae_title = d.ae_title;
  o.port = d.port;
  o.bind_address = d.bind_address;
  o.max_associations = d.max_associations;
  o.dimse_timeout_s = std::max(1, static_cast<int>(std::ceil(d.dimse_timeout_s)));
  o.allowed_calling_aes = d.allowed_calling_aes;
  o.allowed_peers = d.allowed_peers;
  o.max_pdu_bytes = d.max_pdu_bytes;
  o.max_instance_bytes = static_cast<uint64_t>(std::max(0, d.max_instance_mb)) << 20;
  o.tls.enabled = config.tls.enabled;
  o.tls.certificate = config.tls.certificate;
  o.tls.private_key = config.tls.private_key;
  o.tls.trusted_ca = config.tls.trusted_ca;
  o.tls.require_client_certificate = config.tls.require_client_certificate;
  return o;
}

SpoolStoreOptions store_options_from(const Config& config) {
  SpoolStoreOptions o;
  o.min_free_bytes = static_cast<uint64_t>(std::max(0, config.storage.min_free_mb)) << 20;
  o.max_instance_bytes = static_cast<uint64_t>(std::max(0, config.dicom.max_instance_mb)) << 20;
  o.max_instances_per_study = std::max(0, config.dicom.max_instances_per_study);
  return o;
}

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
  peer_blocks_.clear();
  for (const std::string& peer : options_.allowed_peers) {
    auto block = parse_ipv4_block(peer);
    if (!block.ok()) return block.status().with_context("dicom.allowed_peers");
    peer_blocks_.push_back(*block);
  }
  if (clamp_pdu(options_.max_pdu_bytes) != options_.max_pdu_bytes) {
    SB_LOG(kWarning) << "dicom.max_pdu_bytes " << options_.max_pdu_bytes << " is outside what DCMTK handles ("
                     << ASC_MINIMUMPDUSIZE << ".." << ASC_MAXIMUMPDUSIZE << "); using "
                     << clamp_pdu(options_.max_pdu_bytes);
  }
  if (options_.tls.enabled) SB_RETURN_IF_ERROR(set_up_tls());
  // Peer addresses stay numeric (allowed_peers compares them); it also spares every
  // association a reverse DNS lookup that may hang on a hospital network.
  dcmDisableGethostbyaddr.set(OFTrue);
  // Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is in the environment
  // (read for every accepted connection). With it on, each C-STORE waits for a delayed ACK:
  // about 90 ms per instance on loopback instead of under 1 ms. An explicit setting wins.
  ::setenv("TCP_NODELAY", "1", /*overwrite=*/0);
  // A peer that vanishes while we answer must cost an error, not the process: writing to its
  // closed socket raises SIGPIPE, whose default action terminates. Only the default is replaced.
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
  OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, options_.port, options_.acse_timeout_s, &network_);
  if (cond.bad()) {
    network_ = nullptr;
    tls_.reset();
    return base::unavailable("cannot listen on port " + std::to_string(options_.port) + ": " + cond.text() +
                             " (is another DICOM node running, or is the port privileged?)");
  }
  base::Status st;
  if (options_.bind_address != "0.0.0.0") st = rebind_listen_socket(network_, options_.bind_address, options_.port);
  if (st.ok() && tls_) {
    cond = ASC_setTransportLayer(network_, tls_.get(), OFFalse);
    if (cond.bad()) st = base::internal_error(std::string("cannot enable TLS on the DICOM port: ") + cond.text());
  }
  if (!st.ok()) {
    ASC_dropNetwork(&network_);
    network_ = nullptr;
    tls_.reset();
    return st;
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
  tls_.reset();
  started_ = false;
}

base::Status DicomNode::set_up_tls() {
  const NodeTlsOptions& t = options_.tls;
  auto readable = [](const std::string& path, const char* key) -> base::Status {
    if (path.empty()) return base::invalid_argument(std::string("tls.") + key + " is required when tls.enabled");
    if (::access(path.c_str(), R_OK) != 0) {
      return base::invalid_argument(std::string("tls.") + key + " '" + path + "' is not readable: " +
                                    std::strerror(errno));
    }
    return base::Status();
  };
  SB_RETURN_IF_ERROR(readable(t.certificate, "certificate"));
  SB_RETURN_IF_ERROR(readable(t.private_key, "private_key"));
  SB_RETURN_IF_ERROR(readable(t.trusted_ca, "trusted_ca"));
  auto layer = std::make_unique<DcmTLSTransportLayer>(NET_ACCEPTOR, nullptr, OFTrue);
  if (!*layer) return base::internal_error("cannot initialise OpenSSL for DICOM TLS");
  OFCondition cond = layer->setTLSProfile(TSP_Profile_BCP195_ND);
  if (cond.good()) cond = layer->activateCipherSuites();
  if (cond.bad()) return base::internal_error(std::string("TLS profile BCP 195: ") + cond.text());
  cond = layer->setPrivateKeyFile(t.private_key.c_str(), DCF_Filetype_PEM);
  if (cond.bad()) {
    return base::invalid_argument("tls.private_key '" + t.private_key + "' is not a PEM private key (or is encrypted): " +
                                  cond.text());
  }
  cond = layer->setCertificateFile(t.certificate.c_str(), DCF_Filetype_PEM);
  if (cond.bad()) {
    return base::invalid_argument("tls.certificate '" + t.certificate + "' is not a PEM certificate: " + cond.text());
  }
  if (!layer->checkPrivateKeyMatchesCertificate()) {
    return base::invalid_argument("tls.private_key does not match tls.certificate");
  }
  cond = layer->addTrustedCertificateFile(t.trusted_ca.c_str(), DCF_Filetype_PEM);
  if (cond.bad()) {
    return base::invalid_argument("tls.trusted_ca '" + t.trusted_ca + "' is not a PEM certificate: " + cond.text());
  }
  layer->setCertificateVerification(t.require_client_certificate ? DCV_requireCertificate : DCV_checkCertificate);
  tls_ = std::move(layer);
  return base::Status();
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
  config.setMaxReceivePDULength(static_cast<Uint32>(clamp_pdu(options_.max_pdu_bytes)));
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
    if (options_.on_progress) options_.on_progress();
    T_ASC_Association* assoc = nullptr;
    OFCondition cond =
        ASC_receiveAssociation(network_, &assoc, clamp_pdu(options_.max_pdu_bytes), nullptr, nullptr,
                               tls_ ? OFTrue : OFFalse, DUL_NOBLOCK, options_.accept_poll_s);
    reap_finished_workers(false);
    if (cond == DUL_NOASSOCIATIONREQUEST) {
      ASC_destroyAssociation(&assoc);
      continue;
    }
    if (cond.bad()) {
      if (!stop_requested_.load()) {
        SB_LOG(kWarning) << "DICOM node: receiving an association request failed"
                         << (tls_ ? " (TLS only: a plain TCP peer or a peer without a trusted certificate fails here)"
                                  : "")
                         << ": " << cond.text();
      }
      drop_and_destroy(assoc);
      continue;
    }
    const std::string calling_ae = trim(assoc->params->DULparams.callingAPTitle);
    const std::string peer = peer_ipv4(assoc);
    if (!peer_allowed(peer_blocks_, peer)) {
      SB_LOG(kWarning) << "DICOM node: rejecting association from " << calling_ae << " at "
                       << (peer.empty() ? "an unknown address" : peer) << ": peer not in dicom.allowed_peers";
      reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
      drop_and_destroy(assoc);
      continue;
    }
    if (!options_.allowed_calling_aes.empty() &&
        std::find(options_.allowed_calling_aes.begin(), options_.allowed_calling_aes.end(), calling_ae) ==
            options_.allowed_calling_aes.end()) {
      SB_LOG(kWarning) << "DICOM node: rejecting association from " << calling_ae << " at " << peer
                       << ": calling AE title not recognized (not in dicom.allowed_calling_aes)";
      reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
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
    auto slot_freed = std::make_shared<std::atomic<bool>>(false);
    auto release_slot = [this, slot_freed] {
      if (!slot_freed->exchange(true)) --active_;
    };
    ++active_;
    try {
      workers_.push_back(Worker{std::thread([this, assoc, shared, id, done, release_slot]() mutable {
                                  {
                                    NodeScp scp(handler_, id, options_.ae_title, options_.max_instance_bytes,
                                                release_slot);
                                    scp.setSharedConfig(shared);
                                    OFCondition result = scp.run(assoc);  // scp frees assoc
                                    if (result.bad()) {
                                      SB_LOG(kWarning) << "association " << id << ": " << result.text();
                                    }
                                  }
                                  release_slot();
                                  done->store(true);
                                }),
                                done});
    } catch (const std::system_error& e) {
      release_slot();
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

SpoolStoreHandler::SpoolStoreHandler(storage::Spool& spool, storage::Index& index, SpoolStoreOptions options)
    : spool_(spool), index_(index), options_(options) {}

SpoolStoreHandler::SpoolStoreHandler(storage::Spool& spool, storage::Index& index, uint64_t min_free_bytes)
    : spool_(spool), index_(index) {
  options_.min_free_bytes = min_free_bytes;
}

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
  if (free < options_.min_free_bytes) {
    return base::resource_exhausted("spool disk almost full: " + std::to_string(free >> 20) + " MiB free, at least " +
                                    std::to_string(options_.min_free_bytes >> 20) + " MiB kept in reserve");
  }
  const E_TransferSyntax xfer = DcmXfer(in.transfer_syntax_uid.c_str()).getXfer();
  if (options_.max_instance_bytes > 0) {
    // The encoded size as it will be written (the node already bounds the bytes received;
    // this also catches a deflated data set that expands beyond the limit).
    const uint64_t size = ds->calcElementLength(xfer == EXS_Unknown ? EXS_LittleEndianExplicit : xfer,
                                                EET_ExplicitLength);
    if (size > options_.max_instance_bytes) {
      return base::resource_exhausted("instance of " + std::to_string(size >> 20) + " MiB exceeds the " +
                                      std::to_string(options_.max_instance_bytes >> 20) + " MiB limit");
    }
  }
  if (options_.max_instances_per_study > 0) {
    SB_ASSIGN_OR_RETURN(std::optional<storage::StudyRow> row, index_.study(study));
    if (row && row->instance_count >= options_.max_instances_per_study) {
      // A re-sent instance that is already stored is not a new one: accept it.
      SB_ASSIGN_OR_RETURN(std::vector<storage::InstanceRecord> have, index_.instances_of_study(study));
      const bool known = std::any_of(have.begin(), have.end(), [&](const storage::InstanceRecord& r) {
        return r.sop_instance_uid == sop_instance;
      });
      if (!known) {
        return base::resource_exhausted("study already has " + std::to_string(row->instance_count) +
                                        " instances (limit " + std::to_string(options_.max_instances_per_study) + ")");
      }
    }
  }

  {
    std::lock_guard lock(mu_);
    open_[in.association_id].insert(study);
  }

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
    // Patient data: readable by the service user only, whatever the process umask (DCMTK
    // creates the file with 0666 & ~umask). Done before the rename makes it visible.
    if (::chmod(temp.c_str(), S_IRUSR | S_IWUSR) != 0) {
      return base::internal_error("cannot restrict the permissions of " + temp + ": " + std::strerror(errno));
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
