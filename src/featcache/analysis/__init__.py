"""Analysis of a dataset's cached vectors: `doctor` (can the held-out numbers be trusted?)
and `advise` (which of the seed's four transfer-learning cases applies).

Modules: ``folds`` (k-fold fits shared by both), ``neighbours`` (vector and hash search),
``duplicates`` (near-duplicate pairs and groups), ``labels`` (label issues and
cleanlab Datalab's findings), ``pixels`` (source pixels of a row),
``sheets`` (contact sheets), ``doctor``, ``advise``, ``backbones`` (what advise compares),
``cut`` (advise's fine-tune cut).
(Imported eagerly, as in ``featcache.classifier``: ``featcache.analysis.doctor`` is then
always the function.)
"""

from featcache.analysis.advise import (
    SAMPLE_ROWS,
    UNDECIDED,
    AdviseReport,
    CurvePoint,
    LayerScore,
    Rule,
    accuracy_interval,
    advise,
    decide,
    sample_rows,
    write_advise,
)
from featcache.analysis.backbones import (
    BackboneSummary,
    ComparePlan,
    feature_layers,
    plan_comparison,
)
from featcache.analysis.cut import LADDER, cut_commands, recommend_cut
from featcache.analysis.doctor import (
    DoctorConfig,
    DoctorReport,
    doctor,
    near_duplicate_groups,
    write_doctor,
)
from featcache.analysis.duplicates import (
    AGREEMENT,
    NearDuplicateConfig,
    NearPairs,
    agreeing,
    connected_groups,
    near_duplicate_pairs,
)
from featcache.analysis.folds import (
    FoldScores,
    capped_rows,
    cross_validate,
    fold_ids,
    one_blas_thread,
    out_of_fold_proba,
    subset_fraction,
)
from featcache.analysis.labels import (
    LabelFindings,
    burst_aware_folds,
    label_findings,
    source_order,
)
from featcache.analysis.neighbours import (
    Neighbours,
    VectorIndex,
    hash_candidates,
    hash_similarity,
    vector_neighbours,
)
from featcache.analysis.pixels import RowPixels
from featcache.analysis.sheets import contact_sheet

__all__ = [
    "AGREEMENT",
    "LADDER",
    "SAMPLE_ROWS",
    "UNDECIDED",
    "AdviseReport",
    "BackboneSummary",
    "ComparePlan",
    "CurvePoint",
    "DoctorConfig",
    "DoctorReport",
    "FoldScores",
    "LabelFindings",
    "LayerScore",
    "NearDuplicateConfig",
    "NearPairs",
    "Neighbours",
    "RowPixels",
    "Rule",
    "VectorIndex",
    "accuracy_interval",
    "advise",
    "agreeing",
    "burst_aware_folds",
    "capped_rows",
    "connected_groups",
    "contact_sheet",
    "cross_validate",
    "cut_commands",
    "decide",
    "doctor",
    "feature_layers",
    "fold_ids",
    "hash_candidates",
    "hash_similarity",
    "label_findings",
    "near_duplicate_groups",
    "near_duplicate_pairs",
    "one_blas_thread",
    "out_of_fold_proba",
    "plan_comparison",
    "recommend_cut",
    "sample_rows",
    "source_order",
    "subset_fraction",
    "vector_neighbours",
    "write_advise",
    "write_doctor",
]
