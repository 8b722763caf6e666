// OneFlow's gelu / gelu_grad (erf form) and fast_gelu / fast_gelu_grad (tanh form) on CPU float32.
#include "oneflow_glue.h"

namespace libai_vit_kernels {
namespace {

using oneflow::user_op::KernelComputeContext;
using oneflow::user_op::OpKernel;
using oneflow::user_op::Tensor;
using Unary = void (*)(int64_t, const float*, float*);
using Binary = void (*)(int64_t, const float*, const float*, float*);

template<Unary Kernels::*fn>
class Forward final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* in = ctx->Tensor4ArgNameAndIndex("in", 0);
    Tensor* out = ctx->Tensor4ArgNameAndIndex("out", 0);
    (Best().*fn)(in->shape_view().elem_cnt(), in->dptr<float>(), out->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

template<Binary Kernels::*fn>
class Backward final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* x = ctx->Tensor4ArgNameAndIndex("x", 0);
    const Tensor* dy = ctx->Tensor4ArgNameAndIndex("dy", 0);
    Tensor* dx = ctx->Tensor4ArgNameAndIndex("dx", 0);
    CHECK_EQ(x->shape_view().elem_cnt(), dy->shape_view().elem_cnt());
    (Best().*fn)(x->shape_view().elem_cnt(), x->dptr<float>(), dy->dptr<float>(),
                 dx->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("gelu", Forward<&Kernels::gelu>, "in");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("gelu_grad", Backward<&Kernels::gelu_grad>, "dy");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("fast_gelu", Forward<&Kernels::fast_gelu>, "in");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("fast_gelu_grad", Backward<&Kernels::fast_gelu_grad>, "dy");

}  // namespace
}  // namespace libai_vit_kernels
