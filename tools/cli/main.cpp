// strata: the command-line tool. One subcommand per file in tools/cli/.
#include <cstdio>
#include <cstring>
#include <string>

#include "commands.h"

namespace {
void usage() {
  std::printf(
      "usage: strata <command> [options]\n\n"
      "commands:\n"
      "  prepare   turn text files into byte-level token shards (train/validation split)\n\n"
      "Run 'strata <command> --help' for a command's options.\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "prepare") return prepare_main(argc - 1, argv + 1);
  std::fprintf(stderr, "strata: unknown command '%s'\n\n", cmd.c_str());
  usage();
  return 1;
}
