"""The docs cannot drift from the code: every config key, CLI option, JSON field and metric name the
code has must be in docs/contract.md (config keys also in docs/configuration.md, with their defaults).

When one of these fails after you added something, the message says which name is missing and where
to add it: add it there, in the same commit.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import Daemon, cli, cli_json, free_port, wait_for, write_config
from telemetryd.cli import _parser
from telemetryd.config import Config, MaskRule, iter_keys

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONTRACT = DOCS / "contract.md"
CONFIGURATION = DOCS / "configuration.md"
GLOBAL_OPTIONS = {"--config", "--state-dir"}


def section(doc: Path, title: str) -> str:
    """The text of a `## title` section, up to the next `## `."""
    text = doc.read_text()
    m = re.search(rf"^## {re.escape(title)}\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"{doc.name} has no '## {title}' section"
    return m.group(1)


def toml_block(doc: Path) -> dict[str, Any]:
    m = re.search(r"```toml\n(.*?)```", doc.read_text(), re.S)
    assert m, f"{doc.name} has no ```toml block"
    return tomllib.loads(m.group(1))


# --- config keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [CONTRACT, CONFIGURATION], ids=lambda p: p.name)
def test_config_block_lists_every_key_with_its_default(doc: Path) -> None:
    block = toml_block(doc)
    defaults = msgspec.to_builtins(Config())
    documented = {f"{t}.{k}" for t, keys in block.items() for k in keys}
    code = {k for k, _ in iter_keys()}
    missing = sorted(code - documented)
    assert not missing, (
        f"config keys in the code but not in the ```toml block of docs/{doc.name}: {missing}. "
        "Add each under its [table] with its default value and a comment."
    )
    stale = sorted(documented - code)
    assert not stale, f"docs/{doc.name} documents config keys the code does not have: {stale}"
    wrong = {
        k: (block[k.split(".")[0]][k.split(".")[1]], defaults[k.split(".")[0]][k.split(".")[1]])
        for k in code
        if block[k.split(".")[0]][k.split(".")[1]] != defaults[k.split(".")[0]][k.split(".")[1]]
    }
    assert not wrong, f"docs/{doc.name}: documented default != code default (doc, code): {wrong}"


@pytest.mark.parametrize("doc", [CONTRACT, CONFIGURATION], ids=lambda p: p.name)
def test_mask_rule_fields_are_documented(doc: Path) -> None:
    text = doc.read_text()
    for field in MaskRule.__struct_fields__:
        assert f"{field} = " in text, f"patterns.masks field `{field}` is not shown in docs/{doc.name}"


# --- CLI options ----------------------------------------------------------------------------------


def commands(p: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                path = f"{prefix} {name}".strip()
                if not any(isinstance(x, argparse._SubParsersAction) for x in sp._actions):
                    yield path, sp
                yield from commands(sp, path)


def options(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def cli_bullets() -> dict[str, str]:
    """`- `telemetryd CMD ...` bullets of the CLI section, by command (longest command name first)."""
    text = section(CONTRACT, "CLI")
    out = {}
    for m in re.finditer(r"^- `telemetryd ([a-z-]+(?: [a-z]+)?)(.*?)(?=^- |^\S|\Z)", text, re.M | re.S):
        out[m.group(1)] = m.group(0)
    return out


def test_every_command_has_a_bullet_naming_its_options() -> None:
    bullets = cli_bullets()
    problems = []
    for cmd, p in commands(_parser()):
        bullet = bullets.get(cmd) or next((b for c, b in bullets.items() if c.split()[0] == cmd), None)
        if bullet is None:
            problems.append(f"command `telemetryd {cmd}` has no '- `telemetryd {cmd} ...`' bullet")
            continue
        for opt in sorted(options(p) - GLOBAL_OPTIONS):
            if not re.search(rf"{re.escape(opt)}\b", bullet):
                problems.append(f"option {opt} of `telemetryd {cmd}` is missing from its bullet")
    assert not problems, "docs/contract.md, section CLI:\n  " + "\n  ".join(problems)


def test_global_options_are_documented() -> None:
    text = section(CONTRACT, "CLI")
    top = options(_parser())
    assert top >= GLOBAL_OPTIONS
    for opt in sorted(top):
        assert f"`{opt}" in text, f"global option {opt} is missing from docs/contract.md, section CLI"


# --- JSON outputs ---------------------------------------------------------------------------------


