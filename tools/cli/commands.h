// The subcommands of the `strata` command-line tool, one function per command.
// Invariant: each takes its arguments as main() does (argv[0] is the command's own
// name), returns the exit status (0 ok, 1 failure, 2 usage error) and never throws.
#pragma once

// strata prepare --out PREFIX [--val-fraction F] [FILE...]
int prepare_main(int argc, char** argv);
