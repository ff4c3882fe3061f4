#include "firmware/daemon.h"

#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "hal/sim_board.h"
#include "storage/retention.h"

namespace firmware {
namespace fs = std::filesystem;

namespace {
std::chrono::milliseconds seconds_ms(double s) {
  return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(s * 1000.0)));
}
}  // namespace

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {}

Daemon::~Daemon() { stop(); }

base::Result<std::unique_ptr<Daemon>> Daemon::create(DaemonOptions options) {
  if (!options.processor) return base::invalid_argument("daemon needs a study processor");
  SB_RETURN_IF_ERROR(validate_config(options.config));
  std::unique_ptr<Daemon> d(new Daemon(std::move(options)));
  const Config& c = d->options_.config;
  SB_RETURN_IF_ERROR(storage::create_directories_durable(c.storage.data_dir)
                         .with_context("creating the data directory (storage.data_dir)"));
  SB_RETURN_IF_ERROR(storage::create_directories_durable(c.spool_dir()));
  SB_RETURN_IF_ERROR(storage::create_directories_durable(c.results_dir()));

  storage::Index::Options index_options;
  index_options.max_attempts = c.jobs.max_attempts;
  index_options.retry_delay_ms = static_cast<int64_t>(c.jobs.retry_delay_s * 1000.0);
  SB_ASSIGN_OR_RETURN(d->index_, storage::Index::open(c.database_path(), index_options));

  SB_ASSIGN_OR_RETURN(int requeued, d->index_->requeue_interrupted_jobs(storage::now_ms()));
  if (requeued > 0) SB_LOG(kWarning) << "re-queued " << requeued << " job(s) interrupted by a crash or power loss";

  d->spool_ = std::make_unique<storage::Spool>(c.spool_dir());
  SB_ASSIGN_OR_RETURN(int stale, d->spool_->remove_stale_temp_files());
  if (stale > 0) SB_LOG(kInfo) << "removed " << stale << " half-written spool file(s)";

  SpoolStoreOptions store = store_options_from(c);
  if (d->options_.min_free_bytes) store.min_free_bytes = *d->options_.min_free_bytes;
  d->handler_ = std::make_unique<SpoolStoreHandler>(*d->spool_, *d->index_, store);
  DicomNodeOptions node = node_options_from(c);
  node.on_progress = [raw = d.get()] {
    if (auto hb = std::atomic_load(&raw->node_heartbeat_)) hb->beat();
  };
  d->node_ = std::make_unique<DicomNode>(node, *d->handler_);

  std::vector<Destination> destinations;
  for (const DestinationConfig& dc : c.destinations) {
    destinations.push_back({dc.name, dc.ae_title, dc.host, dc.port, {dc.objects.begin(), dc.objects.end()}});
  }
  OutboxOptions outbox_options;
  outbox_options.calling_ae_title = c.dicom.ae_title;
  outbox_options.initial_backoff_s = c.outbox.initial_backoff_s;
  outbox_options.max_backoff_s = c.outbox.max_backoff_s;
  outbox_options.on_progress = [raw = d.get()] {
    if (auto hb = std::atomic_load(&raw->sender_heartbeat_)) hb->beat();
  };
  SB_ASSIGN_OR_RETURN(d->outbox_, Outbox::open(c.database_path(), std::move(destinations), std::move(outbox_options)));
  d->queue_missing_results();
  d->enforce_retention();  // also finishes a removal a crash interrupted

  if (d->options_.board) {
    d->board_ = d->options_.board;
  } else {
    d->owned_board_ = hal::make_sim_board();
    d->board_ = d->owned_board_.get();
  }
  if (d->options_.notifier) {
    d->notifier_ = d->options_.notifier;
  } else {
    d->owned_notifier_ = std::make_unique<watchdog::SdNotifier>();
    d->notifier_ = d->owned_notifier_.get();
  }
  d->supervisor_interval_ = seconds_ms(c.watchdog.check_interval_s);
  auto timeout = watchdog::watchdog_timeout();
  if (!timeout.ok()) {
    SB_LOG(kWarning) << "ignoring the systemd watchdog settings: " << timeout.status().to_string();
  } else if (timeout->has_value()) {
    d->supervisor_interval_ = watchdog::ping_interval(**timeout);
    SB_LOG(kInfo) << "systemd watchdog: " << (**timeout).count() / 1000 << " ms, checking every "
                  << d->supervisor_interval_.count() << " ms";
  }

  TelemetryOptions t;
  t.db_path = c.telemetry_path();
  t.disk_path = c.storage.data_dir;
  t.interval = seconds_ms(c.telemetry.interval_s);
  t.ring_rows = c.telemetry.ring_rows;
  t.hold_above_c = c.thermal.hold_above_c;
  t.hysteresis_c = c.thermal.hysteresis_c;
  SB_ASSIGN_OR_RETURN(d->telemetry_, Telemetry::open(std::move(t), *d->board_));

  // Power mode: reported, never changed (a mode switch may need a reboot on the Jetson).
  DaemonStateRow state;
  state.pid = ::getpid();
  state.started_ms = storage::now_ms();
  state.version = d->options_.version;
  state.board = d->board_->name();
  state.expected_power_mode = c.board.power_mode;
  if (auto mode = d->board_->power_mode().current(); mode.ok()) {
    state.power_mode_id = mode->id;
    state.power_mode_name = mode->name;
    if (c.board.power_mode >= 0 && mode->id != c.board.power_mode && c.board.set_power_mode) {
      base::Status set = d->board_->power_mode().set(c.board.power_mode);
      if (set.ok()) {
        SB_LOG(kWarning) << "power mode was " << mode->id << " (" << mode->name << "); set to " << c.board.power_mode
                         << " (board.set_power_mode = true)";
        if (auto now = d->board_->power_mode().current(); now.ok()) {
          state.power_mode_id = now->id;
          state.power_mode_name = now->name;
        }
      } else {
        SB_LOG(kError) << "cannot set the power mode to " << c.board.power_mode << ": " << set.to_string();
      }
    } else if (c.board.power_mode >= 0 && mode->id != c.board.power_mode) {
      SB_LOG(kWarning) << "power mode is " << mode->id << " (" << mode->name << "), the configuration expects "
                       << c.board.power_mode << " (board.power_mode): inference times and thermals will differ; "
                       << "set it with `sudo nvpmodel -m " << c.board.power_mode << "`";
    } else {
      SB_LOG(kInfo) << "board " << d->board_->name() << ", power mode " << mode->id << " (" << mode->name << ")";
    }
  } else if (c.board.power_mode >= 0) {
    SB_LOG(kWarning) << "cannot read the power mode (expected " << c.board.power_mode
                     << "): " << mode.status().to_string();
  }
  d->led_ = std::make_unique<hal::LedDriver>(*d->board_);
  if (c.fan.mode == "curve") {
    SB_ASSIGN_OR_RETURN(auto points, parse_fan_curve(c.fan.curve));
    SB_ASSIGN_OR_RETURN(hal::FanCurve curve, hal::FanCurve::make(std::move(points)));
    d->fan_ = std::make_unique<hal::FanController>(std::move(curve));
    SB_LOG(kInfo) << "fan: driven by the daemon's curve " << c.fan.curve << " (fan.mode = curve)";
  }
  d->telemetry_->set_daemon_state(std::move(state), [raw = d.get()] { return raw->state_json(); });
  d->telemetry_->on_thermal_change([raw = d.get()](bool holding, double temp_c) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), holding ? "holding new jobs: %.1f C is too hot" : "resumed jobs at %.1f C",
                  temp_c);
    raw->set_status(buf);
    raw->wake_.notify_all();
  });
  return d;
}

