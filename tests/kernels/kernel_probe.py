"""Runs every kernelled op on fixed inputs in this process, eager and in nn.Graph, and saves the
results: `python kernel_probe.py OUT.npz`. The tests run it once with OneFlow's own kernels
(LIBAI_VIT_KERNELS=0) and once per instruction set the CPU runs (LIBAI_VIT_KERNELS_ISA).
With the kernels off, LayerNorm is the composed one (OneFlow's CPU layer_norm aborts)."""

import sys

import numpy as np
import oneflow as flow

import libai_vit
from libai_vit.layers.norm import layer_norm_primitives

SPECIALS = np.array(
    [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 1e-45, 3e38, -3e38], dtype=np.float32
)


def inputs():
    """Named float32 arrays, the same in every process."""
    rng = np.random.default_rng(27)
    grid = np.concatenate([np.linspace(-16, 16, 2**16 + 3, dtype=np.float32), SPECIALS])
    soft = rng.normal(size=(7, 197)).astype(np.float32)
    soft[1] *= 1000.0  # large: only the max survives
    soft[2] *= 1e-30  # tiny: uniform
    soft[3, ::3] = -np.inf  # masked keys
    soft[4] = -np.inf  # a fully masked row: NaN, as OneFlow's
    soft[5, 7] = np.nan
    norm = rng.normal(size=(3, 7, 33)).astype(np.float32)
    norm[0] += 1e4  # a large mean: the variance must not cancel
    norm[1] *= 1e-20  # below eps
    return {
        "grid": grid,
        "grid_dy": rng.normal(size=grid.shape).astype(np.float32),
        "soft": soft,
        "soft_odd": rng.normal(size=(3, 5, 17)).astype(np.float32),
        "soft_dy": rng.normal(size=(7, 197)).astype(np.float32),
        "norm": norm,
        "norm_wide": rng.normal(2.0, 3.0, size=(5, 192)).astype(np.float32),
        "norm_dy": rng.normal(size=(3, 7, 33)).astype(np.float32),
        "gamma": rng.normal(size=33).astype(np.float32),
        "beta": rng.normal(size=33).astype(np.float32),
    }


def layer_norm(x, gamma, beta, eps=1e-5):
    if "layer_norm" in libai_vit.kernels.active():
        if gamma is None:
            return flow._C.layer_norm(
                x, begin_norm_axis=x.ndim - 1, begin_params_axis=x.ndim - 1, epsilon=eps
            )
        return flow._C.layer_norm_affine(
            x, gamma, beta, begin_norm_axis=x.ndim - 1, begin_params_axis=x.ndim - 1, epsilon=eps
        )
    return layer_norm_primitives(x, gamma, beta, eps)


def grads(fn, arrays, dy):
    """fn(*tensors) and the gradients of sum(fn * dy) for each input."""
    ts = [flow.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * flow.tensor(dy)).sum().backward()
    return [y.numpy()] + [t.grad.numpy() for t in ts]


class Step(flow.nn.Module):
    """One module through all three kernels: its parameters' SGD step (lr 1) gives the grads."""

    def __init__(self, a):
        super().__init__()
        self.g = flow.nn.Parameter(flow.tensor(a["grid"][:65536:65][:1001]))
        self.s = flow.nn.Parameter(flow.tensor(a["soft_odd"]))
        self.x = flow.nn.Parameter(flow.tensor(a["norm"][2]))
        self.gamma = flow.nn.Parameter(flow.tensor(a["gamma"]))
        self.beta = flow.nn.Parameter(flow.tensor(a["beta"]))
        self.weights = [flow.tensor(np.linspace(-1, 1, n, dtype=np.float32)) for n in (1001, 17)]

    def forward(self):
        loss = (flow.nn.functional.gelu(self.g) * self.weights[0]).sum()
        loss = loss + (flow.softmax(self.s, dim=-1) * self.weights[1]).sum()
        ln = layer_norm(self.x, self.gamma, self.beta)
        return loss + (ln * flow.nn.functional.gelu(ln, approximate="tanh")).sum()


def graph_step(a, use_graph):
    module = Step(a)
    opt = flow.optim.SGD(module.parameters(), lr=1.0)
    if use_graph:

        class G(flow.nn.Graph):
            def __init__(self):
                super().__init__()
                self.m = module
                self.add_optimizer(opt)

            def build(self):
                loss = self.m()
                loss.backward()
                return loss

        loss = G()()
    else:
        loss = module()
        loss.backward()
        opt.step()
    before = Step(a)
    out = {"loss": loss.numpy()}
    for name, p in module.named_parameters():
        out[f"dparam_{name}"] = getattr(before, name).numpy() - p.numpy()
    return out


def main(path):
    a = inputs()
    out = {"active": np.array(",".join(libai_vit.kernels.active()))}
    gelu = flow.nn.functional.gelu
    out["gelu"], out["gelu_dx"] = grads(gelu, [a["grid"]], a["grid_dy"])
    out["fast_gelu"], out["fast_gelu_dx"] = grads(
        lambda t: gelu(t, approximate="tanh"), [a["grid"]], a["grid_dy"]
    )
    # a non-contiguous input: the transpose of a contiguous block
    block = a["grid"][: 251 * 261].reshape(251, 261)
    out["gelu_transposed"] = gelu(flow.tensor(block).transpose(0, 1)).numpy()
    soft = lambda t: flow.softmax(t, dim=-1)  # noqa: E731
    out["softmax"], out["softmax_dx"] = grads(soft, [a["soft"]], a["soft_dy"])
    out["softmax_odd"] = soft(flow.tensor(a["soft_odd"])).numpy()
    out["softmax_transposed"] = soft(flow.tensor(a["soft_odd"]).transpose(1, 2)).numpy()
    ln = lambda t, g, b: layer_norm(t, g, b)  # noqa: E731
    out["ln"], out["ln_dx"], out["ln_dgamma"], out["ln_dbeta"] = grads(
        ln, [a["norm"], a["gamma"], a["beta"]], a["norm_dy"]
    )
    out["ln_plain"], out["ln_plain_dx"] = grads(
        lambda t: layer_norm(t, None, None), [a["norm"]], a["norm_dy"]
    )
    out["ln_wide"] = layer_norm(flow.tensor(a["norm_wide"]), None, None, eps=1e-6).numpy()
    for mode in ("eager", "graph"):
        for k, v in graph_step(a, mode == "graph").items():
            out[f"{mode}_{k}"] = v
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
