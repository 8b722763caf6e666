// The kernels' arithmetic for one instruction set: build.py compiles this file once per set with
// -DLVK_ISA=<name> and that set's flags. Full vectors first, then the row's last partial vector
// with masked loads and stores, through the same formulas.
#include "kernels.h"
#include "vecmath.h"

#define LVK_STRING(name) #name
#define LVK_NAME(name) LVK_STRING(name)

namespace libai_vit_kernels {
namespace LVK_ISA {
namespace {

// f(x) elementwise over n elements, f taking and returning a V
template<typename F>
inline void map1(int64_t n, const float* x, float* y, F f) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) store(y + i, f(load(x + i)));
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    store_part(y + i, f(load_part(x + i, rest, 0.0f)), rest);
  }
}

template<typename F>
inline void map2(int64_t n, const float* a, const float* b, float* y, F f) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) store(y + i, f(load(a + i), load(b + i)));
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    store_part(y + i, f(load_part(a + i, rest, 0.0f), load_part(b + i, rest, 0.0f)), rest);
  }
}

// ------------------------------------------------------------------------------------ GELU
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

inline V gelu_value(V x) {
  V gauss;
  const V y = x * phi(x, &gauss);
  return select(lt(x, set1(-kPhiClamp)), set1(-0.0f), y);  // x Phi(x) -> -0 (and at -inf)
}

inline V gelu_slope(V x) {  // Phi(x) + x phi(x), the density's x clamped with Phi's
  V gauss;
  const V p = phi(x, &gauss);
  const V xc = min(set1(kPhiClamp), max(set1(-kPhiClamp), x));
  return fma(xc * set1(kInvSqrt2Pi), gauss, p);
}

void gelu(int64_t n, const float* x, float* y) { map1(n, x, y, gelu_value); }

void gelu_grad(int64_t n, const float* x, const float* dy, float* dx) {
  map2(n, x, dy, dx, [](V a, V d) { return gelu_slope(a) * d; });
}

// tanh form: (1 + tanh(u)) / 2 = sigmoid(2u) = 1 / (1 + exp(-2u)), no cancellation near u = 0 or
// for u << 0. Beyond |x| = kTanhClamp, sigmoid(2u) is 1 or below float's smallest normal.
constexpr float kTanhA = 0.7978845608028654f;    // sqrt(2 / pi)
constexpr float kTanhB = 0.044714998453855515f;  // OneFlow's constant
constexpr float kTanhClamp = 10.0f;

inline V fast_gelu_sigmoid(V xc, V* e) {  // sigmoid(2u) and exp(-2u) of a clamped x
  const V two_u = xc * fma(xc * xc, set1(2.0f * kTanhA * kTanhB), set1(2.0f * kTanhA));
  *e = exp(set1(0.0f) - two_u);
  return set1(1.0f) / (set1(1.0f) + *e);
}

inline V fast_gelu_value(V x) {
  const V xc = min(set1(kTanhClamp), max(set1(-kTanhClamp), x));
  V e;
  const V y = x * fast_gelu_sigmoid(xc, &e);
  return select(lt(x, set1(-kTanhClamp)), set1(-0.0f), y);
}

inline V fast_gelu_slope(V x) {  // sg + x sg (1 - sg) 2u', with 1 - sg = e sg
  const V xc = min(set1(kTanhClamp), max(set1(-kTanhClamp), x));
  V e;
  const V sg = fast_gelu_sigmoid(xc, &e);
  const V du = fma(xc * xc, set1(6.0f * kTanhA * kTanhB), set1(2.0f * kTanhA));
  return fma(xc * sg, (e * sg) * du, sg);
}

void fast_gelu(int64_t n, const float* x, float* y) { map1(n, x, y, fast_gelu_value); }

void fast_gelu_grad(int64_t n, const float* x, const float* dy, float* dx) {
  map2(n, x, dy, dx, [](V a, V d) { return fast_gelu_slope(a) * d; });
}

// ------------------------------------------------------------------------------------ softmax
// y = exp(x - max) / sum: a row of -inf only (a fully masked row) gives NaN, as OneFlow's.
void softmax(int64_t rows, int64_t cols, const float* x, float* y) {
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    V m = set1(-kInf);
    for (int64_t j = 0; j < full; j += kWidth) m = max(m, load(x + j));
    if (rest) m = max(m, load_part(x + full, rest, -kInf));
    const V row_max = set1(hmax(m));
    V sum = set1(0.0f);
    for (int64_t j = 0; j < full; j += kWidth) {
      const V e = exp(load(x + j) - row_max);
      store(y + j, e);
      sum = sum + e;
    }
    if (rest) {  // the padding lanes: exp(-inf - max) = 0
      const V e = exp(load_part(x + full, rest, -kInf) - row_max);
      store_part(y + full, e, rest);
      sum = sum + e;
    }
    const V inv = set1(1.0f / hsum(sum));
    for (int64_t j = 0; j < full; j += kWidth) store(y + j, load(y + j) * inv);
    if (rest) store_part(y + full, load_part(y + full, rest, 0.0f) * inv, rest);
  }
}

