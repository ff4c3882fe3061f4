#include "firmware/status_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include "base/log.h"
#include "firmware/png_writer.h"
#include "image/nifti_io.h"

// Last: httplib.h pulls in <resolv.h>, whose `_res` macro breaks Eigen (via image/volume.h)
// when Eigen comes after it.
#include <httplib.h>

namespace firmware {
namespace fs = std::filesystem;
namespace {

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

template <typename T>
std::string opt_text(const std::optional<T>& v, const char* format, double scale = 1.0) {
  return v ? fmt(format, static_cast<double>(*v) * scale) : "-";
}

std::string duration_text(int64_t s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lldd %02lld:%02lld:%02lld", static_cast<long long>(s / 86400),
                static_cast<long long>(s / 3600 % 24), static_cast<long long>(s / 60 % 60),
                static_cast<long long>(s % 60));
  return buf;
}

std::string epoch_s_text(double s) { return s > 0 ? local_time_text(static_cast<int64_t>(s * 1000)) : "never"; }

// Colour and CSS animation of the LED picture per pattern (hal/led_pattern.h timings).
struct LedLook {
  const char* colour;
  const char* animation;  // "" = steady
};
LedLook led_look(const std::string& pattern, const std::string& state) {
  const char* colour = state == "fault" ? "#d32f2f" : state == "degraded" ? "#f9a825" : "#2e7d32";
  if (pattern == "blink_1hz") return {colour, "blink1 1s step-end infinite"};
  if (pattern == "blink_4hz") return {colour, "blink1 0.25s step-end infinite"};
  if (pattern == "double_blink") return {colour, "double 1s step-end infinite"};
  if (pattern == "off") return {"#9e9e9e", ""};
  return {colour, ""};
}

// Keeps at most `buckets` + 1 points: per time bucket the largest value (temperature) or the
// mean (power), so the chart stays small whatever the sampling rate; then the newest sample.
void downsample(std::vector<int64_t>& t, std::vector<std::optional<double>>& v, int64_t t0, int64_t t1, int buckets,
                bool use_max) {
  if (static_cast<int>(t.size()) <= buckets || t1 <= t0) return;
  // The newest sample stays as it is: the chart's "now" value is the live reading.
  const int64_t last_t = t.back();
  const std::optional<double> last_v = v.back();
  t.pop_back();
  v.pop_back();
  std::vector<int64_t> bt;
  std::vector<std::optional<double>> bv;
  const double width = static_cast<double>(t1 - t0) / buckets;
  size_t i = 0;
  for (int b = 0; b < buckets && i < t.size(); ++b) {
    const int64_t end = t0 + static_cast<int64_t>((b + 1) * width);
    double acc = 0;
    int n = 0;
    int64_t tsum = 0;
    int tn = 0;
    for (; i < t.size() && (t[i] < end || b == buckets - 1); ++i) {
      tsum += t[i] - t0;
      ++tn;
      if (!v[i]) continue;
      acc = use_max ? (n ? std::max(acc, *v[i]) : *v[i]) : acc + *v[i];
      ++n;
    }
    if (tn == 0) continue;
    bt.push_back(t0 + tsum / tn);
    bv.push_back(n ? std::optional<double>(use_max ? acc : acc / n) : std::nullopt);
  }
  bt.push_back(last_t);
  bv.push_back(last_v);
  t = std::move(bt);
  v = std::move(bv);
}

void no_store(httplib::Response& res) {
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Content-Type-Options", "nosniff");
}

}  // namespace

