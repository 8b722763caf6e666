"""The CPU GELU that keeps Φ(x) for its backward: OneFlow's GELU values and gradients, eager and nn.Graph."""
import numpy as np
import oneflow as flow

from libai_vit.layers.activation import GELU, gelu


def test_gelu_matches_oneflows_forward_and_backward():
    x_np = np.random.default_rng(0).normal(0, 3, (5, 7, 33)).astype(np.float32)
    dy = flow.tensor(np.random.default_rng(1).normal(size=x_np.shape).astype(np.float32))
    got_x, ref_x = flow.tensor(x_np, requires_grad=True), flow.tensor(x_np, requires_grad=True)
    got, ref = gelu(got_x), flow.nn.functional.gelu(ref_x)
    got.backward(dy)
    ref.backward(dy)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_x.grad.numpy(), ref_x.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_gelu_trains_inside_nn_graph_like_oneflows():
    def train(act):
        flow.manual_seed(0)
        lin = flow.nn.Linear(6, 6)
        opt = flow.optim.SGD(lin.parameters(), lr=0.5)

        class Step(flow.nn.Graph):
            def __init__(self):
                super().__init__()
                self.lin = lin
                self.add_optimizer(opt)

            def build(self, x):
                loss = act(self.lin(x)).square().sum()
                loss.backward()
                return loss

        step, x = Step(), flow.tensor(np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6))
        return [float(step(x).numpy()) for _ in range(3)]

    np.testing.assert_allclose(train(GELU()), train(flow.nn.GELU()), rtol=1e-5)
