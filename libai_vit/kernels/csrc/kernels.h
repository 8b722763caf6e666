// The float32 CPU kernels, free of OneFlow: one table of functions per instruction set (math.cpp,
// compiled once for each), and the choice of the best one this CPU runs (dispatch.cpp). Arrays are
// contiguous and row-major; a "row" is the last `cols` elements.
#ifndef LIBAI_VIT_KERNELS_KERNELS_H_
#define LIBAI_VIT_KERNELS_KERNELS_H_

#include <cstdint>

#pragma GCC visibility push(hidden)  // each library keeps its own copy

namespace libai_vit_kernels {

struct Kernels {
  const char* isa;
  // GELU, erf form: y = x Phi(x); dx = dy (Phi(x) + x phi(x))
  void (*gelu)(int64_t n, const float* x, float* y);
  void (*gelu_grad)(int64_t n, const float* x, const float* dy, float* dx);
  // GELU, tanh form (OneFlow's fast_gelu): y = x (1 + tanh(a (x + b x^3))) / 2
  void (*fast_gelu)(int64_t n, const float* x, float* y);
  void (*fast_gelu_grad)(int64_t n, const float* x, const float* dy, float* dx);
  // softmax over each row; grad dx = (dy - sum(y dy)) y
  void (*softmax)(int64_t rows, int64_t cols, const float* x, float* y);
  void (*softmax_grad)(int64_t rows, int64_t cols, const float* y, const float* dy, float* dx);
  // LayerNorm over each row: y = (x - mean) inv_std gamma + beta (gamma, beta may be null);
  // mean and inv_std are per row, inv_std = 1 / sqrt(biased variance + eps)
  void (*layer_norm)(int64_t rows, int64_t cols, const float* x, const float* gamma,
                     const float* beta, float eps, float* y, float* mean, float* inv_std);
  // dx of LayerNorm (gamma may be null; add_to, if not null, is added to dx). The backward
  // kernels take the row means again from x (more precisely than the float `mean` holds them).
  void (*layer_norm_grad)(int64_t rows, int64_t cols, const float* dy, const float* x,
                          const float* mean, const float* inv_std, const float* gamma,
                          const float* add_to, float* dx);
  // gamma_diff = sum over rows of dy (x - mean) inv_std, beta_diff = sum of dy (either may be null)
  void (*layer_norm_param_grad)(int64_t rows, int64_t cols, const float* dy, const float* x,
                                const float* mean, const float* inv_std, float* gamma_diff,
                                float* beta_diff);
};

namespace avx512 {
const Kernels& Get();
}
namespace avx2 {
const Kernels& Get();
}
namespace generic {
const Kernels& Get();
}

// The fastest table this CPU runs, or the one LIBAI_VIT_KERNELS_ISA names (avx512, avx2, generic)
// if the CPU runs it.
const Kernels& Best();

}  // namespace libai_vit_kernels

#pragma GCC visibility pop

#endif  // LIBAI_VIT_KERNELS_KERNELS_H_
