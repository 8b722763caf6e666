// The kernel table for this process: the widest instruction set the CPU (and its OS) runs, unless
// LIBAI_VIT_KERNELS_ISA names a narrower one it runs (the tests compare the sets this way).
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace libai_vit_kernels {
namespace {

bool runs(const char* isa) {
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(isa, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return std::strcmp(isa, "generic") == 0;
}

const Kernels& choose() {
  __builtin_cpu_init();
  const char* asked = std::getenv("LIBAI_VIT_KERNELS_ISA");
  if (asked && *asked && runs(asked)) {
    if (std::strcmp(asked, "avx512") == 0) return avx512::Get();
    if (std::strcmp(asked, "avx2") == 0) return avx2::Get();
    return generic::Get();
  }
  if (runs("avx512")) return avx512::Get();
  if (runs("avx2")) return avx2::Get();
  return generic::Get();
}

}  // namespace

const Kernels& Best() {
  static const Kernels& chosen = choose();
  return chosen;
}

}  // namespace libai_vit_kernels

// For the loader (ctypes): the instruction set the kernels run with.
extern "C" __attribute__((visibility("default"))) const char* libai_vit_kernels_isa() {
  return libai_vit_kernels::Best().isa;
}
