"""Evaluation protocols: linear probe, label fractions, fine-tuning, distillation, kNN sweep,
distributed feature extraction, report, embed, export, and their CLI commands."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import selfsup
from selfsup.cli import main
from selfsup.data import ViewDataset, eval_transform
from selfsup.data.sources import ArraySource, DataError, FileSource
from selfsup.eval import (
    Classifier,
    DistillConfig,
    LinearConfig,
    balanced_subset,
    distill_and_evaluate,
    distillation_loss,
    extract_features,
    knn_classify,
    knn_sweep,
    linear_head,
    subset_from_file,
    topk_accuracy,
    train_linear,
    train_linear_augmented,
    train_transform,
)
from selfsup.eval.export import load_embeddings

from _dist import run_distributed
from _util import blob_images, tiny_config

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny ImageFolder pair and a tiny pretrained run


def _write_folder(root, src: ArraySource, idx) -> None:
    for i in idx:
        d = root / f"class{src.labels[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(src.images[i]).save(d / f"img{i:03d}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    src = blob_images(40, size=16, classes=4, seed=0)
    _write_folder(root / "train", src, range(24))
    _write_folder(root / "test", src, range(24, 40))
    return root / "train", root / "test"


@pytest.fixture(scope="module")
def run_dir(folders, tmp_path_factory):
    extra = [f"data.path={folders[0]}", "data.source=imagefolder", "data.limit=16", "knn.k=5"]
    cfg = tiny_config("simclr", extra=extra)
    out = tmp_path_factory.mktemp("run") / "run"
    selfsup.pretrain(cfg, out)
    return out


def _cli(capsys, *argv) -> dict:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out.strip().splitlines()[-1])


def _cli_fails(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return selfsup.build_backbone("resnet10").eval()


def _dataset(n: int, size: int = 16, seed: int = 0) -> ViewDataset:
    return ViewDataset(blob_images(n, size=size, seed=seed), [eval_transform(size, MEAN, STD)])


# ---------------------------------------------------------------------------------------------
# linear probe


def test_linear_probe_separates_linearly_separable_features():
    torch.manual_seed(0)
    centers = torch.randn(5, 32) * 3
    y, yt = torch.arange(200) % 5, torch.arange(50) % 5
    x, xt = centers[y] + torch.randn(200, 32), centers[yt] + torch.randn(50, 32)
    cfg = LinearConfig(epochs=20, batch_size=32)
    head = train_linear(x, y, 5, cfg)
    assert (head(xt).argmax(1) == yt).all() and (head(x).argmax(1) == y).all()
    # the same recipe on shuffled labels cannot fit held-out data
    head = train_linear(x, y[torch.randperm(200)], 5, cfg)
    assert (head(xt).argmax(1) == yt).float().mean() < 0.6


def test_fast_and_standard_probes_agree_and_leave_the_backbone_untouched():
    encoder = _encoder()
    encoder.train()  # the probe must switch it to eval mode and back
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train = _dataset(24)
    cfg = LinearConfig(epochs=3, batch_size=8, bn=True)
    f, y = extract_features(encoder, train, normalize=False)
    fast = train_linear(f, y, 4, cfg)
    standard = train_linear_augmented(encoder, train, 4, cfg, torch.device("cpu"))
    init = linear_head(encoder.num_features, 4, True, cfg.seed)
    assert not torch.allclose(fast[-1].weight, init[-1].weight, atol=1e-4), "the head did not train"
    for a, b in zip(fast.state_dict().values(), standard.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert encoder.training, "the encoder's mode was not restored"
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the probe changed the backbone"


def test_linear_probe_restores_mode_and_weights():
    from selfsup.eval import linear_probe

    encoder = _encoder()
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, test, cfg = _dataset(16), _dataset(8, seed=0), LinearConfig(epochs=1, batch_size=8)
    res = linear_probe(encoder, train, test, 4, cfg, True)
    assert encoder.training
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    # the reported accuracy is that of the returned head, which is the standard variant's head
    head = train_linear_augmented(encoder, train, 4, cfg, torch.device("cpu"))
    f, y = extract_features(encoder, test, normalize=False)
    with torch.no_grad():
        assert topk_accuracy(res["head"](f), y) == {"top1": res["top1"], "top5": res["top5"]}
        assert torch.equal(head(f), res["head"](f))


# ---------------------------------------------------------------------------------------------
# label fractions


def test_balanced_subset_is_exactly_balanced_and_seeded():
    labels = np.repeat(np.arange(4), [100, 60, 40, 200])
    a = balanced_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[a]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(a, balanced_subset(labels, 0.1, seed=0))
    assert not np.array_equal(a, balanced_subset(labels, 0.1, seed=1))
    assert np.bincount(labels[balanced_subset(labels, 0.01, seed=0)]).tolist() == [1, 1, 1, 1]
    assert len(np.unique(a)) == len(a) and np.all(np.diff(a) > 0)
    with pytest.raises(ValueError):
        balanced_subset(labels, 0.0)


def test_subset_file_selects_named_images(folders, tmp_path):
    src = FileSource.scan(folders[0], labelled=True)
    names = [src.name(i) for i in range(len(src))]
    wanted = [names[3].split("/")[-1], names[10], names[20].split("/")[-1]]
    f = tmp_path / "subset.txt"
    f.write_text("# a comment\n" + "\n".join(wanted) + "\n\n")
    pos = subset_from_file(f, src)
    assert [names[p] for p in pos] == [names[3], names[10], names[20]]
    f.write_text("no_such_image.png\n")
    with pytest.raises(DataError, match="no_such_image"):
        subset_from_file(f, src)


# ---------------------------------------------------------------------------------------------
# distillation


def test_distillation_loss_matches_formula():
    torch.manual_seed(0)
    s = torch.randn(6, 5, requires_grad=True)
    t = torch.randn(6, 5)
    for temp in (0.5, 1.0, 2.0):
        p = np.exp(t.numpy() / temp)
        p /= p.sum(1, keepdims=True)
        z = s.detach().numpy() / temp
        logq = z - np.log(np.exp(z).sum(1, keepdims=True))
        ref = -(p * logq).sum(1).mean()
        loss = distillation_loss(s, t, temp)
        assert abs(loss.item() - ref) < 1e-5
        (grad,) = torch.autograd.grad(loss, s)
        q = np.exp(logq)
        np.testing.assert_allclose(grad.numpy(), (q - p) / temp / 6, rtol=1e-4, atol=1e-6)


def _colour_images(n: int, seed: int) -> ArraySource:
    """Uniform-colour 8 px images (4 class colours) with noise: the mean colour gives the class."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]])
    y = np.arange(n) % 4
    img = np.clip(colours[y][:, None, None] + rng.normal(0, 20, (n, 8, 8, 3)), 0, 255).astype(np.uint8)
    return ArraySource(img, y, ["r", "g", "b", "y"], "colours")


