"""Typos and `--set` in the params tree: refuse unknown keys, name the closest valid one.

Why: pydantic ignores keys it does not know, so `--set tiling.tiel=64` or a params.yaml
with `train: {epoch: 5}` used to run the defaults for minutes and register a version.
Each layer of the tree (the params file, a profile, the --set list) is checked on its
own, so the error names the layer the typo came from; a type error found after merging
is blamed on the highest layer that set that key (`blame`).

The schema is walked from the pydantic models themselves (no second list of names to
keep in step); sections kept as plain dicts by `Settings` (select, tracking, export) map
to the model that validates them later, imported only when that section is present.
"""

from __future__ import annotations

import difflib
import importlib
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel

# Sections `Settings` keeps as dicts -> "module:Model" that validates them downstream.
DICT_SECTIONS = {
    "select": "granvae.select:SelectionPolicy",
    "tracking": "granvae.tracking.store:TrackingSettings",
}
GATES = ("select", "gates")  # a list of {metric, op, value}; --set addresses it by metric


def parse_sets(items: list[str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """`train.epochs=1` -> ({"train": {"epochs": 1}}, {"train.epochs": "train.epochs=1"}).

    Values are parsed as YAML (`5` an int, `[1, 2]` a list, `null` None). The second dict
    maps every dotted key to the --set text that gave it, for error messages."""
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ValueError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {item}: the value is not valid YAML ({err})") from None
        leaf = tree
        for part in parts[:-1]:
            if not isinstance(leaf.get(part), dict):
                leaf[part] = {}
            leaf = leaf[part]
        leaf[parts[-1]] = value
        origin[".".join(parts)] = f"--set {item}"
    return tree, origin


def apply_gate_sets(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`select: {gates: {latency_p95_b1_ms: 500}}` changes that gate's value in `base`'s
    list (a gate by name, not a copy of the whole list); a list replaces it as before."""
    gates = (override.get(GATES[0]) or {}).get(GATES[1]) if isinstance(override, dict) else None
    if not isinstance(gates, dict):
        return override
    current = ((base.get(GATES[0]) or {}).get(GATES[1])) or []
    by_metric = {g.get("metric"): i for i, g in enumerate(current) if isinstance(g, dict)}
    updated = [dict(g) for g in current]
    for metric, value in gates.items():
        if metric not in by_metric:
            known = [m for m in by_metric if m]
            raise ValueError(
                f"select.gates.{metric}: no such gate{_closest(metric, known)}; "
                f"gates: {', '.join(known)}"
            )
        gate = updated[by_metric[metric]]
        if isinstance(value, dict):
            gate.update(value)  # --set select.gates.latency_p95_b1_ms.op='<'
        else:
            gate["value"] = value
    select = {**override[GATES[0]], GATES[1]: updated}
    return {**override, GATES[0]: select}


def _closest(word: str, known: list[str]) -> str:
    match = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (X, X | None, Annotated[X | Y, ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _list_item_models(annotation: Any) -> list[type[BaseModel]]:
    if typing.get_origin(annotation) is list:
        return _models_in(typing.get_args(annotation)[0])
    return []


def _section_model(name: str) -> type[BaseModel] | None:
    target = DICT_SECTIONS.get(name)
    if target is None:
        return None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def unknown_keys(
    tree: dict[str, Any], models: list[type[BaseModel]], prefix: str = "", top: bool = False
) -> list[str]:
    """Every key of `tree` no model in `models` declares, as 'path: unknown key; did you mean'."""
    fields: dict[str, Any] = {}
    for model in models:
        fields.update(model.model_fields)
    problems = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key not in fields:
            problems.append(f"{path}: unknown key{_closest(str(key), list(fields))}")
            continue
        annotation = fields[key].annotation
        inner = _models_in(annotation)
        if top and not inner:
            section = _section_model(key)
            inner = [section] if section else []
        if isinstance(value, dict) and inner:
            problems += unknown_keys(value, inner, f"{path}.")
        items = _list_item_models(annotation)
        if isinstance(value, list) and items:
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    problems += unknown_keys(item, items, f"{path}[{i}].")
    return problems


def key_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Every dotted path in a nested dict, inner nodes included."""
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= key_paths(value, f"{path}.")
    return out


def blame(loc: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """The label of the last layer (lowest precedence first) that set `loc`, or its parent."""
    names = [str(p) for p in loc if not isinstance(p, int)]
    for label, tree in reversed(layers):
        paths = key_paths(tree)
        for depth in range(len(names), 0, -1):
            if ".".join(names[:depth]) in paths:
                return label
    return layers[0][0] if layers else "params"
