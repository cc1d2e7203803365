"""Analysis of a dataset's cached vectors: `doctor` (can the held-out numbers be trusted?)
and `advise` (which of the seed's four transfer-learning cases applies).

Modules: ``folds`` (k-fold fits shared by both), ``neighbours`` (vector and hash search),
``duplicates`` (near-duplicate pairs and groups), ``pixels`` (source pixels of a row),
``sheets`` (contact sheets), ``doctor``, ``advise``.
"""

from featcache.analysis.doctor import DoctorConfig, DoctorReport, doctor, write_doctor

__all__ = ["DoctorConfig", "DoctorReport", "doctor", "write_doctor"]
