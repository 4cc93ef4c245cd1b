"""The ``selfsup`` command: list, shards, pretrain, demo; knn, linear, finetune, distill, report, embed, export.

The evaluation commands' options are derived from the protocol dataclasses (``LinearConfig``,
``FinetuneConfig``, ``DistillConfig``, ``KnnConfig``): a field ``batch_size`` is ``--batch-size``,
with the field's type, default and trailing comment as its help. Each command then calls its
function in :mod:`selfsup.app` with the parsed options as keyword arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import time
import typing
import warnings
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# options from dataclass fields


def _field_help(cls) -> dict[str, str]:
    """The trailing ``# comment`` of each field of ``cls`` and its bases (the subclass's wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(klass), re.M):
                out[m[1]] = m[2]
    return out


def _tuple_of(item: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__}s, got {text!r}") from None

    return parse


def _add_fields(p, cls, only=(), skip=(), aliases=None, **defaults) -> None:
    """One option per field of dataclass ``cls`` (those in ``only`` if given, minus ``skip``).

    bool fields become ``--x/--no-x`` and ``Literal`` fields take their choices; ``defaults``
    replaces a field's default, ``aliases`` adds flag names.
    """
    helps, hints = _field_help(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (only and f.name not in only) or f.name in skip:
            continue
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        kw: dict = {"dest": f.name, "default": defaults.get(f.name, f.default)}
        kw["help"] = helps.get(f.name, "").replace("%", "%%") + " (default: %(default)s)"
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is typing.Literal:
            kw["choices"] = typing.get_args(tp)
        else:
            kw["type"] = args[0] if args else tp
        p.add_argument("--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, ()), **kw)


def _pop_config(cls, kwargs: dict):
    """The dataclass ``cls`` built from (and removed from) the parsed options."""
    return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs})


# ---------------------------------------------------------------------------------------------
# the parser


def _add_io(p, weights=True, train_test=True, limits=True) -> None:
    if weights:
        p.add_argument("--weights", required=True, help="run directory, backbone.safetensors or checkpoint .pt")
    if train_test:
        p.add_argument("--train", required=True, help="labelled training set: ImageFolder directory (or digits:train)")
        p.add_argument("--test", required=True, help="labelled test set: ImageFolder directory (or digits:test)")
    if limits:
        p.add_argument("--limit-train", type=int, default=0, help="fixed-seed subset of the training set")
        p.add_argument("--limit-test", type=int, default=0, help="fixed-seed subset of the test set")
    p.add_argument("--size", type=int, default=None, help="input size (default: the run's first view size)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (torchrun: one GPU per process)")


