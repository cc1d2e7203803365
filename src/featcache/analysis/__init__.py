"""Analysis of a dataset's cached vectors: `doctor` (can the held-out numbers be trusted?)
and `advise` (which of the seed's four transfer-learning cases applies).

Call them as ``featcache.doctor(...)`` and ``featcache.advise(...)`` (the functions live in
the modules of the same names, which this package does not shadow). Modules: ``folds``
(k-fold fits shared by both), ``neighbours`` (vector and hash search), ``duplicates``
(near-duplicate pairs and groups), ``pixels`` (source pixels of a row), ``sheets`` (contact
sheets), ``doctor``, ``advise``.
"""

from featcache.analysis.advise import AdviseReport, Rule, decide, write_advise
from featcache.analysis.doctor import (
    DoctorConfig,
    DoctorReport,
    near_duplicate_groups,
    write_doctor,
)

__all__ = [
    "AdviseReport",
    "DoctorConfig",
    "DoctorReport",
    "Rule",
    "decide",
    "near_duplicate_groups",
    "write_advise",
    "write_doctor",
]