base::Status Daemon::start() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (started_) return base::failed_precondition("daemon already started");
  const WatchdogConfig& w = options_.config.watchdog;
  const auto loop_deadline = seconds_ms(w.loop_deadline_s);
  const auto sampler_deadline = std::max(loop_deadline, 3 * seconds_ms(options_.config.telemetry.interval_s));
  // The worker's deadline covers a whole study: see WatchdogConfig::job_deadline_s.
  const auto worker_deadline = std::max(loop_deadline, seconds_ms(w.job_deadline_s));
  std::shared_ptr<watchdog::Heartbeat> scheduler_hb, worker_hb, sampler_hb, panel_hb;
  for (auto [name, deadline, out] : {std::tuple{"scheduler", loop_deadline, &scheduler_hb},
                                     std::tuple{"worker", worker_deadline, &worker_hb},
                                     std::tuple{"sampler", sampler_deadline, &sampler_hb},
                                     std::tuple{"panel", loop_deadline, &panel_hb}}) {
    (void)registry_.remove(name);  // a restart after stop() registers afresh
    SB_ASSIGN_OR_RETURN(*out, registry_.add(name, deadline));
  }
  {
    // A silent peer holds the accept loop for up to the ACSE timeout before its next turn.
    const auto node_deadline = loop_deadline + std::chrono::seconds(node_->options().acse_timeout_s);
    (void)registry_.remove("dicom");
    SB_ASSIGN_OR_RETURN(auto hb, registry_.add("dicom", node_deadline));
    std::atomic_store(&node_heartbeat_, hb);
  }
  if (outbox_->has_destinations()) {
    // One item may take an association set-up plus a C-STORE response before the next beat.
    const OutboxOptions defaults;
    const auto sender_deadline =
        loop_deadline + std::chrono::seconds(defaults.acse_timeout_s + defaults.dimse_timeout_s);
    (void)registry_.remove("sender");
    SB_ASSIGN_OR_RETURN(auto hb, registry_.add("sender", sender_deadline));
    std::atomic_store(&sender_heartbeat_, hb);
  }
  SB_RETURN_IF_ERROR(node_->start());
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  started_ms_ = storage::now_ms();
  // Before the panel and the status page: its first sample writes the daemon_state row they read.
  SB_RETURN_IF_ERROR(telemetry_->start(sampler_hb));
  scheduler_ = std::thread(&Daemon::scheduler_loop, this, scheduler_hb);
  worker_ = std::thread(&Daemon::worker_loop, this, worker_hb);
  panel_ = std::thread(&Daemon::panel_loop, this, panel_hb);
  if (options_.config.status.enabled) {
    // The page is for the technician; the box keeps serving DICOM without it.
    auto server = StatusServer::start(status_server_options(options_.config));
    if (server.ok()) {
      status_server_ = std::move(server).value();
      SB_LOG(kInfo) << "status page on http://" << options_.config.status.bind_address << ":" << status_server_->port()
                    << "/";
    } else {
      SB_LOG(kError) << "no status page: " << server.status().to_string() << " (check [status] bind_address and port)";
    }
  }
  if (outbox_->has_destinations()) outbox_->start();
  supervisor_ = std::make_unique<watchdog::Supervisor>(registry_, *notifier_, supervisor_interval_);
  SB_RETURN_IF_ERROR(supervisor_->start());
  started_ = true;
  // The model is loaded before the daemon is created, and the node listens now.
  if (base::Status st = watchdog::notify_ready(*notifier_); !st.ok()) {
    SB_LOG(kWarning) << "cannot notify the service manager: " << st.to_string();
  }
  set_status("idle, listening on port " + std::to_string(options_.config.dicom.port));
  return base::Status();
}