class _MeanColourTeacher(nn.Module):
    """A perfect teacher for :func:`_colour_images`: logits from the distance to each class colour."""

    def __init__(self):
        super().__init__()
        c = torch.tensor([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]]) / 255.0
        self.register_buffer("colours", (c - 0.5) / 0.5)

    def forward(self, x):
        return -torch.cdist(x.mean((2, 3)), self.colours) * 5


class _TinyNet(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_student_reaches_perfect_teachers_accuracy():
    tf = [eval_transform(8, MEAN, STD)]
    unlabeled, test = ViewDataset(_colour_images(64, 1), tf), ViewDataset(_colour_images(32, 2), tf)
    teacher = _MeanColourTeacher()
    torch.manual_seed(0)
    student = Classifier(_TinyNet(), 4)
    cfg = DistillConfig(epochs=15, batch_size=16, lr=0.5, temperature=1.0)
    res = distill_and_evaluate(teacher, student, unlabeled, test, cfg, device="cpu")
    assert res["teacher_top1"] == 1.0
    assert res["top1"] == res["teacher_top1"]
    untrained = selfsup.eval.evaluate(student, test)
    assert untrained["top1"] < 1.0, "the toy task must need training"


# ---------------------------------------------------------------------------------------------
# kNN sweep


def test_knn_sweep_equals_separate_knn_calls():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(300, 16), dim=1)
    yb = torch.randint(0, 7, (300,))
    q = F.normalize(torch.randn(50, 16) + bank[:50], dim=1)
    yq = yb[:50].clone()
    yq[::3] = torch.randint(0, 7, yq[::3].shape)
    results = knn_sweep(bank, yb, q, yq, query_chunk=16)
    assert [(r["k"], r["temperature"]) for r in results] == [
        (k, t) for k in (10, 20, 100, 200) for t in (0.07, 0.1, 0.5)
    ]
    for r in results:
        ref = knn_classify(bank, yb, q, yq, k=r["k"], temperature=r["temperature"])
        assert (r["top1"], r["top5"]) == (ref["top1"], ref["top5"]), r
    assert len({r["top1"] for r in results}) > 1, "the grid should matter on this data"