def _add_set(p) -> None:
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys: --set train.epochs=10 data.limit=500 (or one --set each)")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from .config import KnnConfig
    from .eval import DistillConfig, FinetuneConfig, LinearConfig

    p = _Parser(prog="selfsup", description="Self-supervised pretraining and evaluation for vision.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("list", help="methods, backbones and presets")

    sh = sub.add_parser("shards", help="pack an image folder or ImageFolder tree into tar shards with an index")
    sh.add_argument("src", help="image folder (recursive) or ImageFolder tree")
    sh.add_argument("dst", help="output folder: shard-000000.tar, ... and index.json")
    sh.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: 1000)")
    sh.add_argument("--workers", type=int, default=None, help="packing processes (default: one per CPU)")

    usage = "selfsup pretrain PRESET --out RUN [--data DIR] [--set KEY=VALUE ...] [--resume]"
    pt = sub.add_parser("pretrain", help="pretrain a backbone without labels", usage=usage)
    pt.add_argument("preset", help="preset name (see `selfsup list`) or a YAML file")
    pt.add_argument("--data", help="image directory (ImageFolder tree or plain folder); sets data.path")
    pt.add_argument("--out", required=True, help="run directory")
    _add_set(pt)
    pt.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")

    de = sub.add_parser("demo", help="offline demo: SimCLR on scikit-learn's digits, kNN vs random init")
    de.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    _add_set(de)

    kn = sub.add_parser("knn", help="weighted kNN accuracy of a trained backbone")
    _add_io(kn)
    _add_fields(kn, KnnConfig, only=("k", "temperature", "batch_size"), k=None, temperature=None)
    kn.add_argument("--num-workers", type=int, default=2)
    kn.add_argument("--sweep", action="store_true", help="sweep k and T from one feature extraction")
    kn.add_argument("--sweep-k", dest="ks", type=_tuple_of(int), default=None, help="default: 10,20,100,200")
    kn.add_argument("--sweep-t", dest="temperatures", type=_tuple_of(float), default=None, help="default: 0.07,0.1,0.5")

    li = sub.add_parser("linear", help="linear probe on frozen features")
    _add_io(li)
    _add_fields(li, LinearConfig, num_workers=2)
    mode = li.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="augment", action="store_const", const=False, help="features once (CPU default)")
    mode.add_argument("--augment", dest="augment", action="store_const", const=True, help="crops (GPU default)")

    ft = sub.add_parser("finetune", help="fine-tune the whole network on a fraction of the labels")
    _add_io(ft, limits=False)
    _add_fields(ft, FinetuneConfig, num_workers=2)
    which = ft.add_mutually_exclusive_group(required=True)
    which.add_argument("--fraction", type=float, help="class-balanced fraction of the labels, e.g. 0.01 or 0.1")
    which.add_argument("--subset-file", help="file of image names to keep (SimCLR's 1percent.txt, 10percent.txt)")
    ft.add_argument("--head-layers", type=int, default=0, help="fine-tune from this many projection-head layers")
    ft.add_argument("--limit-test", type=int, default=0, help="fixed-seed subset of the test set")
    ft.add_argument("--out", default=None, help="save the fine-tuned classifier (.pt), e.g. for distill --teacher")

    di = sub.add_parser("distill", help="SimCLR v2 distillation of a fine-tuned teacher into a student")
    di.add_argument("--teacher", required=True, help="classifier written by `selfsup finetune --out`")
    di.add_argument("--unlabelled", "--unlabeled", required=True, help="images the teacher labels (any folder)")
    di.add_argument("--test", required=True, help="labelled test set (ImageFolder)")
    di.add_argument("--labelled", "--labeled", default=None, help="labelled set whose cross-entropy is mixed in")
    di.add_argument("--student", default=None, help="student backbone (default: the teacher's), random init")
    di.add_argument("--student-weights", default=None, help="initialize the student from this run's encoder")
    di.add_argument("--limit-unlabelled", "--limit-unlabeled", type=int, default=0)
    di.add_argument("--limit-test", type=int, default=0)
    di.add_argument("--out", default=None, help="save the student classifier (.pt)")
    di.add_argument("--device", default="auto")
    aliases = {"labelled_weight": ["--labeled-weight"], "labelled_batch_size": ["--labeled-batch-size"]}
    _add_fields(di, DistillConfig, aliases=aliases, num_workers=2)

    rp = sub.add_parser("report", help="plots and a summary of a run in RUN/report/")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--train", default=None, help="labelled bank for the embedding plots (ImageFolder)")
    rp.add_argument("--test", default=None, help="labelled queries for the embedding plots (ImageFolder)")
    rp.add_argument("--limit-train", type=int, default=2000)
    rp.add_argument("--limit-test", type=int, default=500)
    rp.add_argument("--queries", dest="n_queries", type=int, default=6, help="retrieval rows")
    rp.add_argument("--neighbours", dest="k", type=int, default=8, help="neighbours per retrieval row")
    rp.add_argument("--device", default="auto")

    em = sub.add_parser("embed", help="write the features of a folder of images (.npz or .pt)")
    _add_io(em, train_test=False, limits=False)
    em.add_argument("--data", required=True, help="folder of images (recursive) or ImageFolder tree")
    em.add_argument("--out", required=True, help="FILE.npz (features, names[, labels]) or FILE.pt")
    em.add_argument("--normalize", action="store_true", help="l2-normalize the features")
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--num-workers", type=int, default=2)

    ex = sub.add_parser("export", help="write a run's evaluated encoder (safetensors, timm, torchvision)")
    ex.add_argument("--weights", required=True, help="run directory or checkpoint .pt")
    ex.add_argument("--out", required=True, help="FILE.safetensors, or a FOLDER for --format timm/torchvision")
    ex.add_argument(
        "--format",
        dest="fmt",
        choices=["safetensors", "timm", "torchvision"],
        default="safetensors",
        help="timm/torchvision: a folder (weights, config.json, model card README.md) that loads in one line",
    )
    return p


# ---------------------------------------------------------------------------------------------
# commands


def _emit(line: str, payload: dict) -> None:
    from . import dist

    if dist.is_main():
        print(line)
        print(json.dumps(payload))


def cmd_list(args: dict) -> None:
    from .backbones import BACKBONES
    from .config import list_presets
    from .methods import METHODS

    print("methods:   " + ", ".join(METHODS.names()))
    print("backbones: " + ", ".join(BACKBONES.names()))
    print("presets:\n" + "\n".join(f"  {name}" for name in list_presets()))


def cmd_shards(args: dict) -> None:
    from .data.shards import write_shards

    if args["shard_size"] < 1:
        raise ValueError(f"--shard-size must be at least 1, not {args['shard_size']}")
    res = write_shards(args["src"], args["dst"], args["shard_size"], args["workers"], progress=sys.stderr.isatty())
    _emit(f"packed {res['samples']} images into {res['shards']} shards in {res['path']} "
          f"({res['skipped']} unreadable skipped)", res)  # fmt: skip


