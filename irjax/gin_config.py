"""Gin at the edge: registers library functions, parses and validates configs, runs the job.

Library code never imports gin; this module is the one place that makes it configurable
(principle 1 of DESIGN.md). Configs name the registered functions without module prefixes,
e.g. `evaluate_retriever.split = 'test'`, and bind `irjax.run.job` to what should run.

It also knows how gin reports errors, so that `user_error_message` can give the entry point one
clean message for a config or user error instead of a traceback through gin's wrappers.
"""
from __future__ import annotations

import os
import re
import tokenize
from pathlib import Path
from typing import Any, Callable, Sequence

import gin

from irjax import type_check
from irjax.errors import ConfigError, UserError
from irjax.files import atomic_write_text
from irjax.paths import AnyPath, as_path, is_uri
from irjax.workdir import workdir_transaction

ROOT = Path(__file__).resolve().parents[1]
_MACRO_REF = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]*)")
_REGISTERED = False


class GinConfigError(ConfigError):
    """A config problem found before any work starts (unbound macro, missing file, no job, or
    anything gin itself rejects: a syntax error, an unknown configurable or parameter)."""


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
    """Turns t5x-style `--gin.KEY=VALUE` into `--gin_bindings=KEY=VALUE` for absl."""
    out = []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            out.append("--gin_bindings=" + arg[len("--gin.") :])
        else:
            out.append(arg)
    return out


@gin.configurable("irjax.run")
def run(job: Callable[[], Any] = gin.REQUIRED) -> Any:
    """The job a config selects, e.g. `irjax.run.job = @evaluate_retriever`."""
    return job()