# ---------------------------------------------------------------------------------------------
# distributed feature extraction and linear probe


def _protocols(n: int):
    """Features, an augmented linear probe and a fine-tuning run: the same on 1 or 2 processes."""
    from selfsup.eval import FinetuneConfig, finetune

    encoder = _encoder()
    f, y = extract_features(encoder, _dataset(n), batch_size=4, distributed=True)
    aug = ViewDataset(blob_images(n, size=16), [train_transform(16, MEAN, STD)])
    head = train_linear_augmented(encoder, aug, 4, LinearConfig(epochs=2, batch_size=8), torch.device("cpu"))
    tuned = finetune(encoder, aug, _dataset(6, seed=1), 4, FinetuneConfig(epochs=1, batch_size=8, lr=0.5))
    return f, y, head.state_dict(), tuned["model"].state_dict(), tuned["top1"]


def _protocols_rank(rank, world, n):
    return _protocols(n)


def test_distributed_extraction_and_protocols_match_one_process():
    n = 11  # not a multiple of the world size: the last shard is padded
    f, y, head, tuned, top1 = _protocols(n)
    assert torch.equal(y, torch.arange(n) % 4)
    for fr, yr, hr, tr, top1r in run_distributed(_protocols_rank, 2, n):
        assert fr.shape == f.shape and torch.equal(yr, y)
        torch.testing.assert_close(fr, f, rtol=1e-4, atol=1e-5)
        for k, v in head.items():
            torch.testing.assert_close(hr[k], v, rtol=1e-4, atol=1e-5)
        for k, v in tuned.items():  # DDP with global BatchNorm: the one-process step
            torch.testing.assert_close(tr[k].float(), v.float(), rtol=1e-3, atol=1e-4, msg=k)
        assert top1r == top1


# ---------------------------------------------------------------------------------------------
# export


