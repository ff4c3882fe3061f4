// `load_bench`: the load generator of bench/load_bench.sh. Sends studies of 60..120 instances
// from several senders at once to a running DICOM node, then checks the node's index for every
// acknowledged instance and prints a table (see bench/load_bench_sender.h for what is counted).
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <dcmtk/oflog/oflog.h>
#include <nlohmann/json.hpp>

#include "bench/load_bench_sender.h"
#include "firmware/args.h"

namespace {

constexpr const char* kUsage = R"(Usage: load_bench --port P [options]

Options:
  --host H            node address (default 127.0.0.1)
  --port P            node port
  --ae AE             called AE title (default STROKEBOX)
  --senders N         senders at once (default 4)
  --duration-s S      seconds during which new studies start (default 180)
  --min-instances N   instances per study, lower bound (default 60)
  --max-instances N   instances per study, upper bound (default 120)
  --seed N            study sizes (default 1)
  --source DIR        a phantom study (DWI/*.dcm, ADC/*.dcm); repeatable; each study cycles
                      through one source's files, replicated into more series as needed.
                      Without --source: synthetic 64x64 slices
  --db FILE           the node's strokebox.db: check that every acknowledged instance is indexed
  --json FILE         also write the figures as JSON
  --nagle             leave Nagle's algorithm on in the senders (default: off, TCP_NODELAY=1)
Exit codes: 0 no refused association, no failed or lost instance; 1 otherwise; 2 bad usage.
)";

std::vector<std::string> dicom_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".dcm") out.push_back(it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
  std::signal(SIGPIPE, SIG_IGN);  // a node that aborts mid-send is counted, not fatal
  // Senders disable Nagle's algorithm like the node (DCMTK reads TCP_NODELAY); --nagle keeps
  // it on, as a sender whose DICOM stack does not disable it.
  if (std::find(argv, argv + argc, std::string("--nagle")) == argv + argc) ::setenv("TCP_NODELAY", "1", 0);
  auto parsed = firmware::Args::parse(argc, argv, 1,
                                      {"host", "port", "ae", "senders", "duration-s", "min-instances",
                                       "max-instances", "seed", "source", "db", "json"},
                                      {"help", "nagle"});
  if (!parsed.ok()) {
    std::fprintf(stderr, "load_bench: %s\n%s", parsed.status().message().c_str(), kUsage);
    return 2;
  }
  const firmware::Args& args = *parsed;
  if (args.has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  loadbench::LoadOptions o;
  try {
    o.host = args.get_or("host", o.host);
    if (!args.get("port")) throw std::invalid_argument("--port is required");
    o.port = std::stoi(*args.get("port"));
    o.called_ae = args.get_or("ae", o.called_ae);
    o.senders = std::stoi(args.get_or("senders", "4"));
    o.duration_s = std::stod(args.get_or("duration-s", "180"));
    o.min_instances = std::stoi(args.get_or("min-instances", "60"));
    o.max_instances = std::stoi(args.get_or("max-instances", "120"));
    o.seed = std::stoull(args.get_or("seed", "1"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_bench: bad option: %s\n%s", e.what(), kUsage);
    return 2;
  }
  for (const std::string& dir : args.get_all("source")) {
    auto files = dicom_files(dir);
    if (files.empty()) {
      std::fprintf(stderr, "load_bench: no .dcm files under %s\n", dir.c_str());
      return 2;
    }
    o.sources.push_back(std::move(files));
  }
  std::printf("load_bench: %d senders, %.0f s, %d..%d instances per study, %s source\n", o.senders, o.duration_s,
              o.min_instances, o.max_instances,
              o.sources.empty() ? "synthetic" : (std::to_string(o.sources.size()) + " phantom").c_str());
  std::fflush(stdout);
  auto report = loadbench::run_load(o);
  if (!report.ok()) {
    std::fprintf(stderr, "load_bench: %s\n", report.status().to_string().c_str());
    return 1;
  }
  if (auto db = args.get("db")) {
    base::Status st = loadbench::check_index(*db, *report);
    if (!st.ok()) {
      std::fprintf(stderr, "load_bench: checking the index: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  loadbench::print_report(*report);
  if (auto path = args.get("json")) {
    nlohmann::json j = {{"senders", report->senders},
                        {"elapsed_s", report->elapsed_s},
                        {"studies_completed", report->studies_completed},
                        {"studies_incomplete", report->studies_incomplete},
                        {"studies_per_minute", report->studies_per_minute()},
                        {"instances_acked", report->instances_acked},
                        {"instances_failed", report->instances_failed},
                        {"associations_opened", report->associations_opened},
                        {"associations_refused", report->associations_refused},
                        {"latency_median_ms", report->percentile(50)},
                        {"latency_p99_ms", report->percentile(99)},
                        {"latency_max_ms", report->percentile(100)},
                        {"bytes_sent", report->bytes_sent},
                        {"instances_missing", report->instances_missing}};
    if (FILE* f = std::fopen(path->c_str(), "w")) {
      std::fputs((j.dump(2) + "\n").c_str(), f);
      std::fclose(f);
    }
  }
  const bool clean = report->associations_refused == 0 && report->instances_failed == 0 &&
                     report->instances_missing <= 0;
  return clean ? 0 : 1;
}
