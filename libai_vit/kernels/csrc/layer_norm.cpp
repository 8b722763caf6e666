// OneFlow's layer_norm, layer_norm_grad and layer_norm_param_grad on CPU float32 (OneFlow 0.9's
// own CPU kernels for them abort with "TODO"). Rows are the axes before begin_norm_axis, which
// the op requires to equal begin_params_axis.
#include "oneflow_glue.h"

namespace libai_vit_kernels {
namespace {

using oneflow::user_op::KernelComputeContext;
using oneflow::user_op::OpKernel;
using oneflow::user_op::Tensor;

int64_t norm_axis(const oneflow::ShapeView& shape, int64_t axis) {
  return axis < 0 ? axis + shape.NumAxes() : axis;
}

const float* optional_input(KernelComputeContext* ctx, const char* name) {
  return ctx->has_input(name, 0) ? ctx->Tensor4ArgNameAndIndex(name, 0)->dptr<float>() : nullptr;
}

class LayerNorm final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* x = ctx->Tensor4ArgNameAndIndex("x", 0);
    const oneflow::ShapeView& shape = x->shape_view();
    const int64_t rows = shape.Count(0, norm_axis(shape, ctx->Attr<int64_t>("begin_norm_axis")));
    const float* gamma = ctx->Attr<bool>("scale") ? optional_input(ctx, "gamma") : nullptr;
    const float* beta = ctx->Attr<bool>("center") ? optional_input(ctx, "beta") : nullptr;
    Best().layer_norm(rows, shape.elem_cnt() / rows, x->dptr<float>(), gamma, beta,
                      static_cast<float>(ctx->Attr<double>("epsilon")),
                      ctx->Tensor4ArgNameAndIndex("y", 0)->mut_dptr<float>(),
                      ctx->Tensor4ArgNameAndIndex("mean", 0)->mut_dptr<float>(),
                      ctx->Tensor4ArgNameAndIndex("inv_variance", 0)->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

class LayerNormGrad final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* x = ctx->Tensor4ArgNameAndIndex("x", 0);
    const oneflow::ShapeView& shape = x->shape_view();
    const int64_t rows = shape.Count(0, norm_axis(shape, ctx->Attr<int64_t>("begin_norm_axis")));
    Best().layer_norm_grad(rows, shape.elem_cnt() / rows,
                           ctx->Tensor4ArgNameAndIndex("dy", 0)->dptr<float>(), x->dptr<float>(),
                           ctx->Tensor4ArgNameAndIndex("mean", 0)->dptr<float>(),
                           ctx->Tensor4ArgNameAndIndex("inv_variance", 0)->dptr<float>(),
                           optional_input(ctx, "gamma"), optional_input(ctx, "_add_to_output"),
                           ctx->Tensor4ArgNameAndIndex("dx", 0)->mut_dptr<float>());
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

class LayerNormParamGrad final : public OpKernel {
  using OpKernel::Compute;
  void Compute(KernelComputeContext* ctx) const override {
    const Tensor* x = ctx->Tensor4ArgNameAndIndex("x", 0);
    const oneflow::ShapeView& shape = x->shape_view();
    const int64_t rows =
        shape.Count(0, norm_axis(shape, ctx->Attr<int64_t>("begin_params_axis")));
    auto output = [&](const char* name) -> float* {
      return ctx->has_output(name, 0) ? ctx->Tensor4ArgNameAndIndex(name, 0)->mut_dptr<float>()
                                      : nullptr;
    };
    Best().layer_norm_param_grad(rows, shape.elem_cnt() / rows,
                                 ctx->Tensor4ArgNameAndIndex("dy", 0)->dptr<float>(),
                                 x->dptr<float>(),
                                 ctx->Tensor4ArgNameAndIndex("mean", 0)->dptr<float>(),
                                 ctx->Tensor4ArgNameAndIndex("inv_variance", 0)->dptr<float>(),
                                 output("gamma_diff"), output("beta_diff"));
  }
  bool AlwaysComputeWhenAllOutputsEmpty() const override { return false; }
};

LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("layer_norm", LayerNorm, "x");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("layer_norm_grad", LayerNormGrad, "dy");
LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL("layer_norm_param_grad", LayerNormParamGrad, "dy");

}  // namespace
}  // namespace libai_vit_kernels