def register_all() -> None:
    """Makes the library's entry points configurable. Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    from irjax.evaluation import evaluate
    from irjax.index import base as index_base
    from irjax.models import cross_encoder, dual_encoder, efficiency, weights_dir
    from irjax.retrieval import (anncur, bm25, dense, embedding_gemma_retriever,
                                 encoder_pair_scorer, first_reranker, icr_reranker, promptreps,
                                 query_expansion, rerank, sparse)
    from irjax.data import fewshot_prompts
    from irjax.decoding import lm_query_generation
    from irjax.jobs import (continual_dsi, cross_encoder_teacher, dsi_warm_start, encode_corpus,
                            generate_queries, pair_data, train_ar2, train_bebr, train_cross_encoder,
                            train_dsi, train_dual_encoder, train_jpq, train_multi_vector,
                            train_query_generator, train_splade, trained_dual_encoder)
    from irjax.training import optimizer, trainer_config

    gin.external_configurable(evaluate.evaluate_retriever, "evaluate_retriever")
    gin.external_configurable(evaluate.compare_retrievers, "compare_retrievers")
    gin.external_configurable(bm25.BM25Retriever, "BM25Retriever")
    gin.external_configurable(bm25.SparseRetriever, "SparseRetriever")
    gin.external_configurable(dense.DenseRetriever, "DenseRetriever")
    gin.external_configurable(rerank.RerankingRetriever, "RerankingRetriever")
    gin.external_configurable(rerank.IdentityReranker, "IdentityReranker")
    gin.external_configurable(rerank.PairwiseReranker, "PairwiseReranker")
    gin.external_configurable(rerank.InterpolatedReranker, "InterpolatedReranker")
    gin.external_configurable(first_reranker.first_reranker, "first_reranker")
    gin.external_configurable(icr_reranker.icr_reranker, "icr_reranker")
    gin.external_configurable(query_expansion.hyde_retriever, "hyde_retriever")
    gin.external_configurable(query_expansion.genqr_retriever, "genqr_retriever")
    gin.external_configurable(anncur.AnnCURRetriever, "AnnCURRetriever")
    gin.external_configurable(encoder_pair_scorer.EncoderPairScorer, "EncoderPairScorer")
    gin.external_configurable(embedding_gemma_retriever.embedding_gemma_retriever,
                              "embedding_gemma_retriever")
    gin.external_configurable(sparse.pretrained_splade_retriever, "splade_retriever")
    gin.external_configurable(promptreps.promptreps_retriever, "promptreps_retriever")
    gin.external_configurable(dual_encoder.TextEncoder.from_pretrained, "pretrained_encoder")
    gin.external_configurable(index_base.create_index, "create_index")
    gin.external_configurable(train_dual_encoder.train_dual_encoder, "train_dual_encoder")
    gin.external_configurable(train_splade.train_splade, "train_splade")
    gin.external_configurable(train_cross_encoder.train_cross_encoder, "train_cross_encoder")
    # A trained cross-encoder directory (WORKDIR/cross_encoder of train_cross_encoder) as a
    # PairScorer: `PairwiseReranker.scorer = @cross_encoder_scorer()`.
    gin.external_configurable(cross_encoder.CrossEncoderScorer.load, "cross_encoder_scorer")
    gin.external_configurable(cross_encoder_teacher.cross_encoder_teacher, "cross_encoder_teacher")
    gin.external_configurable(encode_corpus.encode_corpus, "encode_corpus")
    gin.external_configurable(trainer_config.TrainerConfig, "TrainerConfig")
    gin.external_configurable(optimizer.OptimizerConfig, "OptimizerConfig")
    gin.external_configurable(efficiency.EncoderEfficiency, "EncoderEfficiency")
    gin.external_configurable(pair_data.DataConfig, "DataConfig")
    gin.external_configurable(train_multi_vector.train_multi_vector, "train_multi_vector")
    gin.external_configurable(train_dsi.train_dsi, "train_dsi")
    gin.external_configurable(train_dsi.DSIData, "DSIData")
    gin.external_configurable(dsi_warm_start.WarmStart, "WarmStart")
    gin.external_configurable(continual_dsi.continual_dsi, "continual_dsi")
    gin.external_configurable(train_query_generator.train_query_generator, "train_query_generator")
    gin.external_configurable(train_query_generator.QuerySampling, "QuerySampling")
    gin.external_configurable(generate_queries.generate_queries, "generate_queries")
    gin.external_configurable(generate_queries.PlanConfig, "PlanConfig")
    gin.external_configurable(fewshot_prompts.PromptConfig, "PromptConfig")
    gin.external_configurable(lm_query_generation.SamplingConfig, "SamplingConfig")
    # A fetched model's folder or GGUF for configs: `x = @gemma/gguf_path()` with
    # `gemma/gguf_path.name = 'gemma3-270m'` (tools/fetch_weights.py fills the cache).
    gin.external_configurable(weights_dir.weights_dir, "weights_dir")
    gin.external_configurable(weights_dir.gguf_path, "gguf_path")
    gin.external_configurable(train_jpq.train_jpq, "train_jpq")
    gin.external_configurable(train_bebr.train_bebr, "train_bebr")
    gin.external_configurable(train_ar2.train_ar2, "train_ar2")
    # A train_dual_encoder / train_ar2 run as a first stage:
    # `RerankingRetriever.first_stage = @trained_dense_retriever()`.
    gin.external_configurable(trained_dual_encoder.trained_dense_retriever,
                              "trained_dense_retriever")
    _REGISTERED = True


def _config_text(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str]) -> str:
    texts = []
    for name in files:
        path = _find_gin_file(name, search_paths)
        texts.append(path.read_text())
    texts.extend(bindings)
    return "\n".join(texts)


def _find_gin_file(name: str, search_paths: Sequence[str]) -> Path:
    candidates = [Path(name)] + [Path(p) / name for p in (*search_paths, str(ROOT))]
    for path in candidates:
        if path.is_file():
            return path
    raise GinConfigError(
        f"gin file {name!r} not found (looked in: {', '.join(str(c) for c in candidates)}). "
        "Pass a path relative to the current directory or to the irjax checkout, e.g. gin/eval/bm25.gin."
    )


def parse(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()) -> None:
    """Parses configs and checks every referenced macro is bound, so typos fail now, not mid-run."""
    register_all()
    if not files and not bindings:
        raise GinConfigError("no config given: pass --gin_file=gin/eval/bm25.gin (or another file under gin/).")
    for path in (*search_paths, str(ROOT)):
        gin.add_config_file_search_path(path)
    text = _config_text(files, bindings, search_paths)
    paths = [str(_find_gin_file(f, search_paths)) for f in files]
    try:
        gin.parse_config_files_and_bindings(paths, bindings, finalize_config=False)
    except UserError:
        raise
    except (ValueError, SyntaxError, ImportError, tokenize.TokenError) as e:
        # Everything gin raises while parsing is about the config text: unknown names, bad values,
        # syntax, `import` lines. Its location ("In file ..., line N") is already in the message.
        raise GinConfigError(_parse_error_message(e)) from e
    validate_macros(text)
    gin.finalize()
    check_binding_types()
    try:
        gin.query_parameter("irjax.run.job")
    except ValueError as e:
        raise GinConfigError("the config binds no job: add `irjax.run.job = @evaluate_retriever` (or another job).") from e


def validate_macros(config_text: str) -> None:
    """Raises GinConfigError naming every `%MACRO` the config uses but never binds."""
    code = "\n".join(line.split("#", 1)[0] for line in config_text.splitlines())
    missing = []
    for name in sorted(set(_MACRO_REF.findall(code))):
        try:
            gin.query_parameter(f"{name}/macro.value")
        except ValueError:
            missing.append(name)
    if missing:
        hints = " ".join(f"--gin.{m}=..." for m in missing)
        raise GinConfigError(f"unbound gin macro(s): {', '.join(missing)}. Bind them, e.g. {hints}")


def _as_checkable(value: Any) -> Any:
    """A bound value with gin references replaced by what type_check can compare: a macro by
    its value, `@Class()` by InstanceOf(Class), `@function()` by InstanceOf(its return class)
    when annotated, `@name` (no call) by the callable itself."""
    if isinstance(value, gin.config.ConfigurableReference):
        wrapped = value.configurable.wrapped
        if _is_macro(value):
            bound = gin.config._CONFIG.get(value.config_key, {})  # gin has no public lookup
            return _as_checkable(bound["value"]) if "value" in bound else type_check.UNKNOWN
        if not value.evaluate:
            return wrapped
        if isinstance(wrapped, type):
            return type_check.InstanceOf(wrapped)
        returns = type_check.return_hint(wrapped)
        return type_check.InstanceOf(returns) if isinstance(returns, type) else type_check.UNKNOWN
    if isinstance(value, (list, tuple)):
        return type(value)(_as_checkable(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_checkable(v) for k, v in value.items()}
    return value


def check_binding_types() -> None:
    """Raises GinConfigError naming every bound parameter whose value cannot fit its type hint.

    Runs after parsing, before any work; what cannot be checked is let through (type_check.py).
    """
    problems = []
    for (scope, selector), params in gin.config._CONFIG.items():  # gin has no public iterator
        configurable = gin.config._REGISTRY.get_match(selector)
        if configurable is None or configurable.wrapped is gin.config.macro:
            continue
        hints = type_check.parameter_hints(configurable.wrapped)
        for name, value in params.items():
            if name not in hints:
                continue
            checkable = _as_checkable(value)
            if type_check.fits(checkable, hints[name]) is False:
                where = f"{scope}/{configurable.name}" if scope else configurable.name
                shown = f"{value!r} (= {checkable!r})" if _is_macro(value) else repr(value)
                problems.append(f"{where}.{name} = {shown}: expected "
                                f"{type_check.describe(hints[name])}, got "
                                f"{_kind(checkable)}")
    if problems:
        raise GinConfigError("wrongly typed gin binding(s): " + "; ".join(problems))


def _is_macro(value: Any) -> bool:
    return (isinstance(value, gin.config.ConfigurableReference)
            and value.configurable.wrapped is gin.config.macro)


def _kind(value: Any) -> str:
    if isinstance(value, type_check.InstanceOf):
        return f"an instance of {value.cls.__name__}"
    return type(value).__name__


def _workdir() -> AnyPath | None:
    """WORKDIR: a local folder (`~` expanded) or a URI such as gs://bucket/run (irjax/paths.py)."""
    try:
        value = gin.query_parameter("WORKDIR/macro.value")
    except ValueError:
        return None
    return as_path(str(value)) if is_uri(str(value)) else Path(os.path.expanduser(str(value)))