std::string render_svg_chart(const std::vector<int64_t>& t_ms, const std::vector<std::optional<double>>& values,
                             int64_t t0_ms, int64_t t1_ms, const std::string& title, const std::string& unit,
                             const std::string& colour, int width, int height) {
  const int left = 52, right = 12, top = 22, bottom = 20;
  const int pw = width - left - right, ph = height - top - bottom;
  std::optional<double> lo, hi, last;
  for (const auto& v : values) {
    if (!v) continue;
    lo = lo ? std::min(*lo, *v) : *v;
    hi = hi ? std::max(*hi, *v) : *v;
    last = v;
  }
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height << "\" role=\"img\" aria-label=\"" << html_escape(title) << "\">";
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"#fafafa\" stroke=\"#bbb\"/>";
  s << "<text x=\"" << left << "\" y=\"15\" font-size=\"13\" font-weight=\"bold\">" << html_escape(title);
  if (last) s << " \xE2\x80\x94 now " << fmt("%.1f", *last) << " " << html_escape(unit);
  s << "</text>";
  s << "<text x=\"" << left << "\" y=\"" << height - 5 << "\" font-size=\"11\">-"
    << std::max<int64_t>(1, (t1_ms - t0_ms) / 60'000) << " min</text>";
  s << "<text x=\"" << width - right << "\" y=\"" << height - 5 << "\" font-size=\"11\" text-anchor=\"end\">now</text>";
  if (!lo) {
    s << "<text x=\"" << left + pw / 2 << "\" y=\"" << top + ph / 2 << "\" font-size=\"12\" text-anchor=\"middle\" "
      << "fill=\"#777\">no data in this period</text></svg>";
    return s.str();
  }
  double y0 = std::floor(*lo), y1 = std::ceil(*hi);
  if (y1 - y0 < 1.0) {
    y0 -= 1.0;
    y1 += 1.0;
  }
  auto ypix = [&](double v) { return top + ph - (v - y0) / (y1 - y0) * ph; };
  auto xpix = [&](int64_t t) {
    return left + std::clamp(static_cast<double>(t - t0_ms) / std::max<int64_t>(1, t1_ms - t0_ms), 0.0, 1.0) * pw;
  };
  s << "<text x=\"" << left - 4 << "\" y=\"" << top + 10 << "\" font-size=\"11\" text-anchor=\"end\">"
    << fmt("%.0f", y1) << "</text>";
  s << "<text x=\"" << left - 4 << "\" y=\"" << top + ph << "\" font-size=\"11\" text-anchor=\"end\">"
    << fmt("%.0f", y0) << "</text>";
  s << "<text x=\"" << 4 << "\" y=\"" << top + ph / 2 + 4 << "\" font-size=\"11\">" << html_escape(unit) << "</text>";
  // One polyline per run of readable samples: a missing sensor or a pause of the daemon
  // (more than a minute without samples) is a gap, never a line to zero.
  std::string points;
  auto flush = [&] {
    if (!points.empty()) {
      s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"" << points << "\"/>";
    }
    points.clear();
  };
  std::optional<int64_t> prev_t;
  for (size_t i = 0; i < t_ms.size() && i < values.size(); ++i) {
    if (!values[i] || (prev_t && t_ms[i] - *prev_t > 60'000)) flush();
    prev_t = t_ms[i];
    if (!values[i]) continue;
    char buf[48];
    std::snprintf(buf, sizeof buf, "%.1f,%.1f ", xpix(t_ms[i]), ypix(*values[i]));
    points += buf;
  }
  flush();
  s << "</svg>";
  return s.str();
}

std::string render_status_page(const StatusReport& r, bool has_picture, int refresh_s) {
  const nlohmann::json j = to_json(r);
  std::ostringstream h;
  const LedLook look = led_look(r.led.pattern, r.led.state);
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  if (refresh_s > 0) h << "<meta http-equiv=\"refresh\" content=\"" << refresh_s << "\">";
  h << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    << "<title>strokebox status: " << html_escape(r.led.state) << "</title><style>"
    << "body{font-family:sans-serif;margin:16px;color:#222;max-width:1000px}"
    << "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}"
    << "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;vertical-align:top}"
    << "th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}.num{text-align:right}"
    << ".bad{color:#c62828;font-weight:bold}.ok{color:#2e7d32}.muted{color:#777}"
    << ".led{display:inline-block;vertical-align:middle;margin-right:8px}"
    << "#led-lamp{animation:" << (look.animation[0] ? look.animation : "none") << "}"
    << "@keyframes blink1{0%{opacity:1}50%{opacity:.12}}"
    << "@keyframes double{0%{opacity:1}15%{opacity:.12}30%{opacity:1}45%{opacity:.12}}"
    << "img.result{max-width:100%;min-width:256px;border:1px solid #ccc;image-rendering:pixelated}"
    << "</style></head><body>\n";

  // Header: the LED as it blinks on the box, and its meaning.
  h << "<h1><svg class=\"led\" width=\"22\" height=\"22\" viewBox=\"0 0 22 22\"><circle id=\"led-lamp\" cx=\"11\" "
       "cy=\"11\" r=\"9\" fill=\""
    << look.colour << "\" stroke=\"#333\"/></svg>strokebox <span id=\"box-state\">" << html_escape(r.led.state)
    << "</span></h1>";
  h << "<div>status LED: <b id=\"led-pattern\">" << html_escape(r.led.pattern) << "</b>";
  if (!r.led.detail.empty()) h << " \xE2\x80\x94 " << html_escape(r.led.detail);
  h << " <span class=\"muted\">(updated " << html_escape(local_time_text(r.collected_ms)) << ")</span></div>\n";

  // Appliance facts.
  h << "<h2>Appliance</h2><table id=\"appliance\">";
  auto row = [&](const std::string& k, const std::string& v, bool bad = false) {
    h << "<tr><th>" << html_escape(k) << "</th><td" << (bad ? " class=\"bad\"" : "") << ">" << html_escape(v)
      << "</td></tr>";
  };
  row("software", "strokebox " + r.version);
  if (r.daemon_running) {
    row("daemon", "running, pid " + std::to_string(r.daemon->pid) + ", up " +
                      duration_text((r.collected_ms - r.daemon->started_ms) / 1000) + " since " +
                      local_time_text(r.daemon->started_ms));
  } else if (r.daemon) {
    row("daemon", "NOT RUNNING (last seen " + local_time_text(r.daemon->updated_ms) + ")", true);
  } else {
    row("daemon", "no state recorded", true);
  }
  if (r.daemon) {
    const auto& b = j["board"];
    const bool ok = b["power_mode_ok"].get<bool>();
    row("board", r.daemon->board);
    for (const auto& w : b.value("warnings", nlohmann::json::array())) {
      if (w.is_string()) row("front panel", w.get<std::string>(), true);
    }
    row("power mode",
        (r.daemon->power_mode_id ? std::to_string(*r.daemon->power_mode_id) : std::string("-")) + " (" +
            r.daemon->power_mode_name + ")" +
            (ok ? "" : ", expected " + std::to_string(r.daemon->expected_power_mode)),
        !ok);
  }
  if (r.latest) {
    const TelemetrySample& t = *r.latest;
    std::string temps;
    for (const auto& [zone, c] : t.temps_c) temps += (temps.empty() ? "" : ", ") + zone + " " + opt_text(c, "%.1f");
    row("temperatures (\xC2\xB0" "C)", temps.empty() ? "-" : temps);
    row("hottest", opt_text(t.max_temp_c, "%.1f \xC2\xB0" "C"));
    row("fan", opt_text(t.fan_pwm, "%.0f %%", 100.0 / 255.0));
    std::string power = "VDD_IN " + opt_text(t.vdd_in_mW, "%.2f W", 1e-3);
    for (const auto& rail : t.rails) {
      if (rail.label != "VDD_IN") power += ", " + rail.label + " " + opt_text(rail.power_mW, "%.2f W", 1e-3);
    }
    row("power", power);
    row("load", "CPU " + opt_text(t.cpu_load_pct, "%.0f %%") + ", GPU " + opt_text(t.gpu_load_pct, "%.0f %%"));
    row("memory free", opt_text(t.mem_available_bytes, "%.0f MiB", 1.0 / (1 << 20)));
    row("sampled", local_time_text(t.t_ms));
  } else {
    row("telemetry", "no sample recorded", true);
  }
  const bool disk_low = j["disk"]["low"].get<bool>();
  row("disk free", opt_text(r.disk_free_bytes, "%.1f GiB", 1.0 / (1 << 30)) + " (minimum " +
                       std::to_string(r.min_free_mb) + " MiB)" + (disk_low ? " LOW" : ""),
      disk_low);
  const auto& e = j["engine"];
  std::string engine = "backend " + e.value("backend", "-") + ", precision " +
                       e.value("precision_used", e.value("precision", "-")) + ", model " +
                       e.value("model_id", e.value("model_dir", "-"));
  if (e.contains("arena_bytes") && e["arena_bytes"].is_number()) {
    engine += ", arena " + fmt("%.0f MiB", e["arena_bytes"].get<double>() / (1 << 20));
  }
  row("engine", engine);
  const auto& d = j["daemon"];
  if (d.contains("threads")) {
    std::string threads;
    bool stuck = false;
    for (const auto& t : d["threads"]) {
      threads += (threads.empty() ? "" : ", ") + t.value("name", "?") + (t.value("stale", false) ? " STUCK" : " ok");
      stuck = stuck || t.value("stale", false);
    }
    row("threads", threads, stuck);
    if (d.value("thermal_hold", false)) row("thermal hold", "new jobs wait until the box cools down", true);
    if (!d.value("current_study", "").empty()) {
      const std::string stage = d.value("current_stage", "");
      row("processing", d["current_study"].get<std::string>() + (stage.empty() ? "" : " (" + stage + ")"));
    }
  }
  h << "</table>\n";

  // Charts of the last hour.
  h << "<h2>Last hour</h2>";
  {
    std::vector<int64_t> t;
    std::vector<std::optional<double>> temp, power;
    for (const auto& p : r.history) {
      t.push_back(p.t_ms);
      temp.push_back(p.max_temp_c);
      power.push_back(p.vdd_in_mW ? std::optional<double>(*p.vdd_in_mW / 1000.0) : std::nullopt);
    }
    const int64_t t1 = r.collected_ms;
    const int64_t t0 = t1 - 3'600'000;
    auto tt = t;
    downsample(tt, temp, t0, t1, 320, /*use_max=*/true);
    downsample(t, power, t0, t1, 320, /*use_max=*/false);
    h << "<div id=\"chart-temperature\">"
      << render_svg_chart(tt, temp, t0, t1, "Hottest temperature", "\xC2\xB0" "C", "#d84315") << "</div>";
    h << "<div id=\"chart-power\">" << render_svg_chart(t, power, t0, t1, "Module power (VDD_IN)", "W", "#1565c0")
      << "</div>\n";
  }

  // Queue.
  h << "<h2>Queue</h2><table id=\"queue\"><tr>";
  for (const char* k : {"received", "queued", "running", "done", "failed"}) h << "<th>" << k << "</th>";
  h << "</tr><tr>";
  for (const char* k : {"received", "queued", "running", "done", "failed"}) {
    auto it = r.studies.find(k);
    h << "<td class=\"num\">" << (it == r.studies.end() ? 0 : it->second) << "</td>";
  }
  h << "</tr></table>\n";

  // Last result picture.
  h << "<h2>Last result</h2>";
  if (has_picture) {
    h << "<img class=\"result\" id=\"last-result\" src=\"/last_result.png\" alt=\"DWI slice with the most lesion, "
         "lesion outlined\">";
  } else {
    h << "<p class=\"muted\">no finished study yet</p>";
  }

  // Last studies.
  h << "<h2>Last studies</h2><table id=\"studies\"><tr><th>received</th><th>study</th>";
  if (r.show_patient_names) h << "<th>patient</th>";
  h << "<th>state</th><th>lesion (ml)</th><th>lesions</th><th>processing (s)</th><th>energy (J)</th>"
       "<th>peak temp (\xC2\xB0" "C)</th></tr>";
  if (r.recent.empty()) h << "<tr><td colspan=\"9\" class=\"muted\">none received yet</td></tr>";
  for (const auto& s : r.recent) {
    const bool done = s.result && s.result->status == "done";
    h << "<tr><td>" << html_escape(local_time_text(s.study.last_received_ms)) << "</td><td>"
      << html_escape(s.study.study_uid) << "</td>";
    if (r.show_patient_names) h << "<td>" << html_escape(s.study.patient_id) << "</td>";
    h << "<td" << (s.study.state == "failed" ? " class=\"bad\"" : "") << ">" << html_escape(s.study.state) << "</td>";
    if (done) {
      h << "<td class=\"num\">" << fmt("%.1f", s.result->lesion_volume_ml) << "</td><td class=\"num\">"
        << s.result->lesion_count << "</td><td class=\"num\">"
        << fmt("%.1f", processing_ms(s.result->timings_json) / 1000.0) << "</td><td class=\"num\">"
        << opt_text(s.result->energy_j, "%.0f") << "</td><td class=\"num\">" << opt_text(s.result->peak_temp_c, "%.1f")
        << "</td>";
    } else {
      h << "<td colspan=\"5\" class=\"muted\">" << html_escape(s.result ? s.result->reason : std::string()) << "</td>";
    }
    h << "</tr>";
  }
  h << "</table>\n";

  // Delivery.
  h << "<h2>Sending results</h2><table id=\"destinations\">";
  if (r.destinations.empty()) {
    h << "<tr><td class=\"muted\">no destinations</td></tr>";
  } else {
    h << "<tr><th>destination</th><th>pending</th><th>delivered</th><th>last success</th><th>last error</th></tr>";
    for (const auto& dst : r.destinations) {
      h << "<tr><td>" << html_escape(dst.name) << "</td><td class=\"num\">" << dst.pending
        << "</td><td class=\"num\">" << dst.delivered << "</td><td>" << html_escape(epoch_s_text(dst.last_success_at))
        << "</td><td" << (dst.last_error.empty() ? "" : " class=\"bad\"") << ">"
        << html_escape(dst.last_error.empty() ? "-" : epoch_s_text(dst.last_error_at) + ": " + dst.last_error)
        << "</td></tr>";
    }
  }
  h << "</table>\n";

  // Errors.
  h << "<h2>Recent errors</h2><table id=\"errors\">";
  bool any = false;
  for (const auto& f : r.failures) {
    h << "<tr><td>" << html_escape(local_time_text(f.finished_at_ms)) << "</td><td>" << html_escape(f.study_uid)
      << "</td><td class=\"bad\">" << html_escape(f.reason) << "</td></tr>";
    any = true;
  }
  for (const auto& dst : r.destinations) {
    if (dst.last_error.empty()) continue;
    h << "<tr><td>" << html_escape(epoch_s_text(dst.last_error_at)) << "</td><td>destination "
      << html_escape(dst.name) << "</td><td class=\"bad\">" << html_escape(dst.last_error) << "</td></tr>";
    any = true;
  }
  for (const auto& n : r.notes) {
    h << "<tr><td></td><td>note</td><td>" << html_escape(n) << "</td></tr>";
    any = true;
  }
  if (!any) h << "<tr><td class=\"muted\">none</td></tr>";
  h << "</table>\n";
  h << "<p class=\"muted\">data directory " << html_escape(r.data_dir) << " \xC2\xB7 <a href=\"/status.json\">"
    << "status.json</a></p></body></html>\n";
  return h.str();
}

base::Result<std::string> last_result_png(const Config& config, const StatusReport& report) {
  const storage::StudySummary* last = nullptr;
  for (const auto& s : report.recent) {
    if (s.result && s.result->status == "done") {
      last = &s;
      break;
    }
  }
  if (last == nullptr) return base::not_found("no finished study yet");
  const fs::path dir = fs::path(config.results_dir()) / last->study.study_uid;
  const fs::path overlay = dir / "overlay";
  std::error_code ec;
  if (!fs::is_directory(overlay, ec)) return base::not_found("no overlay series in " + dir.string());
  // The slice with the most lesion, from the mask (same sorted-slice order as the overlay).
  int k = 0;
  auto mask = image::read_nifti((dir / "lesion_mask.nii.gz").string());
  if (mask.ok()) {
    int64_t best = -1;
    const int64_t plane = mask->ni() * mask->nj();
    for (int64_t kk = 0; kk < mask->nk(); ++kk) {
      int64_t n = 0;
      for (int64_t p = 0; p < plane; ++p) n += mask->data[static_cast<size_t>(kk * plane + p)] > 0.5f;
      if (n > best) {
        best = n;
        k = static_cast<int>(kk);
      }
    }
  }
  char name[32];
  std::snprintf(name, sizeof name, "%04d.dcm", k + 1);
  fs::path file = overlay / name;
  if (!fs::exists(file, ec)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(overlay, ec)) {
      if (entry.path().extension() == ".dcm") files.push_back(entry.path());
    }
    if (files.empty()) return base::not_found("no overlay images in " + overlay.string());
    std::sort(files.begin(), files.end());
    file = files[files.size() / 2];
  }
  DcmFileFormat ff;
  OFCondition cond = ff.loadFile(file.c_str());
  if (cond.bad()) return base::data_loss(file.string() + ": " + cond.text());
  DcmDataset* ds = ff.getDataset();
  Uint16 rows = 0, cols = 0, spp = 0;
  const Uint8* px = nullptr;
  unsigned long count = 0;
  if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() ||
      ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad() || (spp != 1 && spp != 3) ||
      ds->findAndGetUint8Array(DCM_PixelData, px, &count).bad() || px == nullptr ||
      count < static_cast<unsigned long>(rows) * cols * spp) {
    return base::data_loss(file.string() + ": not an 8-bit RGB or grey image");
  }
  static std::atomic<int> counter{0};
  const fs::path tmp = fs::temp_directory_path() / ("strokebox-status-" + std::to_string(::getpid()) + "-" +
                                                    std::to_string(counter.fetch_add(1)) + ".png");
  SB_RETURN_IF_ERROR(write_png(tmp.string(), cols, rows, spp,
                               std::span<const uint8_t>(px, static_cast<size_t>(rows) * cols * spp)));
  std::ifstream in(tmp, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove(tmp, ec);
  if (bytes.empty()) return base::unavailable("cannot read back " + tmp.string());
  return bytes;
}

StatusServerOptions status_server_options(const Config& config) {
  StatusServerOptions o;
  o.bind_address = config.status.bind_address;
  o.port = config.status.port;
  o.config = config;
  o.show_patient_names = config.status.show_patient_names;
  return o;
}

struct StatusServer::Impl {
  StatusServerOptions options;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> finished{false};
  int port = 0;
  std::mutex stop_mu;
  bool stopped = false;
  // The last picture, keyed by overlay directory and its modification time.
  std::mutex png_mu;
  std::string png_key;
  std::string png;

  base::Result<StatusReport> collect() {
    StatusOptions so;
    so.history_minutes = options.history_minutes;
    so.show_patient_names = options.show_patient_names;
    return collect_status(options.config, so);
  }

  base::Result<std::string> picture(const StatusReport& report) {
    std::string key;
    for (const auto& s : report.recent) {
      if (s.result && s.result->status == "done") {
        const fs::path p = fs::path(options.config.results_dir()) / s.study.study_uid / "overlay";
        std::error_code ec;
        auto t = fs::last_write_time(p, ec);
        if (!ec) key = p.string() + "@" + std::to_string(t.time_since_epoch().count());
        break;
      }
    }
    {
      std::lock_guard lock(png_mu);
      if (!key.empty() && key == png_key) return png;
    }
    SB_ASSIGN_OR_RETURN(std::string bytes, last_result_png(options.config, report));
    std::lock_guard lock(png_mu);
    png_key = key;
    png = bytes;
    return bytes;
  }

  void routes() {
    // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second
    // daemon bind the same port silently and share its connections.
    server.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    server.set_read_timeout(5, 0);
    server.set_write_timeout(5, 0);
    server.set_keep_alive_max_count(20);
    server.set_payload_max_length(4096);
    const int threads = std::max(1, options.worker_threads);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    // Read-only: anything but GET and HEAD is refused before routing.
    server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "GET" || req.method == "HEAD") return httplib::Server::HandlerResponse::Unhandled;
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("405 method not allowed: this status page is read-only\n", "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    });
    server.Get("/", [this](const httplib::Request&, httplib::Response& res) {
      no_store(res);
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
                     "form-action 'none'; frame-ancestors 'none'");
      auto report = collect();
      if (!report.ok()) {
        res.status = 503;
        res.set_content("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" "
                        "content=\"10\"><title>strokebox status: unavailable</title></head><body><h1>strokebox</h1>"
                        "<p>status unavailable: " +
                            html_escape(report.status().to_string()) + "</p></body></html>\n",
                        "text/html; charset=utf-8");
        return;
      }
      const bool has_picture = picture(*report).ok();
      res.set_content(render_status_page(*report, has_picture, options.refresh_s), "text/html; charset=utf-8");
    });
    server.Get("/status.json", [this](const httplib::Request&, httplib::Response& res) {
      no_store(res);
      auto report = collect();
      if (!report.ok()) {
        res.status = 503;
        res.set_content(nlohmann::json{{"error", report.status().to_string()}}.dump() + "\n", "application/json");
        return;
      }
      res.set_content(to_json(*report).dump(2) + "\n", "application/json");
    });
    server.Get("/last_result.png", [this](const httplib::Request&, httplib::Response& res) {
      no_store(res);
      auto report = collect();
      base::Result<std::string> png = report.ok() ? picture(*report) : base::Result<std::string>(report.status());
      if (!png.ok()) {
        res.status = png.status().code() == base::Code::kNotFound ? 404 : 500;
        res.set_content(png.status().to_string() + "\n", "text/plain; charset=utf-8");
        return;
      }
      res.set_content(*png, "image/png");
    });
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        res.set_content(std::to_string(res.status) + "\n", "text/plain; charset=utf-8");
      }
    });
    server.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      SB_LOG(kError) << "status page " << req.path << ": " << what;
      res.status = 500;
      res.set_content("500 internal error\n", "text/plain; charset=utf-8");
    });
  }
};

