"""The package's structure as tests: layers and imports (docs/architecture.md), examples
in every public docstring, and a command line that starts without torch."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import codafeat

PACKAGE = Path(codafeat.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """``module -> codafeat modules it imports`` (module-level and in functions)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.startswith("codafeat"):
                    deps.add(mod)
                    deps.update(f"{mod}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("codafeat"))
        known = {_module_name(p) for p in PACKAGE.rglob("*.py")}
        graph[name] = {d for d in deps if d in known and d != name}
    return graph


GRAPH = _imports()

#: Layers, lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    ("base", ["codafeat._version", "codafeat._defaults", "codafeat._fileio"]),
    (
        "building blocks",
        [
            "codafeat.nn",
            "codafeat.losses",
            "codafeat.data",
            "codafeat.metrics",
            "codafeat.analysis",
            "codafeat.plot",
            "codafeat._device",
        ],
    ),
    (
        "formats and shared machinery",
        [
            "codafeat.formats",
            "codafeat._estimator",
            "codafeat._train",
        ],
    ),
    (
        "estimators and tools",
        [
            "codafeat.encoder",
            "codafeat.segment",
            "codafeat.pretrain",
            "codafeat.fewshot",
            "codafeat.classifier",
            "codafeat.regressor",
            "codafeat.phantoms",
            "codafeat.index",
            "codafeat.recipes",
        ],
    ),
    ("applications", ["codafeat.demo", "codafeat._cli", "codafeat.cli", "codafeat.__main__", "codafeat"]),
]


def _layer(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} is in no layer of LAYERS (docs/architecture.md): add it"
    return best[0]


DOC = PACKAGE.parent / "docs" / "architecture.md"


def _diagram_layers() -> tuple[dict[str, int], dict[str, int]]:
    """The layer diagram of docs/architecture.md: ``(path -> layer, folder wildcard -> layer)``, layers from 0.

    A layer starts at a line `` N  name``; it names modules as ``path.py``, folders as
    ``folder/*`` (everything below) and groups as ``folder/ (a.py  b.py)``.
    """
    text = DOC.read_text()
    block = text.split("```")[1]
    paths: dict[str, int] = {}
    folders: dict[str, int] = {}
    layer = -1
    chunks: dict[int, list[str]] = {}
    for line in block.splitlines():
        head = re.match(r"^ (\d)  ", line)
        if head:
            layer = int(head.group(1)) - 1
        if layer >= 0:
            chunks.setdefault(layer, []).append(line)
    for layer, lines in chunks.items():
        chunk = "\n".join(lines)
        for folder, names in re.findall(r"([\w/]+)/ \(([^)]*)\)", chunk):
            paths.update({f"{folder}/{n}": layer for n in re.findall(r"[\w]+\.py", names)})
        chunk = re.sub(r"([\w/]+)/ \(([^)]*)\)", " ", chunk)
        folders.update({f: layer for f in re.findall(r"([\w/]+)/\*", chunk)})
        paths.update({p: layer for p in re.findall(r"(?<![\w/.])([\w/]+\.py)", chunk)})
    return paths, folders


def test_the_docs_diagram_puts_every_module_on_its_layer():
    """docs/architecture.md's diagram is the tree: every module is on it, on the layer LAYERS gives it."""
    paths, folders = _diagram_layers()
    wrong, absent = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py":
            continue
        doc = paths.get(rel)
        if doc is None:
            doc = next(
                (lay for f, lay in sorted(folders.items(), key=lambda kv: -len(kv[0])) if rel.startswith(f + "/")), None
            )
        if doc is None:
            absent.append(rel)
        elif doc != _layer(_module_name(path)):
            wrong.append(f"{rel}: layer {doc + 1} in the docs, {_layer(_module_name(path)) + 1} in LAYERS")
    assert not absent, f"modules missing from the diagram of docs/architecture.md: {absent}"
    assert not wrong, f"the diagram and LAYERS disagree: {wrong}"
    gone = [p for p in paths if not (PACKAGE / p).is_file()] + [f for f in folders if not (PACKAGE / f).is_dir()]
    assert not gone, f"the diagram names what is not in the package: {gone}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down_the_layers(module):
    mine = _layer(module)
    up = sorted(d for d in GRAPH[module] if _layer(d) > mine)
    assert not up, f"{module} (layer {LAYERS[mine][0]!r}) imports higher layers: {up}"


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in GRAPH.get(m, ()):
            if d.startswith(m + "."):
                continue  # a package importing its own submodules (re-exports)
            if state.get(d) == 1 and not m.startswith(d + "."):
                pytest.fail(
                    "import cycle: " + " -> ".join(stack[stack.index(d) :] + [m, d]) if d in stack else f"{m} -> {d}"
                )
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_the_ground_floor_imports_nothing_of_codafeat():
    """The base layer (``_version``, ``_defaults``, ``_fileio``) stands alone: no codafeat import at all."""
    base = [m for m in GRAPH if _layer(m) == 0]
    assert base, "the base layer is empty"
    leaks = {m: sorted(GRAPH[m]) for m in base if GRAPH[m]}
    assert not leaks, f"ground-floor modules import codafeat modules: {leaks}"


