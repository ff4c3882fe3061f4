// The technician's read-only HTTP status page (cpp-httplib), bound to loopback by default:
//   GET /                 HTML: box state and LED, board, temperatures, power, disk, engine,
//                         queue, last 10 studies, result delivery, recent errors, and inline SVG
//                         charts of temperature and power over the last hour (no scripts,
//                         nothing loaded from elsewhere; refreshes itself every 10 s)
//   GET /status.json      the same facts as `strokebox status --json` (firmware/status_report.h)
//   GET /last_result.png  the overlay frame (DWI slice with the most lesion, lesion outlined)
//                         of the newest finished study; 404 when there is none
// HEAD is answered like GET; every other method gets 405. Patient IDs are hidden unless
// show_patient_names. Usage (the daemon):
//   SB_ASSIGN_OR_RETURN(auto page, StatusServer::start(status_server_options(config)));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "firmware/config.h"
#include "firmware/status_report.h"

namespace firmware {

struct StatusServerOptions {
  std::string bind_address = "127.0.0.1";  // IPv4 address to listen on; loopback by default
  int port = 0;                            // 0: an ephemeral port (tests); see port()
  Config config;                           // data_dir, destinations, min_free_mb for collect_status
  bool show_patient_names = false;
  int history_minutes = 60;                // span of the charts
  int refresh_s = 10;                      // the page reloads itself (meta refresh); 0 = never
  int worker_threads = 2;                  // HTTP worker threads (requests are cheap)
};

/// Options from the configuration's [status] section (bind_address, port, show_patient_names).
StatusServerOptions status_server_options(const Config& config);

class StatusServer {
 public:
  /// Binds and starts serving on a background thread. Errors: kInvalidArgument (port outside
  /// 0..65535, empty address), kUnavailable (cannot bind: address not local, port in use).
  static base::Result<std::unique_ptr<StatusServer>> start(StatusServerOptions options);
  ~StatusServer();  // stop()
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  /// Stops listening and waits for the serving thread; idempotent.
  void stop();
  /// The port actually bound (the ephemeral one when options.port was 0).
  int port() const;

  struct Impl;

 private:
  explicit StatusServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The HTML page for `report` (what GET / serves). `has_picture`: show /last_result.png.
std::string render_status_page(const StatusReport& report, bool has_picture, int refresh_s = 10);

/// An inline SVG line chart of `values` (nullopt = gap) against `t_ms` over [t0_ms, t1_ms],
/// `width` x `height` px, with the y range, unit and the last value written on it.
std::string render_svg_chart(const std::vector<int64_t>& t_ms, const std::vector<std::optional<double>>& values,
                             int64_t t0_ms, int64_t t1_ms, const std::string& title, const std::string& unit,
                             const std::string& colour, int width = 640, int height = 160);

/// The picture of the newest study whose result is "done": PNG bytes of the overlay frame
/// (results/<uid>/overlay/NNNN.dcm) at the slice of lesion_mask.nii.gz with the most lesion.
/// Errors: kNotFound (no finished study, or its overlay is missing), kDataLoss (unreadable
/// overlay file or mask), kUnavailable (cannot write the temporary PNG).
base::Result<std::string> last_result_png(const Config& config, const StatusReport& report);

}  // namespace firmware
