"""The choice-valued arguments of each job, checked on its first line (irjax/choices.py says why).

A job's arguments reach the objects that use them late: the training objective reaches the model
after the corpus is loaded and hard negatives are mined, the evaluation mode reaches its
retriever after training. The allowed values live with those objects; this table only points at
them, so adding an objective to the model adds it here too. (Optimizer and trainer settings
are checked by OptimizerConfig and TrainerConfig themselves when gin builds them.)
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from irjax.choices import check_choices
from irjax.data.docids import SCHEMES
from irjax.models.dual_encoder_training import NEGATIVES
from irjax.models.dual_encoder_training import OBJECTIVES as DUAL_ENCODER_OBJECTIVES
from irjax.index.sparse import SPARSE_INDEXES
from irjax.models.multi_vector import OBJECTIVES as MULTI_VECTOR_OBJECTIVES
from irjax.models.multi_vector import POOLINGS as MULTI_VECTOR_POOLINGS
from irjax.models.splade_training import QUERY_SIDES
from irjax.models.t5 import PRESETS
from irjax.retrieval.multi_vector import MODES as MAXSIM_MODES

JOB_CHOICES: Mapping[str, Mapping[str, Iterable[Any]]] = {
    "train_dual_encoder": {"objective": DUAL_ENCODER_OBJECTIVES, "negatives": NEGATIVES},
    "train_multi_vector": {"objective": MULTI_VECTOR_OBJECTIVES, "eval_mode": MAXSIM_MODES,
                           "pooling": MULTI_VECTOR_POOLINGS},
    "train_dsi": {"docid_scheme": sorted(SCHEMES), "t5_preset": sorted(PRESETS)},
    "continual_dsi": {"docid_scheme": sorted(SCHEMES), "t5_preset": sorted(PRESETS)},
    "train_query_generator": {"t5_preset": sorted(PRESETS)},
    "train_splade": {"query_side": QUERY_SIDES, "index": SPARSE_INDEXES},
}


def check_job_choices(job: str, **values: Any) -> None:
    """Raises InvalidChoiceError naming `job.argument` and its allowed values, before any work."""
    table = JOB_CHOICES[job]
    check_choices(job, **{name: (value, table[name]) for name, value in values.items()})
