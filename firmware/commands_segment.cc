// PLACEHOLDER: replaced by the owner of this subcommand.
#include <cstdio>
#include "firmware/commands.h"
namespace firmware {
int cmd_segment(int, char**) { std::fprintf(stderr, "strokebox segment: not built yet\n"); return 1; }
}  // namespace firmware