def test_no_module_is_a_deprecation_shim():
    """Every module holds code of its own: none only re-exports another path with a DeprecationWarning."""
    shims = [
        str(p.relative_to(PACKAGE))
        for p in sorted(PACKAGE.rglob("*.py"))
        if "DeprecationWarning" in p.read_text() or "deprecated" in (ast.get_docstring(ast.parse(p.read_text())) or "")
    ]
    assert not shims, f"deprecation shims left in the package: {shims}"


def test_building_blocks_know_nothing_of_the_estimators():
    low = [m for m in GRAPH if m.startswith(("codafeat.nn", "codafeat.losses", "codafeat.data"))]
    for m in low:
        bad = sorted(
            d
            for d in GRAPH[m]
            if d.startswith(
                (
                    "codafeat.encoder",
                    "codafeat.pretrain",
                    "codafeat.segment",
                    "codafeat.formats.weights",
                )
            )
        )
        assert not bad, f"{m} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in codafeat.__all__ if not n.startswith("__")))
def test_every_public_name_has_a_running_example(name):
    obj = getattr(codafeat, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        pytest.skip(f"{name} is data; its module's docstring has the example")
    doc = inspect.getdoc(obj) or ""
    assert "Examples\n--------" in doc and ">>>" in doc, f"{name} has no numpydoc Examples section"
    assert "+SKIP" not in doc, f"{name}'s example is skipped: make it run"


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_command_line_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from codafeat.cli import main\n"
        "for argv in ([], ['pretrain', '--help'], ['embed', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv or ['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow  # a child process (pytest -m 'not slow' skips it)
def test_import_codafeat_is_lazy():
    code = "import sys, codafeat; print('torch' in sys.modules); codafeat.CodaEncoder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr


#: Functions allowed over the limit, with the reason (docs/architecture.md).
LONG_FUNCTIONS = {
    "codafeat/pretrain.py::__init__": "scikit-learn's convention: one keyword and one assignment per parameter (58)",
}


def _code_lines(node: ast.AST) -> int:
    """Lines of a function without its docstring."""
    body = node.body
    doc = 0
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        doc = body[0].end_lineno - body[0].lineno + 1
    return node.end_lineno - node.lineno + 1 - doc


def test_no_library_function_over_60_lines_of_code():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 60:
                key = f"{path.relative_to(PACKAGE.parent).as_posix()}::{node.name}"
                if key not in LONG_FUNCTIONS:
                    long.append(f"{key} ({_code_lines(node)} lines)")
    assert not long, "split these functions (or give a reason in LONG_FUNCTIONS): " + ", ".join(long)


def test_modules_over_500_lines_say_why():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 500:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Why one module of more than 500 lines" not in doc:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)} ({len(text.splitlines())} lines)")
    assert not unexplained, "split these modules or say why at their top: " + ", ".join(unexplained)


def test_tests_mirror_the_package():
    """``tests/<package>/test_<module>[_<aspect>].py`` tests ``codafeat/<package>/<module>.py``;
    ``tests/integration/`` holds the tests that cross modules."""
    tests = PACKAGE.parent / "tests"
    orphans = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if rel.parts[0] == "integration":
            continue
        folder = PACKAGE.joinpath(*rel.parts[:-1])
        name = path.stem[len("test_") :]
        modules = {p.stem.lstrip("_") for p in folder.glob("*.py")} if folder.is_dir() else set()
        if not any(name == m or name.startswith(m + "_") for m in modules):
            orphans.append(str(rel))
    assert not orphans, f"test modules without a library module of that name: {orphans}"


