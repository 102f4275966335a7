// strata bench [filter...]: runs the benchmark program installed beside this tool
// (strata-bench: ops against OpenBLAS and memcpy, training, recompute, ZeRO, NVMe
// against fio, offloaded training's stall, AdamW against its bandwidth bound, generation
// per token with the KV cache: `strata bench generate`), so
// `strata bench io` and `make bench` measure the same code.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.h"

int bench_main(int argc, char** argv) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    std::fprintf(stderr, "strata bench: cannot locate this program (%s)\n", ec.message().c_str());
    return 1;
  }
  const std::string bench = (self.parent_path() / "strata-bench").string();
  std::vector<char*> args{const_cast<char*>(bench.c_str())};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(bench.c_str(), args.data());
  std::fprintf(stderr, "strata bench: cannot run %s (%s); build it with `make` (target strata-bench)\n",
               bench.c_str(), std::strerror(errno));
  return 1;
}
