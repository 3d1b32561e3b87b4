"""Every config under gin/ still matches the code it configures; nothing is run.

A config that names a renamed parameter fails only when someone runs it, often minutes into a job,
and most configs here are not run by any other test. So each gin/**/*.gin file is:

1. parsed and finalized by `irjax.gin_config.parse` (WORKDIR bound to a dummy), which registers
   every configurable first, so gin itself rejects unknown configurables and references, unknown
   parameters of functions without **kwargs, and unbound macros;
2. read statement by statement with gin's own parser (includes followed), and every
   `configurable.param` binding checked against `inspect.signature` of what it names -- also for
   **kwargs functions such as create_index, where gin would let a misspelt name through;
3. checked for what a run needs: `irjax.run.job` is a reference `@job` (not `@job()`, which would
   call the job while resolving the binding) to a registered irjax function, and every configurable
   the config calls (the job and each `@name()`) gets all of its parameters without a default.

The negative cases write a temporary config with one mistake each and expect the same check to fail.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import gin
import pytest
from gin import config_parser

from irjax import gin_config

ROOT = Path(__file__).resolve().parents[1]
GIN_FILES = sorted((ROOT / "gin").rglob("*.gin"))
DUMMY_MACROS = ["WORKDIR = '/nonexistent/irjax-gin-check'"]  # every config requires it; unused

pytestmark = pytest.mark.usefixtures("clean_gin")


class Reference(NamedTuple):
    name: str  # possibly scoped, e.g. 'phase1/TrainerConfig'
    evaluate: bool  # `@name()` rather than `@name`


class Macro(NamedTuple):
    name: str


class Binding(NamedTuple):
    scope: str
    selector: str
    param: str
    value: Any
    where: str  # file:line, for the failure message


class _Recorder(config_parser.ParserDelegate):
    """Keeps references and macros as plain records instead of resolving them."""

    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> Reference:
        return Reference(scoped_configurable_name, evaluate)

    def macro(self, macro_name: str) -> Macro:
        return Macro(macro_name)


def _resolve_include(name: str) -> Path:
    for candidate in (Path(name), ROOT / name):  # as gin: as given, then the search path (ROOT)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"include {name!r} not found")


def bindings_of(path: Path) -> list[Binding]:
    """The parameter bindings of `path` and the files it includes, in the order gin applies them
    (macro definitions such as `DATA_DIR = ...` left out)."""
    out = []
    for statement in config_parser.ConfigParser(path.read_text(), _Recorder()):
        if isinstance(statement, config_parser.IncludeStatement):
            out.extend(bindings_of(_resolve_include(statement.filename)))
        elif isinstance(statement, config_parser.BindingStatement) and statement.arg_name:
            where = f"{path.name}:{statement.location.line_num}"
            out.append(Binding(statement.scope, statement.selector, statement.arg_name,
                               statement.value, where))
    return out


def references_in(value: Any) -> Iterator[Reference]:
    if isinstance(value, Reference):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from references_in(item)
    elif isinstance(value, (list, tuple)) and not isinstance(value, Macro):
        for item in value:
            yield from references_in(item)


def target(selector: str) -> Any:
    """The function or class registered under `selector` (scope stripped), as written in irjax."""
    configurable = gin.get_configurable(selector.rsplit("/", 1)[-1])
    if inspect.isclass(configurable):
        # gin.external_configurable registers a class as a dynamic subclass whose own signature
        # is (*args, **kwargs); the class it wraps is its only base.
        (configurable,) = configurable.__bases__
    return configurable


def named_parameters(fn: Any) -> dict[str, inspect.Parameter]:
    """Parameters that can be bound by name; *args and **kwargs would accept any typo."""
    return {name: p for name, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_config(path: Path) -> None:
    """Raises (gin's ValueError, or AssertionError naming file:line) if `path` does not fit the code."""
    gin_config.parse([str(path)], DUMMY_MACROS)
    bindings = bindings_of(path)

    for b in bindings:
        fn = target(b.selector)
        assert b.param in named_parameters(fn), (
            f"{b.where}: {b.selector}.{b.param} is not a parameter of "
            f"{fn.__module__}.{fn.__qualname__}{inspect.signature(fn)}")

    jobs = [b for b in bindings if (b.selector, b.param) == ("irjax.run", "job")]
    assert jobs, f"{path.name} binds no irjax.run.job"
    job = jobs[-1].value
    assert isinstance(job, Reference) and not job.evaluate, (
        f"{jobs[-1].where}: irjax.run.job must be a reference such as @train_dsi, not {job!r}")
    assert target(job.name).__module__.startswith("irjax."), job

    called = [job] + [r for b in bindings for r in references_in(b.value) if r.evaluate]
    for ref in called:
        bound = gin.get_bindings(ref.name, resolve_references=False)  # inherits unscoped ones
        required = [name for name, p in named_parameters(target(ref.name)).items()
                    if p.default is p.empty]
        missing = [name for name in required if name not in bound]
        assert not missing, f"{path.name}: {ref.name} is called without {missing}"


def test_gin_directory_has_configs():
    assert len(GIN_FILES) >= 16 and {p.parent.name for p in GIN_FILES} >= {"eval", "train", "scaling"}


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: str(p.relative_to(ROOT / "gin")))
def test_config_parses_and_binds_real_parameters(path: Path):
    check_config(path)


BM25 = "include 'gin/eval/bm25.gin'\n"
BROKEN = {
    # gin's own checks, reached because everything is registered before parsing:
    "misspelt_function_parameter": (BM25 + "evaluate_retriever.top_kk = 5", ValueError, "top_kk"),
    "misspelt_class_parameter": (BM25 + "BM25Retriever.k_1 = 1.2", ValueError, "k_1"),
    "unknown_job": ("irjax.run.job = @evaluate_retreiver", ValueError, "evaluate_retreiver"),
    # the signature checks here:
    "misspelt_kwargs_parameter": (BM25 + "create_index.knid = 'exact'", AssertionError, "knid"),
    "job_called_while_binding": (BM25 + "irjax.run.job = @evaluate_retriever()", AssertionError,
                                 "must be a reference"),
    "required_parameter_unbound": (
        "irjax.run.job = @evaluate_retriever\nevaluate_retriever.dataset = 'scifact'\n"
        "evaluate_retriever.workdir = %WORKDIR\nevaluate_retriever.retriever = @SparseRetriever()",
        AssertionError, r"evaluate_retriever is called without \['split'\]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_config_with_a_mistake_fails_the_check(case: str, tmp_path: Path):
    text, error, match = BROKEN[case]
    path = tmp_path / f"{case}.gin"
    path.write_text(text + "\n")
    with pytest.raises(error, match=match):
        check_config(path)