void Daemon::stop() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (!started_) return;
  SB_LOG(kInfo) << "shutting down: no new associations; finishing open associations and the current job";
  (void)watchdog::notify_stopping(*notifier_);
  set_status("stopping: finishing open associations and the current job");
  node_->stop();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  if (worker_.joinable()) worker_.join();
  if (panel_.joinable()) panel_.join();
  if (status_server_) status_server_->stop();
  outbox_->stop();  // after its current association; what is left is sent after the restart
  telemetry_->stop();
  if (supervisor_) supervisor_->stop();
  started_ = false;
  SB_LOG(kInfo) << "stopped";
}

void Daemon::set_status(const std::string& text) {
  (void)watchdog::notify_status(*notifier_, text);
}

std::string Daemon::state_json() {
  nlohmann::json j;
  j["threads"] = nlohmann::json::array();
  for (const auto& h : registry_.snapshot()) {
    j["threads"].push_back(
        {{"name", h.name}, {"age_ms", h.age.count()}, {"deadline_ms", h.deadline.count()}, {"stale", h.stale}});
  }
  j["thermal_hold"] = telemetry_->holding_jobs();
  if (led_) {
    j["led"] = {{"state", hal::box_state_name(led_->state())},
                {"pattern", hal::led_pattern_name(led_->pattern())},
                {"detail", box_condition().detail}};
  }
  {
    std::lock_guard lock(current_mu_);
    j["current_study"] = current_study_;
    j["current_stage"] = current_stage_;
  }
  j["engine"] = nlohmann::json::parse(options_.engine_json, nullptr, false);
  j["board_warnings"] = options_.board_warnings;
  j["hold_above_c"] = options_.config.thermal.hold_above_c;
  return j.dump();
}

