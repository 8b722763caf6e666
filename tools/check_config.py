"""Pre-flight check run by tools/train.sh before it launches any process:
    python tools/check_config.py CONFIG WORLD_SIZE [key=value ...]
Loads the config with its overrides and validates it (values, layout, pretrained file) with
libai_vit.config.validate; prints one line and exits 2 if it cannot train."""

import sys


def main(argv):
    from libai_vit.config import ConfigError, check_eval_only, load_config, validate

    config, world_size, overrides = (
        argv[0],
        int(argv[1]),
        [a for a in argv[2:] if not a.startswith("--")],
    )
    try:
        cfg = load_config(config, overrides)
        validate(cfg, world_size)
        if "--eval-only" in argv[2:]:
            check_eval_only(cfg, resume="--resume" in argv[2:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
