"""``selfsup report RUN``: plots and a short summary of a run, in ``RUN/report/``.

- ``curves.png``: loss, learning rate, the collapse signal ``z_std`` and the kNN monitor's top-1
  (whichever ``metrics.jsonl`` holds) against the step;
- ``tsne.png``: a 2-D t-SNE map (scikit-learn) of test embeddings coloured by class;
- ``retrieval.png``: a few test images, each followed by its nearest train images (cosine
  similarity of embeddings), framed green when the class matches and red when not;
- ``summary.md``: the run's method and settings, final metrics, the kNN accuracy of the embeddings;
- ``report.html``: one self-contained page (the plots inlined as PNG data, no scripts, no network)
  with the summary, the plots and the resolved config, to open in a browser or attach to a ticket.

The embedding plots need labelled ``train`` and ``test`` sets (ImageFolder); the curves need only
the run directory. Plots are drawn on matplotlib's Agg canvas, without pyplot or a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..dist import resolve_device
from ..eval.features import extract_features
from ..eval.knn import knn_classify
from ..train.logging import read_metrics
from .runs import load_encoder, run_dataset

CURVES = (("loss", "loss"), ("lr", "learning rate"), ("z_std", "z_std (collapse signal)"), ("knn_top1", "kNN top-1"))


def _figure(w: float, h: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("selfsup report needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> list[str]:
    """One panel per metric present in ``records``; returns the metrics plotted."""
    rows = [r for r in records if "step" in r and "event" not in r]
    present = [(k, title) for k, title in CURVES if any(isinstance(r.get(k), int | float) for r in rows)]
    if not present:
        return []
    fig = _figure(4 * len(present), 3.2)
    for i, (key, title) in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(pts) < 20 else None, color=f"C{i}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return [k for k, _ in present]


def plot_embedding_map(
    features: torch.Tensor, labels: torch.Tensor, classes: list[str], path: str | Path, seed: int = 0
) -> None:
    """t-SNE of ``features`` ``(N, D)`` coloured by ``labels`` (perplexity capped for small N)."""
    from sklearn.manifold import TSNE

    x = features.float().cpu().numpy()
    y = labels.cpu().numpy()
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig = _figure(6.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap=cmap, s=14, vmin=0, vmax=max(len(classes) - 1, 1))
    if len(classes) <= 20:
        handles = [ax.scatter([], [], color=sc.cmap(sc.norm(c)), s=14, label=name) for c, name in enumerate(classes)]
        ax.legend(handles=handles, fontsize=7, loc="best", markerscale=1.5)
    ax.set_title(f"t-SNE of {len(x)} test embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)


def plot_retrievals(bank, bank_ds, queries, query_ds, path: str | Path, n_queries: int = 6, k: int = 8) -> None:
    """A row per query: the test image, then its ``k`` nearest train images by cosine similarity."""
    qi = np.unique(np.linspace(0, len(queries) - 1, min(n_queries, len(queries))).round().astype(int))
    k = min(k, len(bank))
    sim, nn_idx = (queries[qi] @ bank.T).topk(k, dim=1)
    classes = query_ds.source.classes
    fig = _figure(1.3 * (k + 1), 1.45 * len(qi))

    def show(ax, ds, i, title, colour):
        ax.imshow(np.asarray(ds.source.load(int(ds.indices[i]))))
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_color(colour)
            s.set_linewidth(3)
        ax.set_title(title, fontsize=7, color=colour)

    for r, q in enumerate(qi):
        qy = int(query_ds.labels[q])
        name = classes[qy] if qy < len(classes) else str(qy)
        show(fig.add_subplot(len(qi), k + 1, r * (k + 1) + 1), query_ds, q, f"query: {name}", "black")
        for c in range(k):
            j = int(nn_idx[r, c])
            ok = int(bank_ds.labels[j]) == qy
            show(
                fig.add_subplot(len(qi), k + 1, r * (k + 1) + c + 2),
                bank_ds,
                j,
                f"{float(sim[r, c]):.2f}",
                "green" if ok else "red",
            )
    fig.tight_layout()
    fig.savefig(path)


def _last(records: list[dict[str, Any]], key: str):
    vals = [r[key] for r in records if isinstance(r.get(key), int | float)]
    return vals[-1] if vals else None


def make_report(
    run: str | Path,
    train: str | None = None,
    test: str | None = None,
    limit_train: int = 2000,
    limit_test: int = 500,
    n_queries: int = 6,
    k: int = 8,
    batch_size: int = 256,
    device: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Write the report of ``run`` into ``out`` (default ``run/report``); returns what it wrote."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory not found: {run}")
    out = Path(out) if out is not None else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    records = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    curves = plot_curves(records, out / "curves.png") if records else []
    if curves:
        written.append("curves.png")
    knn = None
    if (train is None) != (test is None):
        raise ValueError("pass both --train and --test for the embedding plots (or neither)")
    cfg = None
    if train is not None and test is not None:
        dev = resolve_device(device)
        encoder, cfg = load_encoder(run)
        encoder.to(dev)
        train_ds = run_dataset(train, cfg, limit_train)
        test_ds = run_dataset(test, cfg, limit_test)
        bank, bank_y = extract_features(encoder, train_ds, batch_size, dev)
        q, q_y = extract_features(encoder, test_ds, batch_size, dev)
        classes = list(test_ds.source.classes) or [str(c) for c in range(int(q_y.max()) + 1)]
        kk = min(cfg.knn.k, len(bank))
        t = cfg.knn.temperature
        knn = {"k": kk, "temperature": t, **knn_classify(bank, bank_y, q, q_y, kk, t)}
        if len(q) >= 5:
            plot_embedding_map(q, q_y, classes, out / "tsne.png")
            written.append("tsne.png")
        plot_retrievals(bank, train_ds, q, test_ds, out / "retrieval.png", n_queries, k)
        written.append("retrieval.png")
    summary = _summary(run, records, curves, knn, written, train, test)
    (out / "summary.md").write_text(summary)
    (out / "report.html").write_text(render_html(run, summary, [out / f for f in written if f.endswith(".png")]))
    written += ["summary.md", "report.html"]
    return {"report": str(out), "files": written, **({"knn": knn} if knn else {})}


def _summary(run: Path, records, curves, knn, written, train, test) -> str:
    import yaml

    cfg: dict = {}
    if (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    m, b, t, v = cfg.get("method", {}), cfg.get("backbone", {}), cfg.get("train", {}), cfg.get("data", {})
    views = v.get("views") or [{}]
    lines = [f"# Report: {run.name}", ""]
    if cfg:
        lines += [
            f"- method: **{m.get('name', '?')}**, backbone **{b.get('name', '?')}**"
            + (" (CIFAR stem)" if b.get("cifar_stem") else ""),
            f"- {t.get('epochs', '?')} epochs, global batch {t.get('batch_size', '?')}, "
            f"{views[0].get('size', '?')} px views, data `{v.get('path') or v.get('source', '?')}`",
        ]
    steps = [r for r in records if "step" in r and "event" not in r]
    if steps:
        last = steps[-1]
        lines.append(f"- trained {last['step']} steps (epoch {last.get('epoch', '?')})")
        for key, title in (("loss", "final loss"), ("z_std", "final z_std"), ("knn_top1", "last kNN monitor top-1")):
            val = _last(steps, key)
            if val is not None:
                lines.append(f"- {title}: {val:.4g}")
        z = _last(steps, "z_std")
        if z is not None and z < 0.1:
            lines.append("- **warning**: z_std is near 0: the representation may have collapsed")
    else:
        lines.append("- no training metrics (metrics.jsonl) in this run directory")
    if knn:
        lines.append(
            f"- kNN (k={knn['k']}, T={knn['temperature']}) of `{test}` against `{train}`: "
            f"top-1 {100 * knn['top1']:.2f}%, top-5 {100 * knn['top5']:.2f}%"
        )
    lines += ["", "## Files", ""]
    desc = {
        "curves.png": "training curves: " + ", ".join(curves),
        "tsne.png": "t-SNE map of test embeddings, coloured by class",
        "retrieval.png": "test queries (left) and their nearest train images; green: same class",
    }
    lines += [f"- `{f}`: {desc[f]}" for f in written if f in desc]
    lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's ``**bold**`` and ```code``` of one escaped line, as HTML."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(run: Path, summary: str, images: list[Path]) -> str:
    """The report as one HTML page: ``summary`` (the summary.md text) as headings and lists, each of
    ``images`` inlined as a base64 PNG, and the run's resolved ``config.yaml``."""
    import base64
    import html

    body: list[str] = []
    in_list = False
    for line in summary.splitlines():
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(html.escape(line[2:]))}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        if line.startswith("## ") and line[3:] == "Files":
            break  # the page shows the files themselves
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{_inline(html.escape(line))}</p>")
    if in_list:
        body.append("</ul>")
    titles = {"curves": "Training curves and kNN monitor", "tsne": "Embedding map (t-SNE of test embeddings)"}
    titles["retrieval"] = "Nearest-neighbour retrievals (green: same class)"
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        title = titles.get(img.stem, img.stem)
        body.append(
            f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(img.stem)}" src="data:image/png;base64,{data}">'
        )
    if (run / "config.yaml").is_file():
        body.append("<h2>Resolved config</h2>\n<pre>" + html.escape((run / "config.yaml").read_text()) + "</pre>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"
        "code{background:#f0f0f0;padding:0 .2em}"
    )
    head = f'<meta charset="utf-8"><title>{html.escape(run.name)}: selfsup report</title><style>{style}</style>'
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>{head}</head>\n<body>\n' + "\n".join(body) + "\n</body>\n</html>\n"
    )
