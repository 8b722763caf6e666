// Float32 SIMD vectors for the instruction set this file is compiled for, and the math the kernels
// need on them. math.cpp includes it once per instruction set (-mavx512f, -mavx2 -mfma, or the
// x86-64 baseline, where a "vector" is one float); everything sits in a namespace named after the
// set, so the copies never meet. Comparisons, min and max follow x86's rule: min(a, b) and
// max(a, b) return b when either is NaN, so a clamp written min(hi, max(lo, x)) keeps a NaN x.
#ifndef LIBAI_VIT_KERNELS_VECMATH_H_
#define LIBAI_VIT_KERNELS_VECMATH_H_

#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#pragma GCC visibility push(hidden)

namespace libai_vit_kernels {
namespace LVK_ISA {

#if defined(__AVX512F__)
constexpr int kWidth = 16;
struct V {
  __m512 v;
};
using Mask = __mmask16;
inline V set1(float a) { return {_mm512_set1_ps(a)}; }
inline V load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, V a) { _mm512_storeu_ps(p, a.v); }
inline __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
// lanes [0, n) from p, the others `fill` (0 < n < kWidth); store_part writes lanes [0, n)
inline V load_part(const float* p, int n, float fill) {
  return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), first(n), p)};
}
inline void store_part(float* p, V a, int n) { _mm512_mask_storeu_ps(p, first(n), a.v); }
inline V zero_after(V a, int n) { return {_mm512_maskz_mov_ps(first(n), a.v)}; }  // lanes >= n: 0
inline V operator+(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V operator-(V a, V b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V operator*(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V operator/(V a, V b) { return {_mm512_div_ps(a.v, b.v)}; }
inline V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }    // a b + c
inline V fnma(V a, V b, V c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a b
inline V fms(V a, V b, V c) { return {_mm512_fmsub_ps(a.v, b.v, c.v)}; }    // a b - c
inline V min(V a, V b) { return {_mm512_min_ps(a.v, b.v)}; }
inline V max(V a, V b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V abs(V a) { return {_mm512_abs_ps(a.v)}; }
inline Mask lt(V a, V b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
inline Mask gt(V a, V b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ); }
inline Mask and_(Mask a, Mask b) { return a & b; }
inline Mask not_less(V a, V b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ); }
inline V select(Mask m, V a, V b) { return {_mm512_mask_blend_ps(m, b.v, a.v)}; }  // m ? a : b
inline V round_nearest(V a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// 2^n for integral n in [-126, 127]
inline V pow2i(V n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
inline V sqrt(V a) { return {_mm512_sqrt_ps(a.v)}; }
inline float first_lane(V a) { return _mm512_cvtss_f32(a.v); }
inline float hsum(V a) { return _mm512_reduce_add_ps(a.v); }
inline float hmax(V a) { return _mm512_reduce_max_ps(a.v); }

#elif defined(__AVX2__)
constexpr int kWidth = 8;
struct V {
  __m256 v;
};
using Mask = __m256;
inline V set1(float a) { return {_mm256_set1_ps(a)}; }
inline V load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store(float* p, V a) { _mm256_storeu_ps(p, a.v); }
inline __m256i first(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V load_part(const float* p, int n, float fill) {
  __m256i m = first(n);
  return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
}
inline void store_part(float* p, V a, int n) { _mm256_maskstore_ps(p, first(n), a.v); }
inline V zero_after(V a, int n) { return {_mm256_and_ps(a.v, _mm256_castsi256_ps(first(n)))}; }
inline V operator+(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
inline V operator-(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline V operator*(V a, V b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline V operator/(V a, V b) { return {_mm256_div_ps(a.v, b.v)}; }
inline V fma(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline V fnma(V a, V b, V c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
inline V fms(V a, V b, V c) { return {_mm256_fmsub_ps(a.v, b.v, c.v)}; }
inline V min(V a, V b) { return {_mm256_min_ps(a.v, b.v)}; }
inline V max(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
inline V abs(V a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline Mask lt(V a, V b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
inline Mask gt(V a, V b) { return _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ); }
inline Mask and_(Mask a, Mask b) { return _mm256_and_ps(a, b); }
inline Mask not_less(V a, V b) { return _mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ); }
inline V select(Mask m, V a, V b) { return {_mm256_blendv_ps(b.v, a.v, m)}; }
inline V round_nearest(V a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline V pow2i(V n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
inline V sqrt(V a) { return {_mm256_sqrt_ps(a.v)}; }
inline float first_lane(V a) { return _mm256_cvtss_f32(a.v); }
inline float hsum(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(V a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#else  // the x86-64 baseline: one lane, the same formulas
constexpr int kWidth = 1;
struct V {
  float v;
};
using Mask = bool;
inline V set1(float a) { return {a}; }
inline V load(const float* p) { return {*p}; }
inline void store(float* p, V a) { *p = a.v; }
inline V load_part(const float* p, int n, float fill) { return {n > 0 ? *p : fill}; }
inline void store_part(float* p, V a, int n) {
  if (n > 0) *p = a.v;
}
inline V zero_after(V a, int n) { return {n > 0 ? a.v : 0.0f}; }
inline V operator+(V a, V b) { return {a.v + b.v}; }
inline V operator-(V a, V b) { return {a.v - b.v}; }
inline V operator*(V a, V b) { return {a.v * b.v}; }
inline V operator/(V a, V b) { return {a.v / b.v}; }
// in double, where a float product is exact: the rounding of a fused multiply-add, as the
// formulas that take x^2 exactly as hi + lo need
inline V fma(V a, V b, V c) { return {static_cast<float>(double(a.v) * b.v + c.v)}; }
inline V fnma(V a, V b, V c) { return {static_cast<float>(c.v - double(a.v) * b.v)}; }
inline V fms(V a, V b, V c) { return {static_cast<float>(double(a.v) * b.v - c.v)}; }
inline V min(V a, V b) { return {a.v < b.v ? a.v : b.v}; }
inline V max(V a, V b) { return {a.v > b.v ? a.v : b.v}; }
inline V abs(V a) {
  uint32_t bits;
  std::memcpy(&bits, &a.v, sizeof bits);
  bits &= 0x7fffffffu;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return {r};
}
inline Mask lt(V a, V b) { return a.v < b.v; }
inline Mask gt(V a, V b) { return a.v > b.v; }
inline Mask and_(Mask a, Mask b) { return a && b; }
inline Mask not_less(V a, V b) { return a.v >= b.v; }
inline V select(Mask m, V a, V b) { return m ? a : b; }
inline V round_nearest(V a) {
  // adding and removing 1.5 * 2^23 rounds to nearest-even for |a| < 2^22 (all that exp needs)
  return {(a.v + 12582912.0f) - 12582912.0f};
}
inline V pow2i(V n) {
  int32_t bits = (static_cast<int32_t>(n.v) + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return {r};
}
inline V sqrt(V a) { return {__builtin_sqrtf(a.v)}; }
inline float first_lane(V a) { return a.v; }
inline float hsum(V a) { return a.v; }
inline float hmax(V a) { return a.v; }
#endif

// c[0] + c[1] u + ... + c[N-1] u^(N-1), by Horner's rule
template<int N>
inline V poly(V u, const float (&c)[N]) {
  V r = set1(c[N - 1]);
  for (int k = N - 2; k >= 0; --k) r = fma(r, u, set1(c[k]));
  return r;
}

// Coefficients from generators/fit_kernel_polynomials.py (its output, wrapped).
// kPhiCentre: degree 6 on [0, 2], max relative error 1.21e-09
constexpr float kPhiCentre[7] = {3.989422799e-01f,  -6.649035695e-02f, 9.973374465e-03f,
                                 -1.186782026e-03f, 1.146469216e-04f,  -8.850094523e-06f,
                                 4.338681945e-07f};
constexpr float kErfcTailCentre = 5.133849978e-01f;
// kErfcTail: degree 9 on [0.176991, 0.849779], max relative error 4.01e-09
constexpr float kErfcTail[10] = {5.200894821e-01f,  7.022002670e-01f,  5.646092783e-01f,
                                 1.363785539e-01f,  -1.786908919e-01f, -9.567927234e-02f,
                                 1.018805568e-01f,  4.660766599e-02f,  -6.811686837e-02f,
                                 -1.339346770e-02f};
// kExpRest: degree 5 on [-0.346574, 0.346574], max relative error 2.68e-09
constexpr float kExpRest[6] = {5.000000013e-01f, 1.666666653e-01f, 4.166646553e-02f,
                               8.333360729e-03f, 1.393359759e-03f, 1.985778972e-04f};

constexpr float kInf = std::numeric_limits<float>::infinity();
// exp's domain: below kExpLow the result would be subnormal and is 0; from kExpHigh (where
// 2^n leaves float's exponents) to float's overflow point the result is exp(kExpHigh) ~ 2.4e38
constexpr float kExpLow = -87.33654475f;  // log(smallest normal float)
constexpr float kExpHigh = 88.37626266f;  // 127.5 ln 2
constexpr float kExpOverflow = 88.72283936f;

// e^a: a = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact), e^r = 1 + r + r^2 P(r)
inline V exp(V a) {
  const V x = min(set1(kExpHigh), max(set1(kExpLow), a));
  const V n = round_nearest(x * set1(1.44269504088896341f));
  V r = fnma(n, set1(0.693145751953125f), x);  // ln2's leading 16 bits: n * that is exact
  r = fnma(n, set1(1.428606765330187e-06f), r);
  const V er = fma(r * r, poly(r, kExpRest), r) + set1(1.0f);
  V y = er * pow2i(n);
  y = select(lt(a, set1(kExpLow)), set1(0.0f), y);
  return select(gt(a, set1(kExpOverflow)), set1(kInf), y);
}

// The standard normal distribution Phi(x) = (1 + erf(x / sqrt2)) / 2, and the density's
// exp(-x^2 / 2) as *gauss. Near 0 (-0.5 <= x <= sqrt2): Phi = 1/2 + x C(x^2). Elsewhere, with
// t = |x| / sqrt2 and s = 1 / (1 + t / 2): erfc(t) / 2 = s exp(-x^2 / 2) T(s) / 2, and
// Phi = erfc(t) / 2 below 0, 1 - erfc(t) / 2 above. exp(-x^2 / 2) takes x^2 exactly as hi + lo
// (one FMA), so it keeps float's relative precision in the far negative tail, where
// 1 + erf(x / sqrt2) would cancel. Beyond |x| = kPhiClamp, erfc(t) / 2 is below float's
// smallest normal; x is clamped there.
constexpr float kPhiClamp = 13.15f;  // 9.3 sqrt2: see T_HI in generators/fit_kernel_polynomials.py
inline V phi(V x, V* gauss) {
  const V centre = fma(x, poly(x * x, kPhiCentre), set1(0.5f));
  const V ax = min(set1(kPhiClamp), abs(x));
  // s = 1 / d, d = 1 + t / 2 = d_hi + d_lo exactly (1 - d_hi is exact for d_hi in [1, 6]), and
  // one Newton step on the divide: s enters T's argument, so its error counts twice
  const V c = set1(0.35355339059327376f);
  const V d_hi = fma(ax, c, set1(1.0f));
  const V d_lo = fma(ax, c, set1(1.0f) - d_hi);
  V s = set1(1.0f) / d_hi;
  s = fma(s, fnma(s, d_lo, fnma(s, d_hi, set1(1.0f))), s);
  const V hi = ax * ax;
  const V lo = fms(ax, ax, hi);
  const V g0 = exp(set1(-0.5f) * hi);  // exact argument
  const V g = fnma(g0, set1(0.5f) * lo, g0);  // exp(-(hi + lo) / 2)
  const V half_erfc = (set1(0.5f) * s) * (g * poly(s - set1(kErfcTailCentre), kErfcTail));
  const V tail = select(gt(x, set1(0.0f)), set1(1.0f) - half_erfc, half_erfc);
  *gauss = g;
  const Mask in_centre = and_(not_less(x, set1(-0.5f)), not_less(set1(1.41421356f), x));
  return select(in_centre, centre, tail);
}

}  // namespace LVK_ISA
}  // namespace libai_vit_kernels

#pragma GCC visibility pop

#endif  // LIBAI_VIT_KERNELS_VECMATH_H_
