"""The ``selfsup`` command: list, pretrain, knn, demo; linear, finetune, distill, report, embed, export."""

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
    _add_common(kn)
    kn.add_argument("--k", type=_pos_int, default=None, help="neighbours (default: the run's knn.k)")
    kn.add_argument("--temperature", type=_pos_float, default=None, help="vote temperature (default: knn.temperature)")
    kn.add_argument("--limit-train", type=int, default=0, help="fixed-seed subset of the bank")
    kn.add_argument("--limit-test", type=int, default=0, help="fixed-seed subset of the queries")
    kn.add_argument("--batch-size", type=_pos_int, default=256)
    kn.add_argument("--sweep", action="store_true", help="sweep k and T from one feature extraction")
    kn.add_argument("--sweep-k", type=_ints, default=None, metavar="K,K,...", help="default: 10,20,100,200")
    kn.add_argument("--sweep-t", type=_floats, default=None, metavar="T,T,...", help="default: 0.07,0.1,0.5")

    de = sub.add_parser("demo", help="offline demo: SimCLR on scikit-learn's digits, kNN vs random init")
    de.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    de.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _add_eval_commands(sub)
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
    _emit(f"pretrained {cfg.method.name} ({cfg.backbone.name}) for {res.epochs:g} epochs into {args.out}", summary)
    return 0


def cmd_knn(args) -> int:
    if args.sweep:
        return _knn_sweep(args)
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
    _emit(
        f"kNN (k={res['k']}, T={res['temperature']}) on {res['n_test']} test images against "
        f"{res['n_train']}: top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%",
        {"weights": str(args.weights), **res},
    )
    return 0


def cmd_demo(args) -> int:
    import shutil

    from .api import build_from_config, knn_eval, labelled_eval_dataset, pretrain
    from .config import load_config

    cfg = load_config("simclr-demo", args.overrides)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    v = cfg.data.views[0]
    train_ds = labelled_eval_dataset("digits:train", v.size, 0, v.mean, v.std)
    test_ds = labelled_eval_dataset("digits:test", v.size, 0, v.mean, v.std)
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


# ---------------------------------------------------------------------------------------------
# evaluation protocols: linear, finetune, distill, report, embed, export (and knn --sweep)


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return vals


def _pos_int(text: str) -> int:
    (v,) = _ints(text)
    return v


def _pos_float(text: str) -> float:
    (v,) = _floats(text)
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _fraction(text: str) -> float:
    v = _pos_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"a fraction of the labels is in (0, 1], got {text!r}")
    return v


def _add_common(p, weights: bool = True, train_test: bool = True) -> None:
    if weights:
        p.add_argument("--weights", required=True, help="run directory, backbone.safetensors or checkpoint .pt")
    if train_test:
        p.add_argument("--train", required=True, help="labelled training set: ImageFolder directory (or digits:train)")
        p.add_argument("--test", required=True, help="labelled test set: ImageFolder directory (or digits:test)")
    p.add_argument("--size", type=_pos_int, default=None, help="input size (default: the run's first view size)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (torchrun: one GPU per process)")


def _add_optim(p, epochs: int, lr: float, wd: float, epochs_help: str = "") -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=epochs_help or f"default {epochs}")
    p.add_argument("--lr", type=_pos_float, default=lr, help=f"base learning rate, x batch/256 (default {lr})")
    p.add_argument("--batch-size", type=_pos_int, default=256, help="global batch (default 256)")
    p.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd", help="lars for large batches")
    p.add_argument("--weight-decay", type=_nonneg_float, default=wd)
    p.add_argument("--warmup-epochs", type=_nonneg_float, default=0.0)
    p.add_argument("--seed", type=int, default=0)


