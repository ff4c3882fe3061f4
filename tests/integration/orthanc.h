// A throw-away Orthanc (Debian package `orthanc`) for PACS round-trip tests: started by the
// test with its own JSON configuration on loopback ports and a temporary storage folder, never
// as a system service, and driven through its REST API with the curl binary.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/integration/process.h"

namespace itest {

inline bool have_orthanc() {
  return std::filesystem::exists("/usr/sbin/Orthanc") && std::filesystem::exists("/usr/bin/curl");
}

class Orthanc {
 public:
  /// `modalities`: name -> {AE title, host, port} of the DICOM nodes Orthanc may send to.
  struct Modality {
    std::string ae_title, host;
    int port;
  };
  Orthanc(std::filesystem::path dir, std::map<std::string, Modality> modalities, std::string ae_title = "ORTHANC")
      : dir_(std::move(dir)), modalities_(std::move(modalities)), ae_title_(std::move(ae_title)) {}
  ~Orthanc() { stop(); }

  int http_port() const { return http_port_; }
  int dicom_port() const { return dicom_port_; }
  const std::string& ae_title() const { return ae_title_; }

  /// Writes the configuration, starts Orthanc, waits until GET /system answers (at most
  /// about 30 s). Returns false when it does not come up (its log is in dir/orthanc.log).
  bool start() {
    std::filesystem::create_directories(dir_ / "storage");
    http_port_ = free_port();
    dicom_port_ = free_port();
    nlohmann::json config = {
        {"Name", "strokebox-test"},
        {"StorageDirectory", (dir_ / "storage").string()},
        {"IndexDirectory", (dir_ / "storage").string()},
        {"HttpPort", http_port_},
        {"DicomPort", dicom_port_},
        {"DicomAet", ae_title_},
        {"RemoteAccessAllowed", false},
        {"AuthenticationEnabled", false},
        {"DicomCheckCalledAet", false},
        {"DicomAlwaysAllowStore", true},
        {"Plugins", nlohmann::json::array()},
        {"DicomModalities", nlohmann::json::object()},
    };
    for (const auto& [name, m] : modalities_) config["DicomModalities"][name] = {m.ae_title, m.host, m.port};
    std::ofstream((dir_ / "orthanc.json").string()) << config.dump(2);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = (dir_ / "orthanc.log").string();
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      (void)f;
      ::dup2(::fileno(stdout), 2);
      ::execl("/usr/sbin/Orthanc", "Orthanc", (dir_ / "orthanc.json").c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 300; ++i) {
      if (get("/system").is_object()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  /// Stops the Orthanc this object started (SIGTERM to its own pid, then waits).
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  /// GET on the REST API; a null json when the request or the parse fails.
  nlohmann::json get(const std::string& uri) const {
    const CommandResult r = run_command("curl -sf http://127.0.0.1:" + std::to_string(http_port_) + uri);
    if (r.exit_code != 0) return nullptr;
    return nlohmann::json::parse(r.output, nullptr, false).is_discarded() ? nlohmann::json()
                                                                         : nlohmann::json::parse(r.output);
  }
  /// POST with a JSON body (or a file when `body_file` is set, e.g. a DICOM file to /instances).
  nlohmann::json post(const std::string& uri, const std::string& json_body, const std::string& body_file = "") const {
    std::string cmd = "curl -sf -X POST http://127.0.0.1:" + std::to_string(http_port_) + uri;
    if (!body_file.empty()) {
      cmd += " --data-binary @'" + body_file + "'";
    } else {
      const std::string tmp = (dir_ / "body.json").string();
      std::ofstream(tmp) << json_body;
      cmd += " --data-binary @'" + tmp + "'";
    }
    const CommandResult r = run_command(cmd);
    if (r.exit_code != 0) return nullptr;
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }

  /// Uploads a DICOM file (POST /instances); returns Orthanc's instance id or "".
  std::string upload(const std::string& dicom_file) const {
    const nlohmann::json r = post("/instances", "", dicom_file);
    return r.is_object() && r.contains("ID") ? r["ID"].get<std::string>() : std::string();
  }
  /// Asks Orthanc to C-STORE a resource (study/series/instance id) to a configured modality
  /// (POST /modalities/{name}/store, synchronous). True when Orthanc reports success.
  bool store_to(const std::string& modality, const std::string& resource_id) const {
    return !post("/modalities/" + modality + "/store", nlohmann::json::array({resource_id}).dump()).is_null();
  }
  /// SOPClassUID, SOPInstanceUID and StudyInstanceUID of every stored instance
  /// (GET /instances, /instances/{id}/simplified-tags).
  struct StoredInstance {
    std::string sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid;
  };
  std::vector<StoredInstance> instances() const {
    std::vector<StoredInstance> out;
    const nlohmann::json ids = get("/instances");
    if (!ids.is_array()) return out;
    for (const auto& id : ids) {
      const nlohmann::json t = get("/instances/" + id.get<std::string>() + "/simplified-tags");
      if (!t.is_object()) continue;
      out.push_back({t.value("SOPClassUID", ""), t.value("SOPInstanceUID", ""), t.value("StudyInstanceUID", ""),
                     t.value("SeriesInstanceUID", "")});
    }
    return out;
  }

 private:
  std::filesystem::path dir_;
  std::map<std::string, Modality> modalities_;
  std::string ae_title_;
  int http_port_ = 0, dicom_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace itest