void softmax_grad(int64_t rows, int64_t cols, const float* y, const float* dy, float* dx) {
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  for (int64_t r = 0; r < rows; ++r, y += cols, dy += cols, dx += cols) {
    V acc = set1(0.0f);
    for (int64_t j = 0; j < full; j += kWidth) acc = fma(load(y + j), load(dy + j), acc);
    if (rest) acc = fma(load_part(y + full, rest, 0.0f), load_part(dy + full, rest, 0.0f), acc);
    const V dot = set1(hsum(acc));
    for (int64_t j = 0; j < full; j += kWidth) {
      store(dx + j, (load(dy + j) - dot) * load(y + j));
    }
    if (rest) {
      const V v = (load_part(dy + full, rest, 0.0f) - dot) * load_part(y + full, rest, 0.0f);
      store_part(dx + full, v, rest);
    }
  }
}

// ------------------------------------------------------------------------------------ LayerNorm
// Two passes for the statistics (the mean, then the squares of x - mean), both on x minus the
// row's first element: sums of the small differences, so neither the mean of a row far from 0 nor
// its variance cancels.
// mean(x) - x[0] of a row. The backward kernels take it again rather than OneFlow's float mean:
// x - mean would carry that mean's rounding (1e-3 of x's spread at mean 1e4, spread 1).
inline float row_offset(const float* x, int64_t cols) {
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  const V shift = set1(x[0]);
  V acc = set1(0.0f);
  for (int64_t j = 0; j < full; j += kWidth) acc = acc + (load(x + j) - shift);
  if (rest) acc = acc + (load_part(x + full, rest, x[0]) - shift);
  return hsum(acc) / static_cast<float>(cols);
}

void layer_norm(int64_t rows, int64_t cols, const float* x, const float* gamma, const float* beta,
                float eps, float* y, float* mean, float* inv_std) {
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    const V shift = set1(x[0]);
    const V offset = set1(row_offset(x, cols));
    V sq = set1(0.0f);
    for (int64_t j = 0; j < full; j += kWidth) {
      const V d = (load(x + j) - shift) - offset;
      sq = fma(d, d, sq);
    }
    if (rest) {
      const V d = zero_after((load_part(x + full, rest, x[0]) - shift) - offset, rest);
      sq = fma(d, d, sq);
    }
    const V vinv = set1(1.0f) / sqrt(set1(hsum(sq) * inv_cols + eps));
    mean[r] = first_lane(shift + offset);
    inv_std[r] = first_lane(vinv);
    auto out = [&](V xv, int64_t j, int n) {
      V v = ((xv - shift) - offset) * vinv;
      if (gamma) v = v * (n == kWidth ? load(gamma + j) : load_part(gamma + j, n, 0.0f));
      if (beta) v = v + (n == kWidth ? load(beta + j) : load_part(beta + j, n, 0.0f));
      return v;
    };
    for (int64_t j = 0; j < full; j += kWidth) store(y + j, out(load(x + j), j, kWidth));
    if (rest) store_part(y + full, out(load_part(x + full, rest, 0.0f), full, rest), rest);
  }
}

