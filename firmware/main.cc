// build/strokebox: one executable, one subcommand per job. See `strokebox --help`.
#include <cstdio>
#include <cstring>
#include <string>

#include <dcmtk/oflog/oflog.h>

#include "firmware/commands.h"

namespace {

constexpr const char* kUsage = R"(strokebox )" STROKEBOX_VERSION R"( - acute ischemic stroke lesion segmentation beside the scanner

Usage: strokebox <command> [options]     (strokebox <command> --help for details)

Commands:
  run       --config FILE [--port N] [--ae-title AE] [--data-dir DIR] [--model DIR]
            the appliance daemon: DICOM node, job queue, worker, result log
  segment   --study DIR --out DIR [--model DIR] [--precision P]
            one study folder of DICOM files, offline; prints report.json
            (--image FILE once per channel takes NIfTI volumes instead of --study)
  status    [--config FILE | --data-dir DIR] [--json]
            the technician's view: queue, last studies, errors
  phantom   --out DIR --seed N [--format dicom|nifti]
            a synthetic DWI/ADC study on the Colin27 head plus truth.nii.gz
  evaluate  --pred FILE --truth FILE
            segmentation metrics (Dice, IoU, precision, recall, volumes) as JSON
  engine    info|bench ...
            describe or time an inference engine

Exit codes: 0 success, 1 the work failed (reason on stderr), 2 bad usage.
)";

}  // namespace

int main(int argc, char** argv) {
  // DCMTK logs warnings of its own (e.g. while writing SEG) to stderr; ours say what matters.
  OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("strokebox %s\n", STROKEBOX_VERSION);
    return 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "run") return firmware::cmd_run(argc, argv);
  if (cmd == "segment") return firmware::cmd_segment(argc, argv);
  if (cmd == "status") return firmware::cmd_status(argc, argv);
  if (cmd == "phantom") return firmware::cmd_phantom(argc, argv);
  if (cmd == "evaluate") return firmware::cmd_evaluate(argc, argv);
  if (cmd == "engine") return firmware::cmd_engine(argc, argv);
  std::fprintf(stderr, "strokebox: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