#: Library modules without a test file of their own, and where they are tested instead.
UNMIRRORED = {
    "__main__.py": "two lines; every test that runs `python -m codafeat` (tests/_cli/test_embed_ranks.py)",
    "_version.py": "a constant, written into every weights config (tests/formats/test_weights.py reads it back)",
    "_cli/demo.py": "tests/test_demo.py runs the command",
    "_cli/export.py": "tests/formats/test_timm.py (export, then read back with timm)",
    "_cli/info.py": "tests/formats/test_timm.py and tests/formats/test_weights.py (cards of files and folders)",
    "_cli/index.py": "tests/_cli/test_search.py (an index built by the command, then searched)",
    "_cli/list_weights.py": "tests/formats/test_wheel.py (installed weights listed)",
    "_cli/package_weights.py": "tests/formats/test_wheel.py (the wheel built, installed, loaded)",
    "_cli/pretrain.py": "tests/test_pretrain.py and tests/integration/test_output_paths.py",
    "_cli/probe.py": "tests/_cli/test_embed_probe.py (embed and probe share their options)",
    "_estimator/params.py": "constraints: tests/integration/test_sklearn_checks.py (check_param_validation)",
    "_estimator/base.py": "the shared base of tests/test_classifier.py and tests/test_regressor.py",
    "_estimator/embedding.py": "the encoder's normalize and cache: tests/test_encoder.py, tests/test_encoder_cache.py",
    "fewshot/split.py": "tests/fewshot/test_probes.py (FewShotSplit with cross_val_score, GridSearchCV)",
    "fewshot/report.py": "tests/fewshot/test_probes.py (few_shot_report, format_table)",
    "formats/errors.py": "one exception class, raised and matched throughout tests/formats/",
    "formats/model_card.py": "tests/test_pretrain.py and tests/formats/test_wheel.py (cards of trained weights)",
    "data/files.py": "through the one import of the pixel contract, codafeat.data.io: tests/data/test_io.py",
    "data/decode.py": "through codafeat.data.io: tests/data/test_io.py and tests/data/test_intensity.py (DICOM)",
    "data/cache/decode_pool.py": "the in-memory build of tests/data/cache/test_decoded.py (serial = parallel, skips)",
    "data/cache/shard_build.py": "the shard builds, rebuilds and kills of tests/data/cache/test_decoded.py",
    "data/cache/background_fill.py": "a process of the decoded cache: tests/data/cache/test_decoded.py",
    "data/cache/leases.py": "the neighbour and stale-lease tests of tests/data/cache/test_decoded.py",
    "data/seg_pairs.py": "image/mask pairs of tests/test_segment.py",
    "data/cache/tag_index.py": "tests/data/test_organs.py and tests/_cli/test_organs_command.py (headers read once)",
    "nn/preprocess.py": "tests/test_encoder.py and tests/nn/test_backbone.py (greyscale in, backbone out)",
}


def test_every_library_module_has_its_test_file_or_a_reason():
    """The other direction of the mirror: a module without ``tests/<package>/test_<module>*.py``
    must say where it is tested (``UNMIRRORED``); a listed module that gains a test file leaves the list."""
    tests = PACKAGE.parent / "tests"
    missing, stale = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(PACKAGE)
        folder = tests.joinpath(*rel.parts[:-1])
        stem = "test_" + path.stem.lstrip("_")
        has_test = folder.is_dir() and any(
            t.stem == stem or t.stem.startswith(stem + "_") for t in folder.glob("test_*.py")
        )
        key = rel.as_posix()
        if not has_test and key not in UNMIRRORED:
            missing.append(key)
        if has_test and key in UNMIRRORED:
            stale.append(key)
    assert not missing, f"library modules without a test file (add tests/.../test_<module>.py, or a reason): {missing}"
    assert not stale, f"these have a test file now: remove them from UNMIRRORED: {stale}"
    assert set(UNMIRRORED) <= {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}, (
        "a listed module is gone"
    )


def _marked_slow(node: ast.FunctionDef, module_marked: bool) -> bool:
    return module_marked or any("mark.slow" in ast.unparse(d) for d in node.decorator_list)


def test_tests_that_start_child_processes_are_marked_slow():
    """``pytest -m "not slow"`` is the quick local loop: every child process is behind the marker."""
    tests = PACKAGE.parent / "tests"
    unmarked = []
    for path in sorted(tests.rglob("test_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        module_marked = any(
            isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
            and "slow" in ast.unparse(n.value)
            for n in tree.body
        )
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            spawns = bool(names & {"subprocess", "_child"}) or "installed" in [a.arg for a in node.args.args]
            if spawns and not _marked_slow(node, module_marked):
                unmarked.append(f"{path.relative_to(tests)}::{node.name}")
    assert not unmarked, f"tests that start a child process without @pytest.mark.slow: {unmarked}"


@pytest.mark.slow  # child processes (ruff)
def test_code_is_formatted_and_linted():
    """``ruff format`` and ``ruff check`` (configured in pyproject.toml) leave nothing to change."""
    pytest.importorskip("ruff", reason="ruff is in the dev extra")
    cmd = [sys.executable, "-m", "ruff"]
    paths = ["codafeat", "tests", "benchmarks", "examples"]
    root = PACKAGE.parent
    fmt = subprocess.run([*cmd, "format", "--check", *paths], cwd=root, capture_output=True, text=True)
    assert fmt.returncode == 0, "run `ruff format`:\n" + fmt.stdout[-3000:] + fmt.stderr[-1000:]
    lint = subprocess.run([*cmd, "check", *paths], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, "run `ruff check --fix`, then fix the rest:\n" + lint.stdout[-3000:]
