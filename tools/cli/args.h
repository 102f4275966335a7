// Option parsing shared by the `strata` subcommands: --name VALUE and --name=VALUE,
// boolean switches, positional arguments, --help generated from the declarations,
// and --config FILE with `name = value` lines (the same names without the dashes;
// '#' starts a comment). Precedence: defaults < config file < command line.
// Invariant: parse() reports every problem as a usage error (exit status 2) naming
// the option, and never throws.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cli {

class Args {
 public:
  Args(std::string usage, std::string description) : usage_(std::move(usage)), description_(std::move(description)) {}

  void option(const std::string& name, std::string* target, const std::string& metavar, const std::string& help);
  void option(const std::string& name, int64_t* target, const std::string& metavar, const std::string& help);
  void option(const std::string& name, double* target, const std::string& metavar, const std::string& help);
  void flag(const std::string& name, bool* target, const std::string& help);
  // Positional arguments are collected here; without it they are usage errors.
  void positionals(std::vector<std::string>* target, const std::string& metavar, const std::string& help);
  void allow_config_file() { config_file_ = true; }

  // -1: go on; otherwise the exit status to return (0 after --help, 2 on bad usage).
  int parse(int argc, char** argv);
  // Whether the option was given (command line or config file).
  bool given(const std::string& name) const;
  // The command line as given (for the record in checkpoints).
  const std::string& command_line() const { return command_line_; }

  int usage_error(const std::string& message) const;
  void print_help() const;

 private:
  struct Option {
    std::string name, metavar, help, default_text;
    bool is_flag = false;
    bool given = false;
    std::function<bool(const std::string&)> set;
  };
  Option* find(const std::string& name);
  bool set_value(Option& o, const std::string& value, const std::string& origin, std::string& error);
  bool read_config(const std::string& path, std::string& error);

  std::string usage_, description_;
  std::vector<Option> options_;
  std::vector<std::string>* positionals_ = nullptr;
  std::string positional_metavar_, positional_help_;
  bool config_file_ = false;
  std::string command_line_;
};

}  // namespace cli