def _add_eval_commands(sub) -> None:
    li = sub.add_parser("linear", help="linear probe on frozen features")
    _add_common(li)
    _add_optim(li, 90, 0.1, 0.0)
    mode = li.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="augment", action="store_const", const=False, help="features once (CPU default)")
    mode.add_argument("--augment", dest="augment", action="store_const", const=True, help="crops (GPU default)")
    li.add_argument("--bn", action="store_true", help="BatchNorm1d(affine=False) before the linear layer")
    li.add_argument("--limit-train", type=int, default=0, help="fixed-seed subset of the training set")
    li.add_argument("--limit-test", type=int, default=0, help="fixed-seed subset of the test set")

    ft = sub.add_parser("finetune", help="fine-tune the whole network on a fraction of the labels")
    _add_common(ft)
    _add_optim(ft, 0, 0.05, 0.0, "default: 60 for <= 1%% of the labels, else 30 (SimCLR)")
    which = ft.add_mutually_exclusive_group(required=True)
    which.add_argument("--fraction", type=_fraction, help="class-balanced fraction of the labels, e.g. 0.01 or 0.1")
    which.add_argument("--subset-file", help="file of image names to keep (SimCLR's 1percent.txt, 10percent.txt)")
    ft.add_argument("--head-layers", type=int, default=0, help="fine-tune from this many projection-head layers")
    ft.add_argument("--limit-test", type=int, default=0)
    ft.add_argument("--out", default=None, help="save the fine-tuned classifier (.pt), e.g. for distill --teacher")

    di = sub.add_parser("distill", help="SimCLR v2 distillation of a fine-tuned teacher into a student")
    di.add_argument("--teacher", required=True, help="classifier written by `selfsup finetune --out`")
    di.add_argument("--unlabeled", required=True, help="images the teacher labels (folder or ImageFolder)")
    di.add_argument("--test", required=True, help="labelled test set (ImageFolder)")
    di.add_argument("--labeled", default=None, help="labelled set whose cross-entropy is mixed in")
    di.add_argument("--labeled-weight", type=_nonneg_float, default=0.0, help="weight of the labelled loss")
    di.add_argument("--student", default=None, help="student backbone (default: the teacher's), random init")
    di.add_argument("--student-weights", default=None, help="initialize the student from this run's encoder")
    di.add_argument("--temperature", type=_pos_float, default=1.0)
    di.add_argument("--limit-unlabeled", type=int, default=0)
    di.add_argument("--limit-test", type=int, default=0)
    di.add_argument("--out", default=None, help="save the student classifier (.pt)")
    _add_optim(di, 100, 0.1, 1e-4)
    di.add_argument("--num-workers", type=int, default=2)
    di.add_argument("--device", default="auto")

    rp = sub.add_parser("report", help="plots and a summary of a run in RUN/report/")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--train", default=None, help="labelled bank for the embedding plots (ImageFolder)")
    rp.add_argument("--test", default=None, help="labelled queries for the embedding plots (ImageFolder)")
    rp.add_argument("--limit-train", type=int, default=2000)
    rp.add_argument("--limit-test", type=int, default=500)
    rp.add_argument("--queries", type=_pos_int, default=6, help="retrieval rows")
    rp.add_argument("--neighbours", type=_pos_int, default=8, help="neighbours per retrieval row")
    rp.add_argument("--device", default="auto")

    em = sub.add_parser("embed", help="write the features of a folder of images (.npz or .pt)")
    _add_common(em, train_test=False)
    em.add_argument("--data", required=True, help="folder of images (recursive) or ImageFolder tree")
    em.add_argument("--out", required=True, help="FILE.npz (features, names[, labels]) or FILE.pt")
    em.add_argument("--normalize", action="store_true", help="l2-normalize the features")
    em.add_argument("--batch-size", type=_pos_int, default=256)

    ex = sub.add_parser("export", help="write the evaluated encoder of a run or checkpoint as safetensors")
    ex.add_argument("--weights", required=True, help="run directory or checkpoint .pt")
    ex.add_argument("--out", required=True, help="FILE.safetensors")


def _emit(line: str, payload: dict) -> None:
    from . import dist

    if dist.is_main():
        print(line)
        print(json.dumps(payload))


def _settings(cls, args, **extra):
    return cls(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        num_workers=args.num_workers,
        **extra,
    )


def _knn_sweep(args) -> int:
    from .eval.knn import SWEEP_K, SWEEP_T
    from .eval.protocols import knn_sweep_from_weights

    res = knn_sweep_from_weights(
        args.weights,
        args.train,
        args.test,
        ks=args.sweep_k or SWEEP_K,
        temperatures=args.sweep_t or SWEEP_T,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        size=args.size,
        device=args.device,
    )
    from . import dist

    if dist.is_main():
        print(f"kNN sweep on {res['n_test']} test images against {res['n_train']}:")
        print("     k        T    top-1    top-5")
        for r in res["results"]:
            print(f"{r['k']:6d} {r['temperature']:8g} {100 * r['top1']:7.2f}% {100 * r['top5']:7.2f}%")
    _emit(
        f"best: k={res['k']}, T={res['temperature']}: top-1 {100 * res['top1']:.2f}%",
        {"weights": str(args.weights), **res},
    )
    return 0


