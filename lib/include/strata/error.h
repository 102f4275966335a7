// strata::Error and the check macros. Every public-API failure throws strata::Error
// with a message that says what was wrong, with which value, and what to do.
// Destructors never throw: they use STRATA_CHECK_PRINT, which logs instead.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace strata {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
[[noreturn]] void throw_error(const std::string& message);
[[noreturn]] void throw_call_error(const char* expr, const std::string& what, const char* file,
                                   int line);
void print_call_error(const char* expr, const std::string& what, const char* file, int line);
}  // namespace detail

}  // namespace strata

// STRATA_FAIL(a << b << c): throw strata::Error with the streamed message.
#define STRATA_FAIL(msg)                              \
  do {                                                \
    std::ostringstream strata_fail_stream_;           \
    strata_fail_stream_ << msg;                       \
    ::strata::detail::throw_error(strata_fail_stream_.str()); \
  } while (0)

// STRATA_CHECK(cond, a << b): throw strata::Error with the message unless cond holds.
#define STRATA_CHECK(cond, msg) \
  do {                          \
    if (!(cond)) STRATA_FAIL(msg); \
  } while (0)

// STRATA_CHECK_ERRNO(expr): expr returns -1 and sets errno on failure (POSIX calls).
// The error records the expression, strerror and file:line.
#define STRATA_CHECK_ERRNO(expr)                                                         \
  do {                                                                                   \
    if ((expr) == -1)                                                                    \
      ::strata::detail::throw_call_error(#expr, ::strata::detail::errno_string(), __FILE__, \
                                         __LINE__);                                      \
  } while (0)

// STRATA_CHECK_PRINT(cond, what): for destructors and other no-throw paths.
#define STRATA_CHECK_PRINT(cond, what) \
  do {                                 \
    if (!(cond)) ::strata::detail::print_call_error(#cond, (what), __FILE__, __LINE__); \
  } while (0)

namespace strata::detail {
std::string errno_string();
}
