"""Presets are diffs: a preset file sets only what its base chain and the typed defaults do not give.

The full recipe of every preset (restated values included) is pinned by tests/test_recipes.py; here a
preset fails when it writes a value that changes nothing: a leaf equal to what the file's ``base`` chain
plus the dataclass defaults give without it, or a view field equal to the ViewSpec default (views are
replaced whole when merged, so each view's own fields are compared with ViewSpec's).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from selfsup.config import Config, ViewSpec, _defaults_for, _merge, _preset_chain, from_dict, list_presets

Chain = list[tuple[Path, dict[str, Any]]]


def _resolve(chain: Chain) -> dict[str, Any]:
    """The config ``chain`` gives (as load_config builds it): its method's defaults, then each file."""
    method = "simclr"
    for _, data in chain:
        method = data.get("method", {}).get("name", method)
    raw = _defaults_for(method)
    for path, data in chain:
        _merge(raw, copy.deepcopy(data), str(path))
    return from_dict(Config, raw).to_dict()


def _leaves(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths of the values a file sets; ``data.views`` counts as one value."""
    out = []
    for k, v in d.items():
        path = prefix + (k,)
        out += _leaves(v, path) if isinstance(v, dict) else [path]
    return out


def _without(d: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return d


def restated(preset: str) -> list[str]:
    """The keys the file of ``preset`` sets to the value its base chain and the defaults already give."""
    *base, (path, data) = _preset_chain(preset)
    full = _resolve([*base, (path, data)])
    out = []
    for key in _leaves(data):
        if key == ("method", "name") and not base:
            continue  # it selects the method (and with it the method's defaults)
        try:
            same = _resolve([*base, (path, _without(data, key))]) == full
        except Exception:  # without it the file no longer loads (a key of another method, say)
            same = False
        if same:
            out.append(".".join(key))
    return out


def default_view_fields(preset: str) -> list[str]:
    """``data.views.<i>.<field>`` entries (after YAML merge keys) equal to the ViewSpec default."""
    *_, (_, data) = _preset_chain(preset)
    default = ViewSpec()
    out = []
    for i, view in enumerate(data.get("data", {}).get("views", [])):
        spec = from_dict(ViewSpec, view, f"data.views.{i}.")
        out += [f"data.views.{i}.{k}" for k in view if getattr(spec, k) == getattr(default, k)]
    return out


@pytest.mark.parametrize("preset", list_presets())
def test_preset_sets_only_what_its_base_and_the_defaults_do_not(preset):
    path = _preset_chain(preset)[-1][0]
    keys = restated(preset)
    assert not keys, f"{path} restates its base chain or a typed default: {', '.join(keys)}"
    fields = default_view_fields(preset)
    assert not fields, f"{path} sets view fields to the ViewSpec default: {', '.join(fields)}"


def test_the_checks_find_restated_values(tmp_path):
    p = tmp_path / "child.yaml"
    p.write_text(
        "base: simclr-cifar10\n"
        "method: {name: simclr, temperature: 0.5}\n"  # both as in the base
        "optim: {lr: 1.0, warmup_epochs: 10, weight_decay: 1.0e-5}\n"  # lr as in the base, warm-up the default
        "data:\n"
        "  views:\n"
        "    - &v {size: 32, blur_p: 0.5}\n"  # blur_p: the ViewSpec default
        "    - {<<: *v, size: 64}\n"
    )
    assert restated(str(p)) == ["method.name", "method.temperature", "optim.lr", "optim.warmup_epochs"]
    assert default_view_fields(str(p)) == ["data.views.0.blur_p", "data.views.1.blur_p"]
