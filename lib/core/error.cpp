#include "strata/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace strata::detail {

void throw_error(const std::string& message) { throw Error(message); }

void throw_call_error(const char* expr, const std::string& what, const char* file, int line) {
  std::ostringstream s;
  s << expr << " failed: " << what << " (" << file << ":" << line << ")";
  throw Error(s.str());
}

void print_call_error(const char* expr, const std::string& what, const char* file, int line) {
  std::fprintf(stderr, "strata: %s failed: %s (%s:%d)\n", expr, what.c_str(), file, line);
}

std::string errno_string() { return std::strerror(errno); }

}  // namespace strata::detail
