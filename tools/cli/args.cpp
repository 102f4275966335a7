// Option parsing for the subcommands (see args.h). CLI11 reads the command line
// (syntax, --help, unknown options); every option is captured as text and then
// converted here, so each value is checked and named the same way whether it came
// from the command line or from a --config file.
#include "args.h"

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace cli {

namespace {
std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::string number_text(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

std::string range_text(int64_t min, int64_t max) {
  if (max == kNoLimit) return "at least " + std::to_string(min);
  return "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
}
std::string range_text(double min, double max) {
  if (std::isinf(max)) return std::isinf(min) ? "finite" : "finite and at least " + number_text(min);
  return "in [" + number_text(min) + ", " + number_text(max) + "]";
}
}  // namespace

bool parse_int(const std::string& text, int64_t min, int64_t max, int64_t& out, std::string& error) {
  const std::string allowed = "an integer " + range_text(min, max);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end || text.find_first_of(" \t") != std::string::npos) {
    error = "'" + text + "' is not an integer (expected " + allowed + ")";
    return false;
  }
  if (errno == ERANGE || x < min || x > max) {
    error = text + " is out of range (expected " + allowed + ")";
    return false;
  }
  out = x;
  return true;
}

bool parse_real(const std::string& text, double min, double max, double& out, std::string& error) {
  const std::string allowed = "a number " + range_text(min, max);
  char* end = nullptr;
  const double x = std::strtod(text.c_str(), &end);
  if (text.empty() || *end) {
    error = "'" + text + "' is not a number (expected " + allowed + ")";
    return false;
  }
  if (!std::isfinite(x) || x < min || x > max) {
    error = text + " is " + (std::isfinite(x) ? "out of range" : "not finite") + " (expected " + allowed + ")";
    return false;
  }
  out = x;
  return true;
}

// One declared option: its text as given, and how to check and store it.
struct Args::Value {
  std::string name;
  std::string text;
  std::vector<std::string> texts;  // lists and positionals
  CLI::Option* option = nullptr;
  bool* flag = nullptr;
  std::vector<std::string>* list = nullptr;
  std::function<bool(const std::string&, std::string&)> set;  // scalars
  bool given = false;
};

Args::Args(std::string usage, std::string description) : app_(std::make_unique<CLI::App>()) {
  command_ = usage.substr(0, usage.find(' ', usage.find(' ') + 1));
  app_->name(command_);
  app_->description("usage: " + usage + "\n\n" + description);
  app_->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app_->get_formatter()->column_width(28);
}

Args::~Args() = default;

void Args::option(const std::string& name, std::string* target, const std::string& metavar, const std::string& help) {
  auto v = std::make_unique<Value>();
  v->name = name;
  v->option = app_->add_option("--" + name, v->text, help)->type_name(metavar);
  if (!target->empty()) v->option->default_str(*target);
  v->set = [target](const std::string& s, std::string&) {
    *target = s;
    return true;
  };
  values_.push_back(std::move(v));
}

void Args::option(const std::string& name, int64_t* target, const std::string& metavar, const std::string& help,
                  int64_t min, int64_t max) {
  auto v = std::make_unique<Value>();
  v->name = name;
  v->option = app_->add_option("--" + name, v->text, help)->type_name(metavar)->default_str(std::to_string(*target));
  v->set = [target, min, max](const std::string& s, std::string& error) { return parse_int(s, min, max, *target, error); };
  values_.push_back(std::move(v));
}

void Args::option(const std::string& name, double* target, const std::string& metavar, const std::string& help,
                  double min, double max) {
  auto v = std::make_unique<Value>();
  v->name = name;
  v->option = app_->add_option("--" + name, v->text, help)->type_name(metavar)->default_str(number_text(*target));
  v->set = [target, min, max](const std::string& s, std::string& error) { return parse_real(s, min, max, *target, error); };
  values_.push_back(std::move(v));
}

void Args::choice(const std::string& name, std::string* target, const std::vector<std::string>& choices,
                  const std::string& help) {
  std::string all;
  for (const std::string& c : choices) all += (all.empty() ? "" : " | ") + c;
  auto v = std::make_unique<Value>();
  v->name = name;
  v->option = app_->add_option("--" + name, v->text, help + ": " + all)->type_name("NAME")->default_str(*target);
  v->set = [target, choices, all](const std::string& s, std::string& error) {
    for (const std::string& c : choices)
      if (s == c) {
        *target = s;
        return true;
      }
    error = "'" + s + "' is not one of " + all;
    return false;
  };
  values_.push_back(std::move(v));
}

void Args::flag(const std::string& name, bool* target, const std::string& help) {
  auto v = std::make_unique<Value>();
  v->name = name;
  v->flag = target;
  v->option = app_->add_flag("--" + name, *target, help);
  v->set = [target](const std::string& s, std::string& error) {
    if (s == "true" || s == "1" || s == "yes") *target = true;
    else if (s == "false" || s == "0" || s == "no") *target = false;
    else {
      error = "'" + s + "' is not true or false";
      return false;
    }
    return true;
  };
  values_.push_back(std::move(v));
}

void Args::list(const std::string& name, std::vector<std::string>* target, const std::string& metavar,
                const std::string& help) {
  auto v = std::make_unique<Value>();
  v->name = name;
  v->list = target;
  v->option = app_->add_option("--" + name, v->texts, help)->type_name(metavar)->multi_option_policy(
      CLI::MultiOptionPolicy::TakeAll);
  v->set = [target](const std::string& s, std::string&) {  // from a config file: comma-separated
    target->clear();
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) target->push_back(trim(item));
    return true;
  };
  values_.push_back(std::move(v));
}

