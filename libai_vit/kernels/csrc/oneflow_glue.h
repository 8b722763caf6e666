// What every OneFlow glue file needs: the framework, and the registration of a CPU float32 kernel
// above OneFlow's own (kKernelPriorityOptimized), matched by the data type of one input.
#ifndef LIBAI_VIT_KERNELS_ONEFLOW_GLUE_H_
#define LIBAI_VIT_KERNELS_ONEFLOW_GLUE_H_

#include "kernels.h"
#include "oneflow/core/framework/framework.h"

#define LIBAI_VIT_REGISTER_CPU_FLOAT_KERNEL(op_name, kernel, typed_input)                  \
  REGISTER_USER_KERNEL(op_name)                                                           \
      .SetCreateFn<kernel>()                                                              \
      .SetIsMatchedHob((::oneflow::user_op::HobDeviceType() == ::oneflow::DeviceType::kCPU) \
                       && (::oneflow::user_op::HobDataType(typed_input, 0)                 \
                           == ::oneflow::DataType::kFloat))                                \
      .SetPriority(::oneflow::user_op::kKernelPriorityOptimized)

// The length of the last axis (1 for a scalar): softmax's rows.
inline int64_t row_length(const ::oneflow::ShapeView& shape) {
  return shape.NumAxes() == 0 ? 1 : shape.At(shape.NumAxes() - 1);
}

#endif  // LIBAI_VIT_KERNELS_ONEFLOW_GLUE_H_
