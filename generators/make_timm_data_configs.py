"""Write timm's data config and eval transform of every zoo name, and timm's list_models answers,
which tests/data/test_data_config.py and tests/models/test_zoo_names.py compare against
(tests/fixtures/timm/data_configs.json).

Run with the timm venv of generators/make_timm_fixtures.py (no model is built):

    .venv-timm/bin/python generators/make_timm_data_configs.py

"data": per name of libai_vit/models/timm_zoo.json, "pretrained_cfg" (timm's, the keys the zoo
records), "data_config" (timm's resolve_data_config of it) and "eval_transform" (timm's
transforms_imagenet_eval of that, written as libai_vit.inference.describe_preprocessing writes
ours: resize, interpolation, crop, mean, std). "list_models": per query (LIST_QUERIES: timm's
arguments), timm's answer restricted to the zoo's architectures.
"""

import json
import os

import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)

# isort: split
import timm  # noqa: E402
from make_timm_zoo import pretrained_cfg  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
ZOO = os.path.join(ROOT, "libai_vit", "models", "timm_zoo.json")
OUT = os.path.join(ROOT, "tests", "fixtures", "timm", "data_configs.json")


LIST_QUERIES = [
    dict(),
    dict(filter="vit_base_*"),
    dict(filter="*dinov2*"),
    dict(filter=["deit3_*", "eva02_*"], exclude_filters="*_384"),
    dict(filter="vit_*_patch14_*", pretrained=True),
    dict(filter="vit_base_patch16_224", pretrained=True),
    dict(filter="vit_base_patch16_224.augreg*", pretrained=True),
    dict(filter="*siglip*", pretrained=True, include_tags=False),
]


def describe(transform):
    out = {}
    for t in transform.transforms:
        kind = type(t).__name__
        if kind == "Resize":
            size = t.size
            out["resize"] = list(size) if isinstance(size, (list, tuple)) else int(size)
            out["interpolation"] = t.interpolation.value
        elif kind == "CenterCrop":
            out["crop"] = list(t.size)
        elif kind == "Normalize":
            out["mean"] = [float(m) for m in t.mean]
            out["std"] = [float(s) for s in t.std]
        elif kind != "MaybeToTensor":
            raise ValueError(f"unexpected step {kind} in timm's eval transform")
    return out


def main():
    with open(ZOO) as f:
        names = sorted(json.load(f))
    result = {}
    for name in names:
        cfg = pretrained_cfg(name)
        data = resolve_data_config(pretrained_cfg=cfg)
        result[name] = dict(
            pretrained_cfg=cfg,
            data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data.items()},
            eval_transform=describe(create_transform(**data, is_training=False)),
        )
    queries = []
    for query in LIST_QUERIES:
        names = [n for n in timm.list_models(**query) if n.split(".")[0] in result]
        queries.append(dict(query=query, names=names))
    with open(OUT, "w") as f:
        json.dump(dict(data=result, list_models=queries), f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"{len(result)} names written to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
