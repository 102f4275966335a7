// Option parsing shared by the `strata` subcommands, over CLI11: --name VALUE and
// --name=VALUE, boolean switches, positional arguments, --help generated from the
// declarations, and --config FILE with `name = value` lines (the same names without
// the dashes; '#' starts a comment). Precedence: defaults < config file < command line.
// Every number is checked where it is parsed: an integer must fit int64 and its
// range, a real must be finite and in its range; the message names the option, the
// value and the allowed range.
// Invariant: parse() reports every problem as a usage error (exit status 2) naming
// the option, and never throws.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace cli {

inline constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

class Args {
 public:
  Args(std::string usage, std::string description);
  ~Args();

  void option(const std::string& name, std::string* target, const std::string& metavar, const std::string& help);
  // Integers in [min, max]; reals finite and in [min, max] (open at an infinite end).
  void option(const std::string& name, int64_t* target, const std::string& metavar, const std::string& help,
              int64_t min = std::numeric_limits<int64_t>::min(), int64_t max = kNoLimit);
  void option(const std::string& name, double* target, const std::string& metavar, const std::string& help,
              double min = -kInf, double max = kInf);
  // A string from a fixed list.
  void choice(const std::string& name, std::string* target, const std::vector<std::string>& choices,
              const std::string& help);
  void flag(const std::string& name, bool* target, const std::string& help);
  // A list: --name A B C (or repeated --name A --name B).
  void list(const std::string& name, std::vector<std::string>* target, const std::string& metavar,
            const std::string& help);
  // Positional arguments are collected here; without it they are usage errors.
  void positionals(std::vector<std::string>* target, const std::string& metavar, const std::string& help);
  void allow_config_file();

  // -1: go on; otherwise the exit status to return (0 after --help, 2 on bad usage).
  int parse(int argc, char** argv);
  // Whether the option was given (command line or config file).
  bool given(const std::string& name) const;
  // The command line as given (for the record in checkpoints).
  const std::string& command_line() const { return command_line_; }

  int usage_error(const std::string& message) const;

 private:
  struct Value;
  std::string command_;  // "strata train"
  std::unique_ptr<CLI::App> app_;
  std::vector<std::unique_ptr<Value>> values_;
  std::string command_line_;
};

// Checked number parsing for values inside options (comma lists, sizes): the whole
// text must be the number. Return false and set `error` on failure.
bool parse_int(const std::string& text, int64_t min, int64_t max, int64_t& out, std::string& error);
bool parse_real(const std::string& text, double min, double max, double& out, std::string& error);

}  // namespace cli
