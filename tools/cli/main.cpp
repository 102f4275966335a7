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
      "  prepare   turn text files into byte-level token shards (train/validation split)\n"
      "  train     train a model, checkpointing into a run directory; rerun to resume\n"
      "  eval      loss and perplexity of a checkpoint on token shards (--dump-grads)\n"
      "  sample    generate text from a checkpoint\n"
      "  inspect   tensors, dtypes, shapes, checksums and trainer state of a checkpoint\n"
      "  convert   weights between strata, Hugging Face GPT-2 and LLaMA layouts, f32 or bf16\n"
      "  plan      placement, bytes per memory tier and predicted step time of a training run\n"
      "  tokenize  text to token ids and back through a tokenizer.json (or bytes); --time\n"
      "  bench     benchmarks: ops, training + AdamW vs PyTorch, recompute, ZeRO, NVMe vs fio, offload\n"
      "            stall, generation; GPU training (tokens/s, MFU) with --device cuda:N (strata bench --help)\n\n"
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
  if (cmd == "train") return train_main(argc - 1, argv + 1);
  if (cmd == "eval") return eval_main(argc - 1, argv + 1);
  if (cmd == "sample") return sample_main(argc - 1, argv + 1);
  if (cmd == "inspect") return inspect_main(argc - 1, argv + 1);
  if (cmd == "convert") return convert_main(argc - 1, argv + 1);
  if (cmd == "plan") return plan_main(argc - 1, argv + 1);
  if (cmd == "tokenize") return tokenize_main(argc - 1, argv + 1);
  if (cmd == "bench") return bench_main(argc - 1, argv + 1);
  std::fprintf(stderr, "strata: unknown command '%s'\n\n", cmd.c_str());
  usage();
  return 1;
}
