// The subcommands of the `strata` command-line tool, one function per command.
// Invariant: each takes its arguments as main() does (argv[0] is the command's own
// name), returns the exit status (0 ok, 1 failure, 2 usage error) and never throws.
#pragma once

// strata prepare --out PREFIX [--val-fraction F] [FILE...]
int prepare_main(int argc, char** argv);
// strata train --data GLOB --out DIR [options]: trains, checkpoints, resumes.
int train_main(int argc, char** argv);
// strata eval --model PATH --data GLOB [--dump-grads FILE]: loss and perplexity.
int eval_main(int argc, char** argv);
// strata sample --model PATH [--prompt TEXT]: generation.
int sample_main(int argc, char** argv);
// strata inspect [--verify] PATH...: tensors, checksums and trainer state.
int inspect_main(int argc, char** argv);
// strata convert --from PATH --to DIR --format strata|gpt2|llama --dtype f32|bf16.
int convert_main(int argc, char** argv);
// strata plan (--preset | --model-config | --params) [...]: placement, bytes per tier, step time.
int plan_main(int argc, char** argv);
// strata tokenize [--tokenizer FILE] [--decode] FILE...: text <-> token ids.
int tokenize_main(int argc, char** argv);
// strata bench [filter...]: the benchmarks (strata-bench), e.g. `strata bench io`.
int bench_main(int argc, char** argv);
