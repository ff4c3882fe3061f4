// The subcommands of build/strokebox. Each returns the process exit code:
// 0 success, 1 the work failed (message on stderr), 2 bad usage.
#pragma once

namespace firmware {

int cmd_run(int argc, char** argv);       // commands_run.cc: the appliance daemon
int cmd_segment(int argc, char** argv);   // commands_segment.cc: one study, offline
int cmd_status(int argc, char** argv);    // commands_status.cc: the technician's view
int cmd_phantom(int argc, char** argv);   // commands_phantom.cc: synthetic studies
int cmd_evaluate(int argc, char** argv);  // commands_evaluate.cc: metrics as JSON
int cmd_engine(int argc, char** argv);    // commands_engine.cc: build | info | bench

}  // namespace firmware
