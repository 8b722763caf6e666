"""Feature extraction as timm does it for ViTs (timm/models/_features.py): which blocks to take,
what each one gives (`FeatureInfo`), and the `features_only` backbone (`FeatureGetterNet`: the
model's `forward_intermediates`, the blocks after the last one taken pruned away)."""

from oneflow import nn


def feature_take_indices(num_features, indices=None):
    """(the absolute indices to take, the largest): all for None, the last n for an int n, else the
    listed ones (negative counting from the end), as timm's `feature_take_indices`."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        take = [num_features - indices + i for i in range(indices)]
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range (0 to {num_features - 1})")
            take.append(idx)
    if not take:
        raise ValueError("no feature indices given")
    return take, max(take)


class FeatureInfo:
    """Per feature (block): `module`, `num_chs`, `reduction` (the input pixels per feature pixel),
    and the ones taken (`out_indices`); the accessors are timm's."""

    def __init__(self, info, out_indices):
        if isinstance(out_indices, int):  # an int: the last n
            out_indices = tuple(range(-out_indices, 0))
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key, idx=None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self):
        return len(self.info)


class FeatureGetterNet(nn.Module):
    """`model` as a backbone (timm's `create_model(..., features_only=True)` for ViTs): the output
    is the list of the `out_indices` blocks' feature maps (NCHW by default), the final norm applied
    to them when `norm`; blocks after the last index, the head and (unless `norm`) the final norm
    are pruned."""

    def __init__(self, model, out_indices=3, output_fmt="NCHW", norm=False, prune=True):
        super().__init__()
        if prune:
            out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)
        self.feature_info = FeatureInfo(model.feature_info, out_indices)
        self.model = model
        self.out_indices = out_indices
        self.output_fmt = output_fmt
        self.norm = norm

    def forward(self, x):
        return self.model.forward_intermediates(
            x,
            indices=self.out_indices,
            norm=self.norm,
            output_fmt=self.output_fmt,
            intermediates_only=True,
        )
