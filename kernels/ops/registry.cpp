// The backends of this build and the op registry derived from their tables: the CPU
// backend always, the CUDA backend when built with it (in the emulated build, the
// emulated kernels: cuda_ops.h names them cuda_emu).
#include "backend.h"
#include "cpu/cpu.h"
#include "strata/error.h"
#if defined(STRATA_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace strata::ops {

const std::vector<std::string>& op_names() {
  static const std::vector<std::string> names = {
#define STRATA_OP_NAME(op, Args) #op,
      STRATA_OPS(STRATA_OP_NAME)
#undef STRATA_OP_NAME
  };
  return names;
}

bool has_op(const Backend& b, const std::string& op) {
#define STRATA_OP_HAS(entry, Args) \
  if (op == #entry) return b.entry != nullptr;
  STRATA_OPS(STRATA_OP_HAS)
#undef STRATA_OP_HAS
  return false;
}

const std::vector<const Backend*>& backends() {
  static const std::vector<const Backend*> list = {
      &cpu::backend(),
#if defined(STRATA_WITH_CUDA)
      &STRATA_CUDA_NS::backend(),
#endif
  };
  return list;
}

const Backend& backend_of(const char* op, const Stream& s) {
  for (const Backend* b : backends())
    if (b->kind == s.device().kind()) return *b;
  STRATA_FAIL(op << ": no " << device_kind_name(s.device().kind())
                 << " backend in this build; run it on a CPU device");
}

void missing_op(const char* op, const Backend& b) {
  STRATA_FAIL(op << ": the " << b.name << " backend has no implementation of this op (ops::op_registry() "
                 << "lists what each backend registered); run it on a device whose backend has it");
}

const std::vector<OpInfo>& op_registry() {
  static const std::vector<OpInfo> ops = [] {
    std::vector<OpInfo> out;
    for (const std::string& name : op_names()) {
      OpInfo info{name.c_str(), false, false};
      for (const Backend* b : backends()) {
        if (!has_op(*b, name)) continue;
        if (b->kind == DeviceKind::cpu) info.cpu = true;
        if (b->kind == DeviceKind::cuda) info.cuda = true;
      }
      out.push_back(info);
    }
    return out;
  }();
  return ops;
}

}  // namespace strata::ops
