"""Training hooks beyond LiBai's: the loss/accuracy curves drawn from metrics.json."""
import json
import os

from libai.engine.trainer import HookBase


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(metrics_path, png_path):
    """Loss per iteration and top-1 at each evaluation, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    loss = [(r["iteration"], r["total_loss"]) for r in rows if "total_loss" in r]
    acc = [(r["iteration"], r["Acc@1"]) for r in rows if "Acc@1" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if loss:
        ax.plot(*zip(*loss), color="tab:blue", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss", color="tab:blue")
    if acc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), "o-", color="tab:red")
        ax2.set_ylabel("top-1 (%)", color="tab:red")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


class CurvePlotter(HookBase):
    """After training (main process), writes `curves.png` beside metrics.json."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def after_train(self):
        metrics = os.path.join(self.output_dir, "metrics.json")
        if os.path.exists(metrics):
            plot_curves(metrics, os.path.join(self.output_dir, "curves.png"))