void Daemon::scheduler_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat) {
  const int64_t quiet_ms = static_cast<int64_t>(options_.config.dicom.study_quiet_s * 1000.0);
  const int interval_ms = options_.check_interval_ms > 0
                              ? options_.check_interval_ms
                              : static_cast<int>(std::clamp<int64_t>(quiet_ms / 4, 50, 1000));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    heartbeat->beat();
    const int64_t now = storage::now_ms();
    // After a start every study gets a fresh quiet time: one cut off mid-receive by a crash
    // looks quiet at once, but its sender is about to reconnect and send the rest.
    const bool fresh_start = now - started_ms_ < quiet_ms;
    auto quiet = fresh_start ? base::Result<std::vector<std::string>>(std::vector<std::string>{})
                             : index_->quiet_studies(now - quiet_ms);
    if (!quiet.ok()) {
      SB_LOG(kError) << "study completion check failed: " << quiet.status().to_string();
    } else if (!quiet->empty()) {
      const std::set<std::string> open = handler_->studies_with_open_associations();
      bool queued_any = false;
      for (const std::string& study : *quiet) {
        if (open.count(study)) continue;  // its association has not ended yet
        auto queued = index_->enqueue_study(study, now);
        if (!queued.ok()) {
          SB_LOG(kError) << "cannot queue study " << study << ": " << queued.status().to_string();
        } else if (*queued) {
          SB_LOG(kInfo) << "study " << study << " complete, queued";
          queued_any = true;
        }
      }
      if (queued_any) wake_.notify_all();
    }
    lock.lock();
    wake_.wait_for(lock, std::chrono::milliseconds(interval_ms), [&] { return stopping_; });
  }
}

hal::BoxCondition Daemon::box_condition() {
  hal::BoxCondition cond;
  for (const auto& h : registry_.snapshot()) {
    if (h.stale) {
      cond.fault = true;
      cond.detail = "thread " + h.name + " stuck";
    }
  }
  cond.hot = telemetry_->holding_jobs();
  if (cond.hot && cond.detail.empty()) cond.detail = "too hot: jobs held";
  const uint64_t min_free = static_cast<uint64_t>(options_.config.storage.min_free_mb) << 20;
  if (auto free = storage::disk_free_bytes(options_.config.storage.data_dir); free.ok() && *free < min_free) {
    cond.disk_low = true;
    if (cond.detail.empty()) cond.detail = "disk low: " + std::to_string(*free >> 20) + " MiB free";
  }
  std::lock_guard current(current_mu_);
  cond.processing = !current_study_.empty();
  return cond;
}

