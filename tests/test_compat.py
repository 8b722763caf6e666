"""LiBai 0.1.1 / OneFlow 0.9.0 fixes in libai_vit.compat that can be shown in one process."""

import oneflow as flow
from oneflow import nn

import libai_vit  # noqa: F401  (applies the fixes)
from libai_vit.compat import loss_scale_key


class _AmpGraph(nn.Graph):
    def __init__(self, model, optimizer):
        super().__init__()
        self.model = model
        self.add_optimizer(optimizer)
        self.config.enable_amp(True)
        self.set_grad_scaler(
            flow.amp.GradScaler(
                init_scale=2.0**30, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000
            )
        )

    def build(self, x):
        loss = self.model(x).sum()
        loss.backward()
        return loss


def _loss_scale(graph):
    return float(graph.state_dict()[loss_scale_key(graph.name)].numpy())


def test_amp_loss_scale_survives_a_rebuilt_graph():
    model = nn.Linear(4, 4)
    first = _AmpGraph(model, flow.optim.SGD(model.parameters(), lr=0.1))
    for _ in range(3):  # gradients overflow: each step halves the scale and is skipped
        first(flow.full((2, 4), 1e30))
    assert _loss_scale(first) == 2.0**27
    state = first.state_dict()
    for p in model.parameters():
        # the first trace left lazy tensors there (as the trainer does before a rebuild)
        p.grad = None
    # as at a checkpoint boundary
    second = _AmpGraph(model, flow.optim.SGD(model.parameters(), lr=0.1))
    assert second.name != first.name
    second.load_state_dict(state)
    second(flow.ones(2, 4))  # a finite step keeps the scale it started from
    assert _loss_scale(second) == 2.0**27
