// OneFlow's softmax / softmax_grad (over the last axis) on CPU float32.
#include "oneflow_glue.h"

namespace libai_vit_kernels {
namespace {

using oneflow::user_op::KernelComputeContext;
using oneflow::user_op::OpKernel;
using oneflow::user_op::Tensor;

class Softmax final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* in = ctx->Tensor4ArgNameAndIndex("in", 0);
    Tensor* out = ctx->Tensor4ArgNameAndIndex("out", 0);
    const int64_t cols = row_length(in->shape_view());
    Best().softmax(in->shape_view().elem_cnt() / cols, cols, in->dptr<float>(),
                   out->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

class SoftmaxGrad final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* y = ctx->Tensor4ArgNameAndIndex("y", 0);
    const Tensor* dy = ctx->Tensor4ArgNameAndIndex("dy", 0);
    Tensor* dx = ctx->Tensor4ArgNameAndIndex("dx", 0);
    const int64_t cols = row_length(y->shape_view());
    Best().softmax_grad(y->shape_view().elem_cnt() / cols, cols, y->dptr<float>(),
                        dy->dptr<float>(), dx->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("softmax", Softmax, "in");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("softmax_grad", SoftmaxGrad, "dy");

}  // namespace
}  // namespace libai_vit_kernels