def run_job() -> Any:
    """Runs the job as its workdir's only run (irjax/workdir.py: lock, status.json, no stale
    results): writes WORKDIR/config.gin, runs the job, then writes the operative config."""
    workdir = _workdir()
    if workdir is None:
        return run()
    with workdir_transaction(workdir):
        atomic_write_text(workdir / "config.gin", gin.config_str())
        result = run()
        atomic_write_text(workdir / "operative_config.gin", gin.operative_config_str())
    return result


# ---------------------------------------------------------------- errors a person reads

_GIN_DIR = Path(gin.__file__).resolve().parent
# gin 0.5.0 (config.py, gin_wrapper) appends these lines to any exception raised inside a call to a
# configurable, one per nested call, innermost first; utils.augment_exception_message_and_reraise
# re-raises the error as a dynamic subclass of its own type, so isinstance checks still hold.
_CALL_CONTEXT = re.compile(r"\n  In call to configurable '(?P<name>[^']+)' \(.*?\)(?: in scope '[^']*')?$")
# ...and, for a TypeError from the call itself, three lines on which arguments were bound.
_ARGUMENT_REPORT = re.compile(r"\n  No values supplied by Gin or caller for arguments: .*"
                              r"\n  Gin had values bound for: .*\n  Caller supplied values for: .*$")
