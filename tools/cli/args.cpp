// Option parsing for the subcommands (see args.h).
#include "args.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
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
}  // namespace

void Args::option(const std::string& name, std::string* target, const std::string& metavar, const std::string& help) {
  options_.push_back({name, metavar, help, target->empty() ? "" : *target, false, false, [target](const std::string& v) {
                        *target = v;
                        return true;
                      }});
}

void Args::option(const std::string& name, int64_t* target, const std::string& metavar, const std::string& help) {
  options_.push_back({name, metavar, help, std::to_string(*target), false, false, [target](const std::string& v) {
                        char* end = nullptr;
                        const long long x = std::strtoll(v.c_str(), &end, 10);
                        if (v.empty() || *end) return false;
                        *target = x;
                        return true;
                      }});
}

void Args::option(const std::string& name, double* target, const std::string& metavar, const std::string& help) {
  options_.push_back({name, metavar, help, number_text(*target), false, false, [target](const std::string& v) {
                        char* end = nullptr;
                        const double x = std::strtod(v.c_str(), &end);
                        if (v.empty() || *end) return false;
                        *target = x;
                        return true;
                      }});
}

void Args::flag(const std::string& name, bool* target, const std::string& help) {
  options_.push_back({name, "", help, "", true, false, [target](const std::string& v) {
                        if (v == "true" || v == "1" || v == "yes") *target = true;
                        else if (v == "false" || v == "0" || v == "no") *target = false;
                        else return false;
                        return true;
                      }});
}

void Args::positionals(std::vector<std::string>* target, const std::string& metavar, const std::string& help) {
  positionals_ = target;
  positional_metavar_ = metavar;
  positional_help_ = help;
}

Args::Option* Args::find(const std::string& name) {
  for (Option& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

bool Args::given(const std::string& name) const {
  for (const Option& o : options_)
    if (o.name == name) return o.given;
  return false;
}

bool Args::set_value(Option& o, const std::string& value, const std::string& origin, std::string& error) {
  if (!o.set(value)) {
    error = origin + "--" + o.name + ": '" + value + "' is not " +
            (o.is_flag ? "true or false" : "a valid " + (o.metavar.empty() ? std::string("value") : o.metavar));
    return false;
  }
  o.given = true;
  return true;
}

bool Args::read_config(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read the config file " + path;
    return false;
  }
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    const std::string where = path + ":" + std::to_string(n) + ": ";
    if (eq == std::string::npos) {
      error = where + "expected 'name = value', got '" + line + "'";
      return false;
    }
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    Option* o = find(key);
    if (!o || key == "config") {
      error = where + "unknown option '" + key + "'";
      return false;
    }
    if (!set_value(*o, value, where, error)) return false;
  }
  return true;
}

int Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) command_line_ += (i ? " " : "") + std::string(argv[i]);
  std::string error;
  // The config file first, so the command line overrides it.
  if (config_file_)
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      std::string path;
      if (a == "--config" && i + 1 < argc) path = argv[i + 1];
      else if (a.rfind("--config=", 0) == 0) path = a.substr(9);
      else continue;
      if (!read_config(path, error)) return usage_error(error);
    }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      if (!positionals_) return usage_error("unexpected argument '" + a + "'");
      positionals_->push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (config_file_ && name == "config") {
      if (!has_value) ++i;
      continue;
    }
    Option* o = find(name);
    if (!o) return usage_error("unknown option '--" + name + "'");
    if (o->is_flag && !has_value) value = "true";
    else if (!has_value) {
      if (i + 1 >= argc) return usage_error("--" + name + " needs a value (" + o->metavar + ")");
      value = argv[++i];
    }
    if (!set_value(*o, value, "", error)) return usage_error(error);
  }
  return -1;
}

int Args::usage_error(const std::string& message) const {
  const std::string cmd = usage_.substr(0, usage_.find(' ', usage_.find(' ') + 1));
  std::fprintf(stderr, "%s: %s\n(see %s --help)\n", cmd.c_str(), message.c_str(), cmd.c_str());
  return 2;
}

void Args::print_help() const {
  std::printf("usage: %s\n\n%s\n\n", usage_.c_str(), description_.c_str());
  for (const Option& o : options_) {
    std::string left = "  --" + o.name + (o.metavar.empty() ? "" : " " + o.metavar);
    if (left.size() < 24) left.resize(24, ' ');
    else left += "\n" + std::string(24, ' ');
    std::printf("%s%s", left.c_str(), o.help.c_str());
    if (!o.is_flag && !o.default_text.empty()) std::printf(" (default %s)", o.default_text.c_str());
    std::printf("\n");
  }
  if (config_file_)
    std::printf("  --config FILE         options as 'name = value' lines (names without dashes);\n"
                "                        the command line overrides them\n");
  if (positionals_) std::printf("  %-22s%s\n", positional_metavar_.c_str(), positional_help_.c_str());
  std::printf("  --help                show this help\n");
}

}  // namespace cli
