// PLACEHOLDER: replaced by the owner of this subcommand.
#include <cstdio>
#include "firmware/commands.h"
namespace firmware {
int cmd_run(int, char**) { std::fprintf(stderr, "strokebox run: not built yet\n"); return 1; }
}  // namespace firmware