def test_export_loads_into_plain_torchvision_model(tmp_path):
    from selfsup.eval import export

    assert doctest.testmod(export).failed == 0
    encoder = selfsup.build_backbone("resnet18").eval()
    with torch.no_grad():
        for m in encoder.modules():  # non-default statistics, so a mismatch would show
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "b.safetensors"
    export.export_encoder(encoder, path)
    from safetensors.torch import load_file

    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    model.load_state_dict(load_file(path), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# CLI on a tiny run


def test_cli_linear(capsys, run_dir, folders):
    from selfsup.eval import linear_probe

    train, test = folders
    common = ["--weights", run_dir, "--train", train, "--test", test, "--num-workers", 0, "--device", "cpu"]
    res = _cli(capsys, "linear", *common, "--epochs", 5, "--batch-size", 8)
    assert res["variant"] == "fast" and res["n_train"] == 24 and res["n_test"] == 16
    encoder, cfg = selfsup.load_encoder(run_dir)
    tf = [eval_transform(cfg.data.views[0].size, cfg.data.mean, cfg.data.std)]
    tr = ViewDataset(FileSource.scan(train, True), tf)
    te = ViewDataset(FileSource.scan(test, True), tf)
    ref = linear_probe(encoder, tr, te, 4, LinearConfig(epochs=5, batch_size=8))
    assert (res["top1"], res["top5"]) == (ref["top1"], ref["top5"])
    res = _cli(capsys, "linear", *common, "--epochs", 1, "--batch-size", 8, "--augment", "--bn")
    aug = ViewDataset(tr.source, [train_transform(cfg.data.views[0].size, cfg.data.mean, cfg.data.std)])
    ref = linear_probe(encoder, aug, te, 4, LinearConfig(epochs=1, batch_size=8, bn=True), augment=True)
    assert res["variant"] == "augment" and (res["top1"], res["top5"]) == (ref["top1"], ref["top5"])
    _cli_fails(capsys, "linear", *common, "--epochs", 0)
    _cli_fails(capsys, "linear", "--weights", run_dir / "nope", "--train", train, "--test", test)


def test_cli_finetune_then_distill(capsys, run_dir, folders, tmp_path):
    from selfsup.app.runs import load_classifier, run_dataset

    train, test = folders
    common = ["--weights", run_dir, "--train", train, "--test", test, "--num-workers", 0, "--device", "cpu"]
    clf = tmp_path / "teacher.pt"
    res = _cli(capsys, "finetune", *common, "--fraction", 0.5, "--epochs", 1, "--batch-size", 8, "--out", clf)
    assert res["n_labelled"] == 12 and res["per_class"] == [3, 3, 3, 3]
    model, cfg, classes = load_classifier(clf)
    assert classes == ["class0", "class1", "class2", "class3"]
    ref = selfsup.eval.evaluate(model, run_dataset(str(test), cfg))
    assert ref["top1"] == res["top1"]

    names = tmp_path / "subset.txt"
    names.write_text("img000.png\nclass1/img001.png\nimg002.png\n")
    res = _cli(capsys, "finetune", *common, "--subset-file", names, "--epochs", 1, "--head-layers", 1)
    assert res["n_labelled"] == 3 and res["per_class"] == [1, 1, 1, 0] and res["head_layers"] == 1

    _cli_fails(capsys, "finetune", *common, "--fraction", 1.5)
    _cli_fails(capsys, "finetune", *common)
    names.write_text("missing.png\n")
    _cli_fails(capsys, "finetune", *common, "--subset-file", names)

    dcommon = ["--teacher", clf, "--unlabeled", train, "--test", test, "--num-workers", 0, "--device", "cpu"]
    student = tmp_path / "student.pt"
    res = _cli(
        capsys, "distill", *dcommon, "--epochs", 1, "--batch-size", 8, "--limit-unlabeled", 16, "--student", "resnet10",
        "--labeled", train, "--labeled-weight", 0.5, "--out", student,
    )  # fmt: skip
    assert res["teacher_top1"] == ref["top1"] and res["student"] == "resnet10" and res["n_unlabelled"] == 16
    smodel, _, _ = load_classifier(student)
    assert selfsup.eval.evaluate(smodel, run_dataset(str(test), cfg))["top1"] == res["top1"]
    _cli_fails(capsys, "distill", *dcommon, "--student", "no_such_net")
    _cli_fails(capsys, "distill", *dcommon, "--labeled-weight", 0.5)


def test_cli_knn_sweep(capsys, run_dir, folders):
    train, test = folders
    common = ["--weights", run_dir, "--train", train, "--test", test, "--num-workers", 0, "--device", "cpu"]
    res = _cli(capsys, "knn", *common, "--sweep", "--sweep-k", "5,20", "--sweep-t", "0.1,0.5")
    assert [(r["k"], r["temperature"]) for r in res["results"]] == [(5, 0.1), (5, 0.5), (20, 0.1), (20, 0.5)]
    single = _cli(capsys, "knn", *common, "--k", 20, "--temperature", 0.5)
    assert res["results"][3]["top1"] == single["top1"] and res["results"][3]["top5"] == single["top5"]
    assert res["top1"] == max(r["top1"] for r in res["results"])
    _cli_fails(capsys, "knn", *common, "--sweep", "--sweep-k", "0,x")


def _parse_html(text: str) -> dict:
    """The page's inlined PNGs (decoded), its text, and any external references (scripts, links,
    non-data image sources), read with the standard library's HTML parser."""
    import base64
    from html.parser import HTMLParser

    page: dict = {"images": [], "text": "", "links": []}

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img" and a.get("src", "").startswith("data:image/png;base64,"):
                page["images"].append(base64.b64decode(a["src"].split(",", 1)[1]))
            elif tag in ("img", "script", "link", "iframe") or "href" in a:
                page["links"].append((tag, a))

        def handle_data(self, data):
            page["text"] += data

    Reader().feed(text)
    return page


def _png_stats(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    return img.std(), colours


def test_cli_report(capsys, run_dir, folders):
    train, test = folders
    res = _cli(capsys, "report", run_dir, "--train", train, "--test", test, "--device", "cpu", "--queries", 3)
    assert res["files"] == ["curves.png", "tsne.png", "retrieval.png", "summary.md", "report.html"]
    for name in res["files"][:3]:
        std, colours = _png_stats(run_dir / "report" / name)
        assert std > 20 and colours > 20, (name, std, colours)
    summary = (run_dir / "report" / "summary.md").read_text()
    knn = f"{100 * res['knn']['top1']:.2f}%"
    assert "simclr" in summary and "final loss" in summary and knn in summary
    page = _parse_html((run_dir / "report" / "report.html").read_text())
    # the three plots inlined byte for byte, the figures and the resolved config on the page
    assert page["images"] == [(run_dir / "report" / n).read_bytes() for n in res["files"][:3]]
    assert knn in page["text"] and "final loss" in page["text"] and page["links"] == []
    assert (run_dir / "config.yaml").read_text().strip() in page["text"]
    # the curves alone need only the run directory
    res = _cli(capsys, "report", run_dir)
    assert res["files"] == ["curves.png", "summary.md", "report.html"]
    _cli_fails(capsys, "report", run_dir / "nope")
    _cli_fails(capsys, "report", run_dir, "--train", train)


def test_report_page_renders_in_headless_chromium(run_dir, folders, tmp_path):
    """The page as a browser draws it: Debian's chromium (``apt-get install chromium``) takes a
    screenshot that is not blank, and its console logs nothing (chromium writes each console message,
    console.error and uncaught errors alike, as a CONSOLE line on stderr with --enable-logging)."""
    import shutil
    import subprocess

    from selfsup.app.report import make_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    train, test = folders
    out = tmp_path / "report"
    make_report(run_dir, str(train), str(test), device="cpu", n_queries=3, out=out)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
           f"--screenshot={shot}", (out / "report.html").as_uri()]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    # the page has no scripts: any console message (console.error, an uncaught error, a failed load) is a fault
    assert [line for line in res.stderr.splitlines() if "CONSOLE" in line] == []
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    top, rest = img[:400], img[400:]
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3)[::11], axis=0)) > 50  # text and plots, not blank
    assert rest.std() > 20 and top.std() > 5  # the plots below the summary drew too


