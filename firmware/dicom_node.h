// The DICOM node: a Storage SCP (C-STORE of MR and Enhanced MR images) and Verification SCP
// (C-ECHO) on DCMTK's dcmnet. The network layer only receives and answers; what "store" means
// is behind the StoreHandler interface. SpoolStoreHandler, the real one, acknowledges an
// instance only after it is in the spool (fsync, rename) and in the index ("nothing lost").
// Usage: DicomNode node(options, handler); node.start(); ... node.stop();
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "storage/index.h"
#include "storage/spool.h"

class DcmDataset;
class DcmTLSTransportLayer;
struct T_ASC_Network;

namespace firmware {

struct Config;

/// SOP classes the node accepts for C-STORE (PS3.4 Annex B.5).
inline constexpr const char* kMrImageStorage = "1.2.840.10008.5.1.4.1.1.4";
inline constexpr const char* kEnhancedMrImageStorage = "1.2.840.10008.5.1.4.1.1.4.1";

/// One dataset received by C-STORE, handed to StoreHandler::store on the association's thread.
struct IncomingInstance {
  DcmDataset* dataset = nullptr;          // owned by the node, valid during the call
  std::string transfer_syntax_uid;        // of the presentation context it arrived on
  std::string affected_sop_class_uid;     // from the C-STORE request (command set)
  std::string affected_sop_instance_uid;  // from the C-STORE request (command set)
  std::string calling_ae;
  std::string peer_host;
  uint64_t association_id = 0;            // unique per association within this process
};

/// What the network layer calls. Implementations must be thread-safe (one thread per
/// association).
class StoreHandler {
 public:
  virtual ~StoreHandler() = default;
  /// Stores the instance durably; OK means the sender may forget it. An error becomes a
  /// DIMSE failure status (store_status_for) with the message as Error Comment.
  virtual base::Status store(const IncomingInstance& instance) = 0;
  /// The association ended (released, aborted or broken); no more stores come from it.
  virtual void association_ended(uint64_t association_id, bool released) {}
};

/// C-STORE response status for an error code (PS3.4 Table B.2-1, PS3.7 Annex C):
/// kResourceExhausted/kUnavailable -> 0xA700 Refused: Out of Resources,
/// kInvalidArgument -> 0xA900 Error: Data Set Does Not Match SOP Class,
/// kDataLoss -> 0xC000 Error: Cannot Understand, everything else -> 0x0110 Processing Failure.
/// kOk -> 0x0000 Success.
uint16_t store_status_for(base::Code code);

/// An IPv4 address block: a peer `a` is inside when (a & mask) == network (host byte order).
struct Ipv4Block {
  uint32_t network = 0;
  uint32_t mask = 0;
};

/// Parses "a.b.c.d" (a /32 block) or "a.b.c.d/n" (CIDR, n in 0..32; host bits must be 0).
/// Errors: kInvalidArgument naming the text.
base::Result<Ipv4Block> parse_ipv4_block(std::string_view text);

/// True when `ipv4` (dotted quad) is inside one of `blocks`, or when `blocks` is empty (any
/// peer). An address that does not parse is never allowed by a non-empty list.
bool peer_allowed(const std::vector<Ipv4Block>& blocks, std::string_view ipv4);

/// DICOM over TLS (PS3.15 Annex B.1, DCMTK dcmtls, BCP 195 non-downgrading profile). When
/// enabled the node accepts TLS connections only: a plain TCP peer fails the handshake.
struct NodeTlsOptions {
  bool enabled = false;
  std::string certificate;   // PEM: the node's certificate
  std::string private_key;   // PEM: its private key, unencrypted
  std::string trusted_ca;    // PEM: CA certificate(s) that sign accepted peers
  bool require_client_certificate = true;  // false: a peer certificate is checked if sent
};

struct DicomNodeOptions {
  std::string ae_title = "STROKEBOX";
  int port = 11112;
  std::string bind_address = "0.0.0.0";  // IPv4; 0.0.0.0 = all interfaces
  int max_associations = 4;              // concurrent; more are rejected (transient)
  int dimse_timeout_s = 30;              // idle association aborted after this
  int acse_timeout_s = 30;               // association negotiation timeout
  int accept_poll_s = 1;                 // how often the accept loop checks for stop()
  /// Called by the accept loop on every turn (at least every accept_poll_s, or after an
  /// association request was read: up to acse_timeout_s for a silent peer). The daemon beats
  /// the node's watchdog heartbeat here. May be empty.
  std::function<void()> on_progress;
  /// Calling AE titles allowed to associate (compared without padding, case-sensitive);
  /// empty = any. Others are rejected permanently: "calling AE title not recognized".
  std::vector<std::string> allowed_calling_aes;
  /// Peers allowed to associate: IPv4 addresses or CIDR blocks; empty = any. Others are
  /// rejected permanently before any presentation context is negotiated.
  std::vector<std::string> allowed_peers;
  /// Maximum PDU length we receive (PS3.8 D.3.3.1; DCMTK handles 4096..131072, clamped).
  int max_pdu_bytes = 65536;
  /// A data set whose received bytes exceed this makes the node abort the association while
  /// receiving (memory stays bounded; nothing is written). 0 = no limit.
  uint64_t max_instance_bytes = 256ull << 20;
  NodeTlsOptions tls;
};

/// The node's options from the appliance configuration: [dicom] (ae_title, port,
/// bind_address, max_associations, dimse_timeout_s rounded up to whole seconds,
/// allowed_calling_aes, allowed_peers, max_pdu_bytes, max_instance_mb) and [tls].
DicomNodeOptions node_options_from(const Config& config);

class DicomNode {
 public:
  /// `handler` must outlive the node.
  DicomNode(DicomNodeOptions options, StoreHandler& handler);
  ~DicomNode();  // stop()
  DicomNode(const DicomNode&) = delete;
  DicomNode& operator=(const DicomNode&) = delete;