void Daemon::panel_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat) {
  using Clock = hal::LedDriver::Clock;
  Clock::time_point next_check{};  // condition and fan: once a second
  bool led_error_logged = false;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    heartbeat->beat();
    const auto now = Clock::now();
    if (now >= next_check) {
      next_check = now + std::chrono::seconds(1);
      led_->set_condition(box_condition(), now);
      if (fan_) {
        if (auto pwm = fan_->update(*board_); !pwm.ok()) {
          SB_LOG(kWarning) << "fan curve: " << pwm.status().to_string();
        }
      }
    }
    if (base::Status st = led_->tick(now); !st.ok() && !led_error_logged) {
      SB_LOG(kWarning) << "status LED: " << st.to_string();  // once: the LED is a convenience
      led_error_logged = true;
    }
    const auto wait = std::min<std::chrono::milliseconds>(led_->time_to_next_edge(now), std::chrono::milliseconds(250));
    lock.lock();
    wake_.wait_for(lock, std::max(wait, std::chrono::milliseconds(10)), [&] { return stopping_; });
  }
}

void Daemon::worker_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat) {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    heartbeat->beat();
    if (telemetry_->holding_jobs()) {  // too hot: receive, but start nothing new
      lock.lock();
      wake_.wait_for(lock, std::chrono::milliseconds(options_.idle_poll_ms));
      continue;
    }
    auto job = index_->claim_next_job(storage::now_ms());
    if (!job.ok()) {
      SB_LOG(kError) << "cannot claim a job: " << job.status().to_string();
    } else if (job->has_value()) {
      {
        std::lock_guard current(current_mu_);
        current_study_ = (*job)->study_uid;
      }
      set_status("processing study " + (*job)->study_uid);
      run_job(**job, *heartbeat);
      heartbeat->beat();
      {
        std::lock_guard current(current_mu_);
        current_study_.clear();
        current_stage_.clear();
      }
      set_status(telemetry_->holding_jobs() ? "holding new jobs: too hot" : "idle");
      lock.lock();
      continue;  // look for the next job at once
    }
    lock.lock();
    wake_.wait_for(lock, std::chrono::milliseconds(options_.idle_poll_ms));
  }
}

void Daemon::fail_attempt(const storage::Job& job, const std::string& reason) {
  auto requeued = index_->fail_attempt(job, reason, storage::now_ms());
  if (!requeued.ok()) {
    // The job stays `running` in the database and is re-queued at the next start.
    SB_LOG(kError) << "cannot record the failed attempt of job " << job.id << ": " << requeued.status().to_string();
  } else if (*requeued) {
    SB_LOG(kWarning) << "study " << job.study_uid << " attempt " << job.attempts << " failed (will retry): " << reason;
  } else {
    SB_LOG(kError) << "study " << job.study_uid << " failed after " << job.attempts << " attempts: " << reason;
  }
  ++jobs_finished_;
}

