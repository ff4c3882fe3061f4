#include "firmware/daemon.h"

#include <csignal>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/log.h"

namespace firmware {
namespace fs = std::filesystem;

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

  d->handler_ = std::make_unique<SpoolStoreHandler>(*d->spool_, *d->index_, d->options_.min_free_bytes);
  DicomNodeOptions node;
  node.ae_title = c.dicom.ae_title;
  node.port = c.dicom.port;
  node.bind_address = c.dicom.bind_address;
  node.max_associations = c.dicom.max_associations;
  node.dimse_timeout_s = std::max(1, static_cast<int>(c.dicom.dimse_timeout_s));
  d->node_ = std::make_unique<DicomNode>(node, *d->handler_);
  return d;
}

base::Status Daemon::start() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (started_) return base::failed_precondition("daemon already started");
  SB_RETURN_IF_ERROR(node_->start());
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  scheduler_ = std::thread(&Daemon::scheduler_loop, this);
  worker_ = std::thread(&Daemon::worker_loop, this);
  started_ = true;
  return base::Status();
}

void Daemon::stop() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (!started_) return;
  SB_LOG(kInfo) << "shutting down: no new associations; finishing open associations and the current job";
  node_->stop();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  if (worker_.joinable()) worker_.join();
  started_ = false;
  SB_LOG(kInfo) << "stopped";
}

void Daemon::scheduler_loop() {
  const int64_t quiet_ms = static_cast<int64_t>(options_.config.dicom.study_quiet_s * 1000.0);
  const int interval_ms = options_.check_interval_ms > 0
                              ? options_.check_interval_ms
                              : static_cast<int>(std::clamp<int64_t>(quiet_ms / 4, 50, 1000));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    const int64_t now = storage::now_ms();
    auto quiet = index_->quiet_studies(now - quiet_ms);
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

void Daemon::worker_loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    auto job = index_->claim_next_job(storage::now_ms());
    if (!job.ok()) {
      SB_LOG(kError) << "cannot claim a job: " << job.status().to_string();
    } else if (job->has_value()) {
      run_job(**job);
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

void Daemon::run_job(const storage::Job& job) {
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
  try {
    report = options_.processor(*study_dir, out_dir);
  } catch (const std::exception& e) {
    return fail_attempt(job, std::string("processing threw: ") + e.what());
  } catch (...) {
    return fail_attempt(job, "processing threw an unknown exception");
  }
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
  base::Status stored = index_->complete_job(job, row);
  if (!stored.ok()) {
    SB_LOG(kError) << "cannot store the result of study " << job.study_uid << ": " << stored.to_string();
    return fail_attempt(job, "cannot store the result: " + stored.to_string());
  }
  ++jobs_finished_;
  if (report.status == "done") {
    SB_LOG(kInfo) << "study " << job.study_uid << " done: " << report.lesion_volume_ml << " ml in "
                  << report.lesion_count << " lesion(s)";
  } else {
    SB_LOG(kWarning) << "study " << job.study_uid << " failed: " << report.reason;
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
