"""Comparison studies: search spaces, runs, records, model selection and reports.

A study (a TOML file, :mod:`adaptlib.studies.spec`) trains every method on every task
with ``configs`` hyper-parameter configurations (0 = defaults, the others sampled from the
search spaces declared beside each method, :mod:`adaptlib.studies.registry`) and ``seeds``
trials each; every run scores its checkpoints with the validators of
:mod:`adaptlib.validation` and the oracle (:mod:`adaptlib.studies.run`). Finished runs are
appended to the study's SQLite records (:mod:`adaptlib.studies.records`), so a study
resumes where it stopped; runs execute on a local process pool or a Dask cluster
(:mod:`adaptlib.studies.execute`). Model selection and reports are pure functions of the
records (:mod:`adaptlib.studies.analysis`, :mod:`adaptlib.studies.report`).

Command line: ``adaptlib study run|status|report STUDY.toml`` (``docs/studies.md``).
"""
from .execute import StudySummary, run_study, study_status
from .records import FRAME_COLUMNS, RecordStore
from .registry import TRAINER_SEARCH_SPACE, derive_seed, describe_search_space, run_seed, sample_config, search_space
from .run import RunResult, execute_run, source_validation_split
from .spec import VALIDATORS, RunSpec, Study, StudyError, load_study, parse_study

__all__ = [
    "Study", "StudyError", "RunSpec", "RunResult", "StudySummary", "RecordStore", "FRAME_COLUMNS", "VALIDATORS",
    "TRAINER_SEARCH_SPACE", "load_study", "parse_study", "run_study", "study_status", "execute_run",
    "source_validation_split", "search_space", "sample_config", "describe_search_space", "derive_seed", "run_seed",
]