void Daemon::run_job(const storage::Job& job, watchdog::Heartbeat& heartbeat) {
  SB_LOG(kInfo) << "processing study " << job.study_uid << " (job " << job.id << ", attempt " << job.attempts << ")";
  auto study_dir = spool_->study_dir(job.study_uid);
  if (!study_dir.ok()) return fail_attempt(job, study_dir.status().message());
  const std::string out_dir = options_.config.results_dir() + "/" + job.study_uid;
  std::error_code ec;
  fs::remove_all(out_dir, ec);
  if (ec) return fail_attempt(job, "cannot clear " + out_dir + ": " + ec.message());
  base::Status made = storage::create_directories_durable(out_dir);
  if (!made.ok()) return fail_attempt(job, made.message());

  double receive_ms = 0.0;
  if (auto study = index_->study(job.study_uid); study.ok() && study->has_value()) {
    receive_ms = static_cast<double>((*study)->last_received_ms - (*study)->first_received_ms);
  }

  StudyReport report;
  telemetry_->begin_job();
  // Progress beats the worker's heartbeat; systemd's STATUS= follows at most once a second.
  // The longest silence between two reports goes into report.json: what job_deadline_s must cover.
  auto last_status = std::chrono::steady_clock::now();
  auto last_progress = last_status;
  std::chrono::steady_clock::duration longest_silence{0};
  const inference::ProgressFn progress = [&](std::string_view stage, int64_t done, int64_t total) {
    heartbeat.beat();
    std::string text = std::string(stage) + " " + std::to_string(done) + "/" + std::to_string(total);
    const auto now = std::chrono::steady_clock::now();
    longest_silence = std::max(longest_silence, now - last_progress);
    last_progress = now;
    if (now - last_status >= std::chrono::seconds(1)) {
      set_status("processing study " + job.study_uid + ": " + text);
      last_status = now;
    }
    std::lock_guard current(current_mu_);
    current_stage_ = std::move(text);
  };
  try {
    report = options_.processor(*study_dir, out_dir, progress);
  } catch (const std::exception& e) {
    telemetry_->end_job();
    return fail_attempt(job, std::string("processing threw: ") + e.what());
  } catch (...) {
    telemetry_->end_job();
    return fail_attempt(job, "processing threw an unknown exception");
  }
  const JobPower power = telemetry_->end_job();
  longest_silence = std::max(longest_silence, std::chrono::steady_clock::now() - last_progress);
  report.extra["longest_progress_gap_ms"] =
      std::chrono::duration_cast<std::chrono::milliseconds>(longest_silence).count();
  if (power.energy_j) {
    report.extra["energy_j"] = *power.energy_j;
    report.extra["mean_power_mw"] = *power.mean_power_mw;
    report.extra["peak_power_mw"] = *power.peak_power_mw;
  }
  if (power.peak_temp_c) report.extra["peak_temp_c"] = *power.peak_temp_c;
  report.timings_ms.insert(report.timings_ms.begin(), {"receive", receive_ms});
  if (report.study_instance_uid.empty()) report.study_instance_uid = job.study_uid;
  if (report.status != "done") {
    report.status = "failed";
    if (report.reason.empty()) report.reason = "the pipeline reported failure without a reason";
  }

  if (options_.write_report) {
    base::Status written;
    try {
      written = options_.write_report(report, out_dir);
    } catch (const std::exception& e) {
      written = base::internal_error(std::string("writing the report threw: ") + e.what());
    }
    if (!written.ok()) return fail_attempt(job, "cannot write the report: " + written.to_string());
  }
  // The result row must never point at outputs that a power cut could still take away.
  base::Status synced = storage::sync_tree(out_dir);
  if (!synced.ok()) return fail_attempt(job, "cannot make the outputs durable: " + synced.to_string());

  storage::ResultRow row;
  row.status = report.status;
  row.reason = report.reason;
  row.lesion_volume_ml = report.lesion_volume_ml;
  row.lesion_count = report.lesion_count;
  row.model_id = report.model_id;
  row.backend = report.backend;
  row.precision = report.precision;
  nlohmann::ordered_json timings = nlohmann::ordered_json::object();
  for (const auto& [stage, ms] : report.timings_ms) timings[stage] = ms;
  row.timings_json = timings.dump();
  row.report_path = fs::exists(out_dir + "/report.json") ? out_dir + "/report.json" : "";
  row.finished_at_ms = storage::now_ms();
  row.energy_j = power.energy_j;
  row.mean_power_mw = power.mean_power_mw;
  row.peak_power_mw = power.peak_power_mw;
  row.peak_temp_c = power.peak_temp_c;
  base::Status stored = index_->complete_job(job, row);
  if (!stored.ok()) {
    SB_LOG(kError) << "cannot store the result of study " << job.study_uid << ": " << stored.to_string();
    return fail_attempt(job, "cannot store the result: " + stored.to_string());
  }
  ++jobs_finished_;
  if (report.status == "done") queue_results(job.study_uid, job.id);
  // Without a quota there is nothing to remove (and no need to measure the data directory);
  // removals a crash interrupted were finished at start.
  if (options_.config.storage.quota_mb > 0) enforce_retention();
  if (report.status == "done") {
    SB_LOG(kInfo) << "study " << job.study_uid << " done: " << report.lesion_volume_ml << " ml in "
                  << report.lesion_count << " lesion(s)";
  } else {
    SB_LOG(kWarning) << "study " << job.study_uid << " failed: " << report.reason;
  }
}