# gin's config_parser, when a bare word is not a Python literal.
_UNPARSED_TOKEN = re.compile(r"Failed to parse token '(.*)'")


def _parse_error_message(error: BaseException) -> str:
    """gin's parse error as one short message: what is wrong, then where (file or binding, line)."""
    if isinstance(error, SyntaxError):  # gin's own SyntaxErrors carry the location as attributes
        what, hint = str(error.msg).rstrip("."), ""
        if token := _UNPARSED_TOKEN.search(what):
            what = f"cannot parse {token[1]!r} as a value"
        if what.startswith(("cannot parse", "Unable to parse value")):  # usually an unquoted string
            hint = ("\n  Values are Python literals, so strings need quotes: --gin.WORKDIR=\"'workdir/run'\" "
                    "on the command line, WORKDIR = 'workdir/run' in a gin file.")
        where = f'file "{error.filename}"' if error.filename else "the bindings"
        line = f"\n    {error.text.rstrip()}" if error.text else ""
        return f"gin syntax error: {what}\n  In {where}, line {error.lineno}{line}{hint}"
    if isinstance(error, tokenize.TokenError):  # e.g. an unclosed bracket or quote
        return f"gin syntax error: {error.args[0]} (an unclosed bracket or string?)"
    return str(error).strip()


def _raised_by_gin(error: BaseException) -> bool:
    """True when the innermost frame of the traceback is gin's own code, not the code gin called.

    That is how gin reports a config that cannot be called: a missing required binding
    (RuntimeError) or a configurable called without all its arguments (TypeError, raised at
    gin's call site before the function starts). An error raised inside irjax has its innermost
    frame in irjax and stays a bug.
    """
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_GIN_DIR)


def user_error_message(error: BaseException) -> str | None:
    """What to print for an error the user can fix (a UserError, or a config gin cannot call);
    None for anything else, which is a bug and keeps its traceback.

    gin's call context is cut from the message and only the innermost configurable is named:
    the nested `In call to configurable ... (<function ... at 0x...>)` lines say nothing the
    user can act on.
    """
    if not isinstance(error, UserError) and not _raised_by_gin(error):
        return None
    message = str(error)
    names = []
    while match := _CALL_CONTEXT.search(message):
        names.insert(0, match["name"])
        message = message[: match.start()]
    message = _ARGUMENT_REPORT.sub("", message).rstrip()
    if names:
        message += f"\n  (in configurable '{names[0]}')"
    return message