def cmd_pretrain(args: dict) -> None:
    from .app.pretrain import pretrain
    from .config import load_config

    data, out = args["data"], args["out"]
    if data is not None and not Path(data).exists() and ":" not in data:
        raise FileNotFoundError(f"--data: directory not found: {data}")
    cfg = load_config(args["preset"], ([f"data.path={data}"] if data is not None else []) + args["overrides"])
    t0 = time.time()
    res = pretrain(cfg, out, resume=args["resume"])
    summary = {"out": str(out), "steps": res.steps, "epochs": res.epochs, "loss": res.loss,
               "images_per_s": round(res.images_per_s, 1), "seconds": round(time.time() - t0, 1),
               "skipped_images": res.skipped_images}  # fmt: skip
    _emit(f"pretrained {cfg.method.name} ({cfg.backbone.name}) for {res.epochs:g} epochs into {out}", summary)


def cmd_demo(args: dict) -> None:
    from .app.pretrain import demo

    print("selfsup demo: SimCLR on scikit-learn's handwritten digits (CPU-sized), then kNN against random init")
    res = demo(args["out"], args["overrides"])
    print(
        f"kNN top-1 (k={res['k']}, {res['n_test']} test images): random init {100 * res['random_init_top1']:.1f}%"
        f"  ->  SimCLR {100 * res['top1']:.1f}%   ({res['epochs']:g} epochs, {res['train_seconds']:.0f}s)"
    )
    print(f"run directory: {Path(res['out']).resolve()}")
    print(json.dumps(res))


def cmd_knn(args: dict) -> None:
    from .app.evaluate import knn_from_weights, knn_sweep_from_weights

    sweep, ks, temperatures = args.pop("sweep"), args.pop("ks"), args.pop("temperatures")
    if not sweep:
        res = knn_from_weights(**args, progress=sys.stderr.isatty())
        return _emit(
            f"kNN (k={res['k']}, T={res['temperature']}) on {res['n_test']} test images against "
            f"{res['n_train']}: top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%",
            {"weights": str(args["weights"]), **res},
        )
    from .eval.knn import SWEEP_K, SWEEP_T

    del args["k"], args["temperature"]
    res = knn_sweep_from_weights(**args, ks=ks or SWEEP_K, temperatures=temperatures or SWEEP_T)
    rows = [f"{r['k']:6d} {r['temperature']:8g} {_pct(r['top1']):>8} {_pct(r['top5']):>8}" for r in res["results"]]
    _emit(
        f"kNN sweep on {res['n_test']} test images against {res['n_train']}:\n     k        T    top-1    top-5\n"
        + "\n".join(rows)
        + f"\nbest: k={res['k']}, T={res['temperature']}: top-1 {100 * res['top1']:.2f}%",
        {"weights": str(args["weights"]), **res},
    )


def _protocol(name: str, cls_name: str, line):
    """A command that builds the protocol's dataclass from the options and calls ``app.evaluate.<name>``."""

    def run(args: dict) -> None:
        from . import eval as protocols
        from .app import evaluate

        cfg = _pop_config(getattr(protocols, cls_name), args) if cls_name else None
        res = getattr(evaluate, name)(**args, **({"cfg": cfg} if cfg else {}))
        source = {k: str(args[k]) for k in ("weights", "teacher") if k in args}
        _emit(line(res), {**source, **res})

    return run


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def cmd_report(args: dict) -> None:
    from .app.report import make_report

    res = make_report(**args)
    _emit(f"report of {args['run']}: " + ", ".join(str(Path(res["report"]) / f) for f in res["files"]), res)


COMMANDS = {
    "list": cmd_list,
    "shards": cmd_shards,
    "pretrain": cmd_pretrain,
    "demo": cmd_demo,
    "knn": cmd_knn,
    "linear": _protocol(
        "linear_from_weights", "LinearConfig",
        lambda r: f"linear probe ({r['variant']}, {r['epochs']} epochs, {r['n_train']} training images) on "
        f"{r['n_test']} test images: top-1 {_pct(r['top1'])}, top-5 {_pct(r['top5'])}",
    ),
    "finetune": _protocol(
        "finetune_from_weights", "FinetuneConfig",
        lambda r: f"fine-tuned on {r['n_labelled']} labelled images ({_pct(r['fraction'])}) for {r['epochs']} "
        f"epochs; {r['n_test']} test images: top-1 {_pct(r['top1'])}, top-5 {_pct(r['top5'])}",
    ),
    "distill": _protocol(
        "distill_from_weights", "DistillConfig",
        lambda r: f"distilled {r['teacher']} -> {r['student']} (T={r['temperature']}, {r['epochs']} epochs, "
        f"{r['n_unlabelled']} unlabelled images): student top-1 {_pct(r['top1'])} (teacher {_pct(r['teacher_top1'])})",
    ),
    "report": cmd_report,
    "embed": _protocol("embed_from_weights", "", lambda r: f"wrote {r['n']} x {r['dim']} features to {r['out']}"),
    "export": _protocol("export_from_weights", "", lambda r: f"exported the {r['backbone']} encoder to {r['out']}"),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    try:
        args = vars(_parser().parse_args(argv))
    except _UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    from .errors import ConfigError, DataError, NonFiniteLossError

    command = args.pop("command")
    warnings.simplefilter("default")
    try:
        COMMANDS[command](args)
        return 0
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        print(f"selfsup {command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as e:
        print(f"selfsup {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"selfsup {command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