def test_cli_embed(capsys, run_dir, folders, tmp_path):
    _, test = folders
    common = ["--weights", run_dir, "--data", test, "--num-workers", 0, "--device", "cpu"]
    res = _cli(capsys, "embed", *common, "--out", tmp_path / "e.npz")
    got = load_embeddings(tmp_path / "e.npz")
    src = FileSource.scan(test, True)
    assert res["n"] == 16 and got["names"] == [src.name(i) for i in range(len(src))]
    encoder, cfg = selfsup.load_encoder(run_dir)
    tf = eval_transform(cfg.data.views[0].size, cfg.data.mean, cfg.data.std)
    ref, ref_y = extract_features(encoder, ViewDataset(src, [tf]), normalize=False)
    torch.testing.assert_close(got["features"], ref)
    assert torch.equal(got["labels"], ref_y)
    _cli(capsys, "embed", *common, "--out", tmp_path / "e.pt", "--normalize")
    got = load_embeddings(tmp_path / "e.pt")
    torch.testing.assert_close(got["features"], F.normalize(ref, dim=1))
    _cli_fails(capsys, "embed", *common, "--out", tmp_path / "e.csv")


def test_cli_export(capsys, run_dir, tmp_path):
    out = tmp_path / "exported.safetensors"
    res = _cli(capsys, "export", "--weights", run_dir / "checkpoints" / "last.pt", "--out", out)
    assert res["backbone"] == "resnet10"
    from safetensors.torch import load_file
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1])  # torchvision's class: ResNet-10
    model.fc = nn.Identity()
    model.load_state_dict(load_file(out))
    encoder, _ = selfsup.load_encoder(run_dir)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder.eval()(x), rtol=0, atol=0)
    _cli_fails(capsys, "export", "--weights", run_dir, "--out", tmp_path / "x.bin")
    _cli_fails(capsys, "export", "--weights", tmp_path / "missing.pt", "--out", out)
