"""Flash-attention dropout in nn.Graph: the seeds a graph compiles in depend only on the global seed
and the call's place in that graph, so a graph rebuilt after reseeding (a checkpoint boundary) draws
what a fresh process's first graph draws (a resumed run), on global (CPU-generator) tensors."""

import numpy as np
import oneflow as flow

import libai_vit  # noqa: F401  (compat fixes)
from libai_vit.layers.attention import attention

PLACEMENT = flow.placement("cpu", [0])


class _Attend(flow.nn.Module):
    def forward(self, q, k, v):
        return attention(
            attention(q, k, v, dropout_p=0.5, backend="flash"), k, v, dropout_p=0.5, backend="flash"
        )


class _Graph(flow.nn.Graph):
    def __init__(self):
        super().__init__()
        self.attend = _Attend()

    def build(self, q, k, v):
        return self.attend(q, k, v)


def _first_output_of_a_new_graph(seed, inputs):
    flow.manual_seed(seed)
    return _Graph()(*inputs).to_local().numpy()


def test_rebuilt_graph_draws_the_same_dropout_masks():
    rng = np.random.default_rng(0)
    inputs = [
        flow.tensor(rng.standard_normal((2, 2, 9, 4)).astype(np.float32)).to_global(
            placement=PLACEMENT, sbp=flow.sbp.split(0)
        )
        for _ in range(3)
    ]
    first = _first_output_of_a_new_graph(3, inputs)
    again = _first_output_of_a_new_graph(3, inputs)  # a later graph in the same process, same seed
    other = _first_output_of_a_new_graph(4, inputs)
    np.testing.assert_array_equal(again, first)
    assert not np.allclose(other, first)