void Daemon::queue_results(const std::string& study_uid, int64_t job_id) {
  if (!outbox_->has_destinations()) return;
  const std::string out_dir = options_.config.results_dir() + "/" + study_uid;
  auto files = find_result_files(out_dir);
  if (!files.ok()) {
    SB_LOG(kError) << "cannot send the results of study " << study_uid << ": " << files.status().to_string();
    return;
  }
  auto queued = outbox_->enqueue_result(study_uid, job_id, *files);
  if (!queued.ok()) {
    // The next start queues it (queue_missing_results).
    SB_LOG(kError) << "cannot queue the results of study " << study_uid << ": " << queued.status().to_string();
  } else {
    SB_LOG(kInfo) << "study " << study_uid << ": " << *queued << " result item(s) queued for sending";
  }
}

void Daemon::enforce_retention() {
  const Config& c = options_.config;
  storage::RetentionOptions r;
  r.database_path = c.database_path();
  r.spool_dir = c.spool_dir();
  r.results_dir = c.results_dir();
  r.quota_bytes = static_cast<uint64_t>(c.storage.quota_mb) << 20;
  // Keep a study whose results are still waiting for a destination, or whose instances are
  // arriving on an open association.
  r.can_remove = [this](const std::string& study_uid) {
    if (handler_->studies_with_open_associations().count(study_uid)) return false;
    auto pending = outbox_->has_pending(study_uid);
    return pending.ok() && !*pending;
  };
  auto result = storage::enforce_quota(r);
  if (!result.ok()) {
    SB_LOG(kError) << "retention: " << result.status().to_string();
    return;
  }
  if (result->resumed > 0) {
    SB_LOG(kWarning) << "retention: finished " << result->resumed << " interrupted removal(s)";
  }
  for (const std::string& uid : result->removed) {
    SB_LOG(kInfo) << "retention: removed finished study " << uid << " (storage.quota_mb = " << c.storage.quota_mb << ")";
  }
  if (!result->within_quota) {
    SB_LOG(kWarning) << "retention: " << (result->bytes_after >> 20) << " MiB in use exceeds storage.quota_mb = "
                     << c.storage.quota_mb << ", and only unprocessed or unsent studies are left";
  }
}

void Daemon::queue_missing_results() {
  if (!outbox_->has_destinations()) return;
  auto studies = index_->recent_studies(100000);
  if (!studies.ok()) {
    SB_LOG(kError) << "cannot look for unsent results: " << studies.status().to_string();
    return;
  }
  for (const storage::StudySummary& s : *studies) {
    if (s.study.state != "done" || !s.result || s.result->status != "done") continue;
    auto queued = outbox_->result_enqueued(s.study.study_uid, s.result->job_id);
    if (queued.ok() && !*queued) {
      SB_LOG(kWarning) << "study " << s.study.study_uid << ": results were stored but not queued (crash); queueing now";
      queue_results(s.study.study_uid, s.result->job_id);
    }
  }
}

void block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int wait_for_termination_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

}  // namespace firmware
