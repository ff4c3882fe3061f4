// libFuzzer target: raw bytes as a DICOM file through the dataset-to-volume path of the
// pipeline (fuzz/dicom_volume_entry.h). Build and run with scripts/fuzz.sh dicom_volume MINUTES.
#include <cstddef>
#include <cstdint>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include "base/log.h"
#include "fuzz/dicom_volume_entry.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  base::set_log_level(base::LogLevel::kError);
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // DCMTK's parser warnings would flood the output
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzzentry::run_dicom_volume(data, size);
}