  /// Opens the listening port (synchronously, so errors come back here) and starts the accept
  /// thread. Errors: kUnavailable (port in use or not permitted), kInvalidArgument (bind
  /// address, an allowed_peers entry, TLS certificate/key/CA unreadable or not matching),
  /// kFailedPrecondition (already started).
  base::Status start();
  /// Stops accepting, waits for open associations to end (each ends within the DIMSE
  /// timeout), closes the port. Thread-safe and idempotent; not async-signal-safe.
  void stop();

  const DicomNodeOptions& options() const { return options_; }
  /// Associations being served right now (one that is releasing no longer counts).
  int active_associations() const { return active_.load(); }

 private:
  void accept_loop();
  void reap_finished_workers(bool wait_all);
  base::Status set_up_tls();

  DicomNodeOptions options_;
  StoreHandler& handler_;
  std::vector<Ipv4Block> peer_blocks_;
  std::unique_ptr<DcmTLSTransportLayer> tls_;  // outlives network_
  T_ASC_Network* network_ = nullptr;
  std::thread acceptor_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<int> active_{0};
  std::mutex stop_mu_;
  bool started_ = false;
  std::atomic<uint64_t> next_association_id_{1};

  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_;  // touched by the accept thread and by stop() after joining it
};

/// Limits of SpoolStoreHandler; each refusal is 0xA700 Refused: Out of Resources with nothing
/// written.
struct SpoolStoreOptions {
  uint64_t min_free_bytes = 64ull << 20;       // refuse when the spool's file system has less free
  uint64_t max_instance_bytes = 256ull << 20;  // refuse a data set larger than this; 0 = no limit
  /// Refuse a new instance of a study that already has this many in the index (a re-sent
  /// instance already stored is still accepted). 0 = no limit. Concurrent associations
  /// sending the same study may overshoot by at most one instance each.
  int64_t max_instances_per_study = 5000;
};

/// The handler's limits from the configuration: storage.min_free_mb, dicom.max_instance_mb,
/// dicom.max_instances_per_study.
SpoolStoreOptions store_options_from(const Config& config);

/// The real StoreHandler: checks the instance, writes it atomically into the spool, records it
/// in the index, and remembers which studies have an association still open (the daemon
/// queues a study only after its association ended and the quiet time passed).
class SpoolStoreHandler : public StoreHandler {
 public:
  SpoolStoreHandler(storage::Spool& spool, storage::Index& index, SpoolStoreOptions options);
  /// `min_free_bytes`: refuse (0xA700) when the spool's file system has less free space;
  /// the other limits keep their defaults.
  SpoolStoreHandler(storage::Spool& spool, storage::Index& index, uint64_t min_free_bytes = 64ull << 20);

  /// Errors: kInvalidArgument (SOP class not accepted, UIDs missing, malformed or unsafe, or
  /// not matching the command), kResourceExhausted (disk full, instance too large, study
  /// has too many instances), the spool's or index's error.
  base::Status store(const IncomingInstance& instance) override;
  void association_ended(uint64_t association_id, bool released) override;

  /// Study UIDs that received an instance on an association that has not ended yet.
  std::set<std::string> studies_with_open_associations() const;

 private:
  storage::Spool& spool_;
  storage::Index& index_;
  SpoolStoreOptions options_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::set<std::string>> open_;  // association -> studies it touched
};

}  // namespace firmware