def keys_of(doc: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """(key, where it is) for every object key, except keys that are data (files by reason, fields)."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield k, where
            if k not in ("key", "skipped", "lines_skipped"):
                yield from keys_of(v, f"{where}.{k}")
    elif isinstance(doc, list):
        for v in doc:
            yield from keys_of(v, f"{where}[]")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("drift")
    cfg = write_config(tmp, '[patterns]\nkey_fields = ["k"]\n[metrics]\nlisten = ""\n')
    src = tmp / "a.jsonl"
    src.write_text('{"k": "a", "message": "took 5 ms"}\nnot json\n')
    st = tmp / "state"
    cli("run", "--once", "--config", str(cfg), "--path", str(src), "--state-dir", str(st))
    return cfg, st


@pytest.mark.parametrize(
    ("command", "label"),
    [
        (["status"], "status --json"),
        (["patterns"], "patterns --json"),
        (["checkpoint", "verify"], "checkpoint verify --json"),
        (["checkpoint", "show"], "checkpoint show"),
    ],
)
def test_every_json_field_is_documented(state: tuple[Path, Path], command: list[str], label: str) -> None:
    cfg, st = state
    doc = cli_json(*command, "--config", str(cfg), "--state-dir", str(st))
    text = section(CONTRACT, "JSON outputs")
    missing = sorted(
        {f"{where}.{k}" for k, where in keys_of(doc) if f'"{k}"' not in text and f"`{k}`" not in text}
    )
    assert not missing, (
        f"`telemetryd {' '.join(command)}` prints fields that docs/contract.md (section JSON outputs, "
        f"the `{label}` bullet) does not name: {missing}"
    )


def test_extract_json_fields_are_documented(tmp_path: Path) -> None:
    text = section(CONTRACT, "JSON outputs")
    f = tmp_path / "a.jsonl"
    f.write_text('{"event_type": "a"}\nnope\n')
    out = cli("extract", str(f), str(f), "--json").stdout
    for line in out.splitlines():
        for k in json.loads(line):
            assert f'"{k}"' in text, f"extract --json field {k!r} missing from docs/contract.md, JSON outputs"


# --- metric names ---------------------------------------------------------------------------------


def scrape_families(port: int) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) of every family a live daemon exports."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    families: dict[str, tuple[str, set[str]]] = {}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        families[m.group(1)] = (m.group(2), set())
    for m in re.finditer(r"^([a-zA-Z_:][\w:]*)\{([^}]*)\}", text, re.M):
        name = m.group(1)
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if name not in families and name.endswith(suffix):
                name = name[: -len(suffix)]
        labels = {lv.split("=")[0] for lv in re.findall(r'(\w+)="', m.group(2))} - {"le"}
        if name in families:
            families[name][1].update(labels)
    return families


def test_every_exported_metric_is_in_the_contract(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    port = free_port()
    cfg = write_config(tmp_path, "[metrics]\ntop_files = 5\npattern_series = 3\n")
    src = tmp_path / "a.jsonl"
    src.write_text(
        "".join(f'{{"event_type": "e{i % 4}", "message": "n {i}"}}\n' for i in range(50)) + "bad\n"
    )
    d = daemons("--config", str(cfg), "--path", str(src), "--state-dir", str(tmp_path / "st"),
                "--metrics-listen", f"127.0.0.1:{port}")  # fmt: skip
    d.wait_ready()
    wait_for(lambda: cli_json("status", "--state-dir", str(tmp_path / "st"))["events_total"] == 50,
             what="events counted")  # fmt: skip
    families = scrape_families(port)
    table = section(CONTRACT, "Metrics")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_:]+)[`{].*$", table, re.M)}
    problems = []
    for name, (kind, labels) in sorted(families.items()):
        if name.startswith(("process_", "python_")) or (name.endswith("_created") and kind == "gauge"):
            continue  # the standard collectors and prometheus-client's _created series, named once above
        row = rows.get(name)
        if row is None:
            shown = f"{name}{{{', '.join(sorted(labels))}}}" if labels else name
            problems.append(
                f"{name} ({kind}) is exported but not documented: add the row "
                f"| `{shown}` | {kind} | <meaning> | to the Metrics table of docs/contract.md"
            )
            continue
        name_cell = row.split("|")[1]
        # KEY... in a name stands for the configured key fields (default event_type) as labels.
        keys = set(Config().patterns.key_fields) if "KEY..." in name_cell else set()
        problems += [
            f"{name}: label `{label}` is exported but not in its row of docs/contract.md"
            for label in sorted(labels - keys)
            if not re.search(rf"\b{label}\b", name_cell) and f"`{label}`" not in row
        ]
        if f"| {kind} |" not in row:
            problems.append(f"{name}: exported as a {kind}, documented otherwise in docs/contract.md")
    assert not problems, "\n".join(problems)
    assert "telemetryd_events_total" in families, "the scrape holds no telemetryd metric at all"