// With xhat = (x - mean) inv_std and g = dy gamma:
// dx = inv_std (g - mean(g) - xhat mean(g xhat)).
void layer_norm_grad(int64_t rows, int64_t cols, const float* dy, const float* x,
                     const float* mean, const float* inv_std, const float* gamma,
                     const float* add_to, float* dx) {
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  const float inv_cols = 1.0f / static_cast<float>(cols);
  (void)mean;  // see row_offset
  for (int64_t r = 0; r < rows; ++r, dy += cols, x += cols, dx += cols) {
    const V shift = set1(x[0]);
    const V offset = set1(row_offset(x, cols));
    const V vinv = set1(inv_std[r]);
    // g and xhat of the vector at column j holding n valid lanes (the padding gives 0 and 0)
    auto g_of = [&](int64_t j, int n) {
      V g = n == kWidth ? load(dy + j) : load_part(dy + j, n, 0.0f);
      if (gamma) g = g * (n == kWidth ? load(gamma + j) : load_part(gamma + j, n, 0.0f));
      return g;
    };
    auto xhat_of = [&](int64_t j, int n) {  // padding: 0 (g is 0 there too)
      const V xv = n == kWidth ? load(x + j) : load_part(x + j, n, x[0]);
      return zero_after(((xv - shift) - offset) * vinv, n);
    };
    V sum_g = set1(0.0f), sum_gx = set1(0.0f);
    for (int64_t j = 0; j < full; j += kWidth) {
      const V g = g_of(j, kWidth);
      sum_g = sum_g + g;
      sum_gx = fma(g, xhat_of(j, kWidth), sum_gx);
    }
    if (rest) {
      const V g = g_of(full, rest);
      sum_g = sum_g + g;
      sum_gx = fma(g, xhat_of(full, rest), sum_gx);
    }
    const V mean_g = set1(hsum(sum_g) * inv_cols);
    const V mean_gx = set1(hsum(sum_gx) * inv_cols);
    const float* add = add_to ? add_to + r * cols : nullptr;
    auto out = [&](int64_t j, int n) {
      V v = vinv * fnma(xhat_of(j, n), mean_gx, g_of(j, n) - mean_g);
      if (add) v = v + (n == kWidth ? load(add + j) : load_part(add + j, n, 0.0f));
      return v;
    };
    for (int64_t j = 0; j < full; j += kWidth) store(dx + j, out(j, kWidth));
    if (rest) store_part(dx + full, out(full, rest), rest);
  }
}

// Column sums over all rows, accumulated per block of rows and then added to the totals, so the
// float rounding grows with rows / kBlock + kBlock, not with rows.
void layer_norm_param_grad(int64_t rows, int64_t cols, const float* dy, const float* x,
                           const float* mean, const float* inv_std, float* gamma_diff,
                           float* beta_diff) {
  constexpr int64_t kBlock = 32;
  const int64_t full = cols - cols % kWidth;
  const int rest = static_cast<int>(cols - full);
  for (int64_t j = 0; j < cols; ++j) {
    if (gamma_diff) gamma_diff[j] = 0.0f;
    if (beta_diff) beta_diff[j] = 0.0f;
  }
  (void)mean;  // see row_offset
  float shift[kBlock], offset[kBlock];
  // one vector of columns at a time through a block of rows: its partial sums stay in registers
  auto columns = [&](int64_t r0, int64_t r1, int64_t j, int n) {
    V sg = set1(0.0f), sb = set1(0.0f);
    for (int64_t r = r0; r < r1; ++r) {
      const float* dyr = dy + r * cols + j;
      const V d = n == kWidth ? load(dyr) : load_part(dyr, n, 0.0f);
      sb = sb + d;
      if (gamma_diff) {
        const float* xr = x + r * cols + j;
        const V xv = n == kWidth ? load(xr) : load_part(xr, n, 0.0f);
        const V xc = (xv - set1(shift[r - r0])) - set1(offset[r - r0]);
        sg = fma(d, xc * set1(inv_std[r]), sg);
      }
    }
    if (gamma_diff) {
      const V t = (n == kWidth ? load(gamma_diff + j) : load_part(gamma_diff + j, n, 0.0f)) + sg;
      n == kWidth ? store(gamma_diff + j, t) : store_part(gamma_diff + j, t, n);
    }
    if (beta_diff) {
      const V t = (n == kWidth ? load(beta_diff + j) : load_part(beta_diff + j, n, 0.0f)) + sb;
      n == kWidth ? store(beta_diff + j, t) : store_part(beta_diff + j, t, n);
    }
  };
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = r0 + kBlock < rows ? r0 + kBlock : rows;
    if (gamma_diff) {
      for (int64_t r = r0; r < r1; ++r) {
        shift[r - r0] = x[r * cols];
        offset[r - r0] = row_offset(x + r * cols, cols);
      }
    }
    for (int64_t j = 0; j < full; j += kWidth) columns(r0, r1, j, kWidth);
    if (rest) columns(r0, r1, full, rest);
  }
}

const Kernels kTable = {LVK_NAME(LVK_ISA), gelu, gelu_grad, fast_gelu, fast_gelu_grad, softmax,
                        softmax_grad, layer_norm, layer_norm_grad, layer_norm_param_grad};

}  // namespace

const Kernels& Get() { return kTable; }

}  // namespace LVK_ISA
}  // namespace libai_vit_kernels