def cmd_linear(args) -> int:
    from .eval.linear import LinearConfig
    from .eval.protocols import linear_from_weights

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    cfg = _settings(LinearConfig, args, bn=args.bn)
    res = linear_from_weights(
        args.weights,
        args.train,
        args.test,
        cfg,
        augment=args.augment,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        size=args.size,
        device=args.device,
    )
    _emit(
        f"linear probe ({res['variant']}, {res['epochs']} epochs, {res['n_train']} training images) on "
        f"{res['n_test']} test images: top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%",
        {"weights": str(args.weights), **res},
    )
    return 0


def cmd_finetune(args) -> int:
    from .eval.finetune import FinetuneConfig
    from .eval.protocols import finetune_from_weights

    if args.epochs < 0 or args.head_layers < 0:
        raise ValueError("--epochs and --head-layers must be >= 0")
    cfg = _settings(FinetuneConfig, args)
    res = finetune_from_weights(
        args.weights,
        args.train,
        args.test,
        fraction=args.fraction,
        subset_file=args.subset_file,
        cfg=cfg,
        head_layers=args.head_layers,
        limit_test=args.limit_test,
        size=args.size,
        out=args.out,
        device=args.device,
    )
    _emit(
        f"fine-tuned on {res['n_labelled']} labelled images ({100 * res['fraction']:.2f}%) for {res['epochs']} "
        f"epochs; {res['n_test']} test images: top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%",
        {"weights": str(args.weights), **res},
    )
    return 0


def cmd_distill(args) -> int:
    from .eval.distill import DistillConfig
    from .eval.protocols import distill_from_weights

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.labeled_weight > 1 or (args.labeled_weight > 0 and not args.labeled):
        raise ValueError("--labeled-weight is in [0, 1] and needs --labeled")
    cfg = _settings(DistillConfig, args, temperature=args.temperature, labeled_weight=args.labeled_weight)
    res = distill_from_weights(
        args.teacher,
        args.unlabeled,
        args.test,
        labeled=args.labeled,
        student=args.student,
        student_weights=args.student_weights,
        cfg=cfg,
        limit_unlabeled=args.limit_unlabeled,
        limit_test=args.limit_test,
        out=args.out,
        device=args.device,
    )
    _emit(
        f"distilled {res['teacher']} -> {res['student']} (T={res['temperature']}, {res['epochs']} epochs, "
        f"{res['n_unlabeled']} unlabeled images): student top-1 {100 * res['top1']:.2f}% "
        f"(teacher {100 * res['teacher_top1']:.2f}%)",
        {"teacher": str(args.teacher), **res},
    )
    return 0


def cmd_report(args) -> int:
    from .dist import resolve_device
    from .eval.report import make_report

    res = make_report(
        args.run,
        args.train,
        args.test,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        n_queries=args.queries,
        k=args.neighbours,
        device=resolve_device(args.device),
    )
    _emit(f"report of {args.run}: " + ", ".join(str(Path(res["report"]) / f) for f in res["files"]), res)
    return 0


def cmd_embed(args) -> int:
    from .eval.protocols import embed_from_weights

    res = embed_from_weights(
        args.weights,
        args.data,
        args.out,
        normalize=args.normalize,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        size=args.size,
        device=args.device,
    )
    _emit(f"wrote {res['n']} x {res['dim']} features to {res['out']}", {"weights": str(args.weights), **res})
    return 0


def cmd_export(args) -> int:
    from .eval.protocols import export_from_weights

    res = export_from_weights(args.weights, args.out)
    _emit(f"exported the {res['backbone']} encoder of {args.weights} to {res['out']}", res)
    return 0


COMMANDS = {
    "list": cmd_list,
    "pretrain": cmd_pretrain,
    "knn": cmd_knn,
    "demo": cmd_demo,
    "linear": cmd_linear,
    "finetune": cmd_finetune,
    "distill": cmd_distill,
    "report": cmd_report,
    "embed": cmd_embed,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    from .errors import ConfigError, DataError, NonFiniteLossError

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
