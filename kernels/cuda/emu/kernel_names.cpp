// Kernel names for the emulator's reports: a kernel is a static function (not in the
// dynamic symbol table), so its name comes from the ELF symbol table of the object
// that holds it, found with dladdr, and is demangled and shortened to the function's
// name and template arguments ("bias_grad_kernel<float, float>").
// Invariant: a name is looked up once per kernel and cached; a kernel without a
// symbol (a stripped binary) is named by its address, never left out.
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "sanitize.h"

namespace strata::emu::sanitize {

namespace {

// The mangled name of the function symbol at `offset` (file address) in `path`.
std::string symbol_at(const char* path, uint64_t offset) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  struct stat st {};
  std::string found;
  if (::fstat(fd, &st) == 0 && size_t(st.st_size) > sizeof(Elf64_Ehdr)) {
    void* map = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
      const char* base = static_cast<const char*>(map);
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
      const bool elf64 = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64;
      if (elf64 && eh->e_shoff + size_t(eh->e_shnum) * sizeof(Elf64_Shdr) <= size_t(st.st_size)) {
        const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
        for (int i = 0; i < eh->e_shnum && found.empty(); ++i) {
          if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
          const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
          const char* names = base + sh[sh[i].sh_link].sh_offset;
          for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k)
            if (ELF64_ST_TYPE(syms[k].st_info) == STT_FUNC && syms[k].st_value == offset) {
              found = names + syms[k].st_name;
              break;
            }
        }
      }
      ::munmap(map, size_t(st.st_size));
    }
  }
  ::close(fd);
  return found;
}

// "void strata::cuda_emu::f<float>(float*, long)" -> "f<float>".
std::string shorten(std::string s) {
  for (const char* drop : {"(anonymous namespace)::", "strata::", "cuda_emu::", "num::"})
    for (size_t at; (at = s.find(drop)) != std::string::npos;) s.erase(at, std::strlen(drop));
  int depth = 0;
  size_t start = 0, end = s.size();
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth != 0) continue;
    if (c == '(') {
      end = i;
      break;
    }
    if (c == ' ') start = i + 1;                       // after a return type
    if (c == ':' && i + 1 < s.size() && s[i + 1] == ':') start = i + 2;  // after a class
  }
  return s.substr(start, end - start);
}

}  // namespace

std::string kernel_name(const void* kernel) {
  static std::mutex mutex;
  static std::map<const void*, std::string> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(kernel);
  if (it != cache.end()) return it->second;
  std::string mangled;
  Dl_info info{};
  if (kernel && dladdr(kernel, &info)) {
    if (info.dli_sname && info.dli_saddr == kernel) mangled = info.dli_sname;
    const auto* eh = static_cast<const Elf64_Ehdr*>(info.dli_fbase);
    const uint64_t offset = uint64_t(reinterpret_cast<uintptr_t>(kernel)) -
                            (eh && eh->e_type == ET_DYN ? uint64_t(reinterpret_cast<uintptr_t>(info.dli_fbase)) : 0);
    if (mangled.empty() && info.dli_fname && *info.dli_fname) mangled = symbol_at(info.dli_fname, offset);
    if (mangled.empty()) mangled = symbol_at("/proc/self/exe", offset);
  }
  std::string name;
  if (!mangled.empty()) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
    name = shorten(status == 0 && demangled ? demangled : mangled);
    std::free(demangled);
  } else {
    char text[32];
    std::snprintf(text, sizeof text, "kernel@%p", kernel);
    name = text;
  }
  return cache[kernel] = name;
}

}  // namespace strata::emu::sanitize
