"""The ``selfsup`` command: list, pretrain, knn, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="selfsup", description="Self-supervised pretraining and evaluation for vision.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("list", help="methods, backbones and presets")

    pt = sub.add_parser("pretrain", help="pretrain a backbone without labels")
    pt.add_argument("preset", help="preset name (see `selfsup list`) or a YAML file")
    pt.add_argument("--data", help="image directory (ImageFolder tree or plain folder); sets data.path")
    pt.add_argument("--out", required=True, help="run directory")
    pt.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.epochs=10 (repeatable)",
    )
    pt.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")

    kn = sub.add_parser("knn", help="weighted kNN accuracy of a trained backbone")
    kn.add_argument("--weights", required=True, help="run directory, backbone.safetensors or checkpoint .pt")
    kn.add_argument("--train", required=True, help="labelled bank: ImageFolder directory (or digits:train)")
    kn.add_argument("--test", required=True, help="labelled queries: ImageFolder directory (or digits:test)")
    kn.add_argument("--k", type=int, default=None, help="neighbours (default: the run's knn.k)")
    kn.add_argument("--temperature", type=float, default=None, help="vote temperature (default: knn.temperature)")
    kn.add_argument("--limit-train", type=int, default=0, help="fixed-seed subset of the bank")
    kn.add_argument("--limit-test", type=int, default=0, help="fixed-seed subset of the queries")
    kn.add_argument("--batch-size", type=int, default=256)
    kn.add_argument("--num-workers", type=int, default=2)
    kn.add_argument("--size", type=int, default=None, help="input size (default: the run's first view size)")
    kn.add_argument("--device", default="auto")

    de = sub.add_parser("demo", help="offline demo: SimCLR on scikit-learn's digits, kNN vs random init")
    de.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    de.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def cmd_list(args) -> int:
    from .backbones import BACKBONES
    from .config import list_presets
    from .methods import METHODS

    print("methods:   " + ", ".join(METHODS.names()))
    print("backbones: " + ", ".join(BACKBONES.names()))
    print("presets:")
    for name in list_presets():
        print(f"  {name}")
    return 0


def cmd_pretrain(args) -> int:
    from .api import pretrain
    from .config import load_config

    overrides = list(args.overrides)
    if args.data is not None:
        if not Path(args.data).exists() and ":" not in args.data:
            raise FileNotFoundError(f"--data: directory not found: {args.data}")
        overrides.insert(0, f"data.path={args.data}")
    cfg = load_config(args.preset, overrides)
    t0 = time.time()
    res = pretrain(cfg, args.out, resume=args.resume)
    summary = {
        "out": str(args.out),
        "steps": res.steps,
        "epochs": res.epochs,
        "loss": res.loss,
        "images_per_s": round(res.images_per_s, 1),
        "seconds": round(time.time() - t0, 1),
        "skipped_images": res.skipped_images,
    }
    print(f"pretrained {cfg.method.name} ({cfg.backbone.name}) for {res.epochs:g} epochs into {args.out}")
    print(json.dumps(summary))
    return 0


def cmd_knn(args) -> int:
    from .api import knn_from_weights

    res = knn_from_weights(
        args.weights,
        args.train,
        args.test,
        k=args.k,
        temperature=args.temperature,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        size=args.size,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    print(
        f"kNN (k={res['k']}, T={res['temperature']}) on {res['n_test']} test images against "
        f"{res['n_train']}: top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%"
    )
    print(json.dumps({"weights": str(args.weights), **res}))
    return 0


def cmd_demo(args) -> int:
    import shutil

    from .api import _folder_eval_dataset, build_from_config, knn_eval, pretrain
    from .config import load_config

    cfg = load_config("simclr-demo", args.overrides)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    v = cfg.data.views[0]
    train_ds = _folder_eval_dataset("digits:train", v.size, 0, v.mean, v.std)
    test_ds = _folder_eval_dataset("digits:test", v.size, 0, v.mean, v.std)
    print(
        f"selfsup demo: SimCLR ({cfg.backbone.name}, {v.size}px) on scikit-learn's handwritten digits, "
        f"{len(train_ds)} train / {len(test_ds)} test images, {cfg.train.epochs} epochs, CPU-sized"
    )
    random_init = knn_eval(build_from_config(cfg).encoder, train_ds, test_ds, cfg.knn.k, cfg.knn.temperature)
    t0 = time.time()
    res = pretrain(cfg, out)
    from .api import load_encoder

    trained = knn_eval(load_encoder(out)[0], train_ds, test_ds, cfg.knn.k, cfg.knn.temperature)
    print(
        f"kNN top-1 (k={cfg.knn.k}): random init {100 * random_init['top1']:.1f}%  ->  "
        f"SimCLR {100 * trained['top1']:.1f}%   ({res.epochs:g} epochs, {time.time() - t0:.0f}s)"
    )
    print(f"run directory: {out.resolve()}")
    print(
        json.dumps(
            {
                "method": "simclr",
                "random_init_top1": random_init["top1"],
                "top1": trained["top1"],
                "train_seconds": round(time.time() - t0, 1),
                "out": str(out),
            }
        )
    )
    return 0


COMMANDS = {"list": cmd_list, "pretrain": cmd_pretrain, "knn": cmd_knn, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data.sources import DataError
    from .train.loop import NonFiniteLossError

    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    warnings.simplefilter("default")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        print(f"selfsup {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as e:
        print(f"selfsup {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"selfsup {args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
