// PLACEHOLDER: replaced by the owner of this subcommand.
#include <cstdio>
#include "firmware/commands.h"
namespace firmware {
int cmd_status(int, char**) { std::fprintf(stderr, "strokebox status: not built yet\n"); return 1; }
}  // namespace firmware