StatusServer::StatusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusServer::~StatusServer() { stop(); }

base::Result<std::unique_ptr<StatusServer>> StatusServer::start(StatusServerOptions options) {
  if (options.port < 0 || options.port > 65535) {
    return base::invalid_argument("status page port " + std::to_string(options.port) + " outside 0..65535");
  }
  if (options.bind_address.empty()) return base::invalid_argument("status page bind address is empty");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->routes();
  const std::string& host = impl->options.bind_address;
  if (impl->options.port == 0) {
    impl->port = impl->server.bind_to_any_port(host);
    if (impl->port <= 0) return base::unavailable("status page: cannot listen on " + host + " (any port)");
  } else {
    if (!impl->server.bind_to_port(host, impl->options.port)) {
      return base::unavailable("status page: cannot listen on " + host + ":" + std::to_string(impl->options.port) +
                               " (port in use, or not an address of this machine)");
    }
    impl->port = impl->options.port;
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    if (!raw->server.listen_after_bind()) {
      SB_LOG(kWarning) << "status page server stopped with an error";
    }
    raw->finished.store(true);
  });
  SB_LOG(kInfo) << "status page on http://" << host << ":" << impl->port << "/";
  return std::unique_ptr<StatusServer>(new StatusServer(std::move(impl)));
}

void StatusServer::stop() {
  if (!impl_) return;
  std::lock_guard lock(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  // httplib's stop() only acts once the accept loop runs: wait for it (or for its end).
  while (!impl_->server.is_running() && !impl_->finished.load()) std::this_thread::yield();
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int StatusServer::port() const { return impl_->port; }

}  // namespace firmware
