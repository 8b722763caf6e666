"""Convert a checkpoint any loader here reads (timm, the families' release formats, DeiT / MAE,
official JAX .npz, or this project's checkpoint directory) into this project's format: a LiBai
checkpoint directory DST whose DST/model is the model's state dict (flow.save), loadable by LiBai's
Checkpointer(model).load(DST) or model.load_state_dict(flow.load(DST + "/model",
global_src_rank=0)); or, with --to-timm, into a timm .safetensors file DST that
timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=DST)) loads.

    .venv/bin/python tools/convert_checkpoint.py SRC DST --model vit_base_patch16_224 \
        [--num-classes N] [--img-size S] [--set embed_dim=48 depth=2 ...] [--trust] [--to-timm]

--img-size resamples the position embedding, --num-classes drops a head of another size (the new
one keeps the model's initialisation); --set overrides any other model kwarg (values in JSON).
"""

import argparse
import json
import logging
import os

import oneflow as flow

from libai_vit.models.zoo import create_model
from libai_vit.pretrained import PretrainedError, load_pretrained
from libai_vit.pretrained.timm_format import from_libai


def parse_set(items):
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a bare string such as global_pool=avg
    return kwargs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--model", required=True, help="a name from libai_vit.list_models()")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--img-size", type=int)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other model kwargs")
    p.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in SRC")
    p.add_argument("--to-timm", action="store_true", help="write DST as a timm .safetensors file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    kwargs = parse_set(args.set)
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.img_size is not None:
        kwargs["img_size"] = args.img_size
    try:
        model = create_model(args.model, **kwargs)
    except (ValueError, TypeError) as e:  # an unknown name (with close ones) or a bad --set
        raise SystemExit(f"error: {e}")
    try:
        load_pretrained(model, args.src, trust=args.trust)
        if args.to_timm:
            from safetensors.numpy import save_file

            state = {
                k: v.to_global(sbp=[flow.sbp.broadcast] * len(v.sbp)).to_local().numpy()
                for k, v in model.state_dict().items()
            }
            save_file(from_libai(state, model), args.dst)
            print(f"saved {args.dst}")
            return
    except PretrainedError as e:
        raise SystemExit(f"error: {e}")
    os.makedirs(args.dst, exist_ok=True)
    flow.save(model.state_dict(), os.path.join(args.dst, "model"), global_dst_rank=0)
    print(f"saved {os.path.join(args.dst, 'model')}")


if __name__ == "__main__":
    main()