void Args::positionals(std::vector<std::string>* target, const std::string& metavar, const std::string& help) {
  auto v = std::make_unique<Value>();
  v->name = metavar;
  v->list = target;
  v->option = app_->add_option(metavar, v->texts, help)->type_name("");
  values_.push_back(std::move(v));
}

void Args::allow_config_file() {
  auto v = std::make_unique<Value>();
  v->name = "config";
  v->option = app_->add_option("--config", v->text,
                               "options as 'name = value' lines (names without dashes); the command line overrides them")
                  ->type_name("FILE");
  values_.push_back(std::move(v));
}

bool Args::given(const std::string& name) const {
  for (const auto& v : values_)
    if (v->name == name) return v->given;
  return false;
}

int Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) command_line_ += (i ? " " : "") + std::string(argv[i]);
  try {
    app_->parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app_->help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what());
  }
  std::string error;
  auto apply = [&](Value& v, const std::string& text, const std::string& origin) {
    if (v.set(text, error)) return v.given = true;
    error = origin + "--" + v.name + ": " + error;
    return false;
  };
  // The config file first, so the command line overrides it.
  std::map<std::string, std::pair<std::string, std::string>> config;  // name -> (value, "file:line: ")
  for (const auto& v : values_)
    if (v->name == "config" && v->option->count()) {
      std::ifstream in(v->text);
      if (!in) return usage_error("--config: cannot read the config file " + v->text);
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
        line = trim(line);
        if (line.empty()) continue;
        const std::string where = v->text + ":" + std::to_string(n) + ": ";
        const size_t eq = line.find('=');
        if (eq == std::string::npos) return usage_error(where + "expected 'name = value', got '" + line + "'");
        const std::string key = trim(line.substr(0, eq));
        bool known = false;
        for (const auto& w : values_) known |= w->name == key && w->set && key != "config";
        if (!known) return usage_error(where + "unknown option '" + key + "'");
        config[key] = {trim(line.substr(eq + 1)), where};
      }
    }
  for (auto& v : values_) {
    if (v->option->count()) {
      if (v->flag) {
        v->given = true;  // CLI11 stored the switch (and any =true/false)
      } else if (v->list) {
        *v->list = v->texts;
        v->given = true;
      } else if (v->set && !apply(*v, v->text, "")) {
        return usage_error(error);
      }
    } else if (auto it = config.find(v->name); it != config.end()) {
      if (!apply(*v, it->second.first, it->second.second)) return usage_error(error);
    }
  }
  return -1;
}

int Args::usage_error(const std::string& message) const {
  std::fprintf(stderr, "%s: %s\n(see %s --help)\n", command_.c_str(), message.c_str(), command_.c_str());
  return 2;
}

}  // namespace cli
