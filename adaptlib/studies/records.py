"""Append-only SQLite records of a study: one file per study, written only by the driver.

Tables (stdlib :mod:`sqlite3`; every table refuses ``UPDATE`` and ``DELETE`` through triggers):

``launches``
    one row per ``adaptlib study run`` (first launch and each resume): ``launch`` (1, 2, ...),
    ``name``, ``started`` (ISO-8601 UTC), ``study_text`` (the study file as written),
    ``definition`` (JSON of the resolved settings), ``environment`` (JSON: library versions
    from :func:`adaptlib.compare.library_versions`, device, executor, workers, scheduler).
``runs``
    one row per finished run, primary key ``key = "method|task|config|trial"``: ``study``,
    ``benchmark``, ``task``, ``method``, ``config``, ``trial``, ``seed``, ``hparams`` (JSON),
    ``uses_target_labels`` (0/1), ``status`` (``"ok"`` or ``"diverged"``), ``error``, ``launch``
    (which launch recorded it), ``attempts`` (submissions it took), ``train_seconds``,
    ``eval_seconds``, ``started``, ``finished``, ``env`` (JSON: host, pid, threads, split sizes).
``checkpoints``
    one row per (run, step): ``key``, ``step``, ``target_accuracy`` (the oracle: a fraction in
    [0, 1] in schema version 2; percent in version 1 files, which are still read and appended
    to in their own unit, and converted to fractions by :meth:`RecordStore.frame`).
``scores``
    one row per (run, step, validator): ``key``, ``step``, ``validator``, ``value`` (higher is
    better; NaN is stored as NULL).

A run's rows are inserted in one transaction when it finishes, so a study killed at any
point holds only whole runs, and a resumed study skips every recorded run. Model selection
is not done here: :meth:`RecordStore.frame` gives the long table the pure functions of
:mod:`adaptlib.studies.analysis` select from.
"""
from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from .spec import RESULT_KEYS, VALIDATORS, Study, StudyError

__all__ = ["RecordStore", "FRAME_COLUMNS", "SCHEMA_VERSION"]

#: Version 2: ``checkpoints.target_accuracy`` is a fraction in [0, 1] (version 1: percent).
SCHEMA_VERSION = 2
#: Versions this adaptlib reads and appends to, and the scale of their stored accuracy.
_ACCURACY_SCALE = {1: 100.0, 2: 1.0}

#: The columns of :meth:`RecordStore.frame`, in order.
FRAME_COLUMNS = ("study", "benchmark", "task", "method", "config", "trial", "seed", "step", "hparams",
                 "uses_target_labels", "target_accuracy", *VALIDATORS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS launches (
    launch INTEGER PRIMARY KEY, name TEXT NOT NULL, started TEXT NOT NULL, study_text TEXT NOT NULL,
    definition TEXT NOT NULL, environment TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, study TEXT NOT NULL, benchmark TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL,
    config INTEGER NOT NULL, trial INTEGER NOT NULL, seed INTEGER NOT NULL, hparams TEXT NOT NULL,
    uses_target_labels INTEGER NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL,
    launch INTEGER NOT NULL REFERENCES launches(launch), attempts INTEGER NOT NULL,
    train_seconds REAL NOT NULL, eval_seconds REAL NOT NULL, started TEXT NOT NULL, finished TEXT NOT NULL,
    env TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT NOT NULL REFERENCES runs(key), step INTEGER NOT NULL, target_accuracy REAL,
    PRIMARY KEY (key, step));
CREATE TABLE IF NOT EXISTS scores (
    key TEXT NOT NULL REFERENCES runs(key), step INTEGER NOT NULL, validator TEXT NOT NULL, value REAL,
    PRIMARY KEY (key, step, validator));
"""
_TABLES = ("meta", "launches", "runs", "checkpoints", "scores")


def _triggers() -> str:
    out = []
    for table in _TABLES:
        for op in ("UPDATE", "DELETE"):
            out.append(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, 'study records are append-only'); END;")
    return "\n".join(out)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _num(value: Any) -> Optional[float]:
    """A float for SQLite, with NaN/inf stored as NULL."""
    value = float(value)
    return value if math.isfinite(value) else None


class RecordStore:
    """The records file of one study (see the module docstring for the tables).

    Args:
        path: the SQLite file. Reading methods need it to exist; :meth:`begin_launch`
            creates it (and its folder).

    Only one process writes (the study's driver); any number may read while it runs.

    Raises:
        FileNotFoundError: a reading method on a path where no records file exists.
        ValueError: the file is not a study records file, or of another schema version.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ connections
    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no study records at {self.path} (run the study first: adaptlib study run)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables and create:
                con.executescript("BEGIN;\n" + _SCHEMA + _triggers() +
                                  f"\nINSERT INTO meta VALUES ('format', 'adaptlib study records');"
                                  f"\nINSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');\nCOMMIT;")
                tables = set(_TABLES)
            if not set(_TABLES) <= tables:
                raise ValueError(f"{self.path} is not an adaptlib study records file (tables {sorted(tables)})")
            version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None or int(version[0]) not in _ACCURACY_SCALE:
                raise ValueError(f"{self.path} has records schema version {version and version[0]}; this adaptlib "
                                 f"reads versions {sorted(_ACCURACY_SCALE)}")
        except BaseException:
            con.close()
            raise
        return con

    def _accuracy_scale(self, con: sqlite3.Connection) -> float:
        """Stored accuracy = fraction x this (100 in version 1 files, 1 from version 2)."""
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return _ACCURACY_SCALE[int(version[0])]

    def schema_version(self) -> int:
        """The records file's schema version (1: accuracy stored in percent; 2: as a fraction)."""
        with closing(self._connect()) as con:
            return int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # ------------------------------------------------------------------ writing (driver only)
    def begin_launch(self, study: Study, environment: Mapping[str, Any]) -> int:
        """Record a launch of ``study`` (its file text, settings and ``environment``); return its number.

        Raises:
            StudyError: the records hold runs of a study whose result-defining settings
                (:data:`~adaptlib.studies.spec.RESULT_KEYS`) differ from ``study``'s; the message
                lists each difference. ``tasks``, ``methods``, ``configs`` and ``seeds`` may grow.
        """
        with closing(self._connect(create=True)) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT definition FROM launches ORDER BY launch LIMIT 1").fetchone()
                now = study.definition()
                if row is not None:
                    first = json.loads(row[0])
                    diffs = [f"{k}: {first.get(k)!r} recorded, {now.get(k)!r} now" for k in RESULT_KEYS
                             if first.get(k) != now.get(k) and (k in first or k != "load_options")]
                    if diffs:
                        raise StudyError(
                            f"{self.path} holds records of study {first.get('name')!r} run with other settings: "
                            + "; ".join(diffs) + ". Restore those settings, or give the study another name or "
                            "database")
                    stale = self._stale_configurations(con, study)
                    if stale:
                        raise StudyError(
                            f"{self.path} holds runs of study {first.get('name')!r} trained with other "
                            "hyper-parameters than the study draws now (a method's default or a benchmark's "
                            "method default changed, docs/methods.md): " + "; ".join(stale) + ". Give the study "
                            "another database (the `database` key) to train them again; keep the name, which "
                            "seeds the drawn configurations")
                number = con.execute("SELECT COALESCE(MAX(launch), 0) + 1 FROM launches").fetchone()[0]
                con.execute("INSERT INTO launches VALUES (?, ?, ?, ?, ?, ?)",
                            (number, study.name, _now(), study.text, json.dumps(now),
                             json.dumps(dict(environment), default=str)))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return int(number)

    @staticmethod
    def _stale_configurations(con: sqlite3.Connection, study: Study) -> List[str]:
        """``"<method> configuration <k>: <recorded> recorded, <now> now"`` for each recorded run whose
        hyper-parameters differ from those ``study`` gives the same run now (one line per configuration)."""
        now = {spec.key: spec for spec in study.runs()}
        out: Dict[Tuple[str, int], str] = {}
        for key, recorded in con.execute("SELECT key, hparams FROM runs"):
            spec = now.get(key)
            if spec is None or (spec.method, spec.config) in out:
                continue
            drawn = json.dumps(spec.hparams, sort_keys=True)
            if json.loads(recorded) != json.loads(drawn):
                out[spec.method, spec.config] = f"{spec.method} configuration {spec.config}: {recorded} recorded, " \
                                                f"{drawn} now"
        return list(out.values())

    def stale_configurations(self, study: Study) -> List[str]:
        """One line per (method, configuration) whose recorded runs used other hyper-parameters than
        ``study`` draws now (e.g. after a benchmark's method default changed); empty when none."""
        if not self.exists():
            return []
        with closing(self._connect()) as con:
            return self._stale_configurations(con, study)

    def add_run(self, result: Any, *, launch: int, attempts: int = 1) -> bool:
        """Insert a finished run (a :class:`~adaptlib.studies.run.RunResult`) in one transaction.

        Returns ``False`` (and writes nothing) when the run is already recorded: a run
        computed twice (a retried task whose first attempt also finished) is kept once.
        """
        from ..methods import METHODS

        spec = result.spec
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                if con.execute("SELECT 1 FROM runs WHERE key = ?", (spec.key,)).fetchone():
                    con.execute("ROLLBACK")
                    return False
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec.key, spec.study, spec.benchmark, spec.task, spec.method, spec.config, spec.trial, spec.seed,
                     json.dumps(spec.hparams, sort_keys=True), int(METHODS[spec.method].uses_target_labels),
                     result.status, result.error, int(launch), int(attempts), float(result.train_seconds),
                     float(result.eval_seconds), result.started, result.finished,
                     json.dumps(result.env, sort_keys=True, default=str)))
                scale = self._accuracy_scale(con)  # a version 1 file keeps its percent
                con.executemany("INSERT INTO checkpoints VALUES (?, ?, ?)",
                                [(spec.key, int(r["step"]), _num(scale * r["target_accuracy"]))
                                 for r in result.rows])
                con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?)",
                                [(spec.key, int(r["step"]), name, _num(value))
                                 for r in result.rows for name, value in r["scores"].items()])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return True

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        """Whether the records file exists."""
        return self.path.is_file()

    def done_keys(self) -> Set[str]:
        """Keys of every recorded run (finished or diverged); an empty set when there is no file yet."""
        if not self.path.is_file():
            return set()
        with closing(self._connect()) as con:
            return {r[0] for r in con.execute("SELECT key FROM runs")}

    def launches(self) -> List[Dict[str, Any]]:
        """Every launch, oldest first: ``launch``, ``name``, ``started``, ``study_text``, ``definition``
        and ``environment`` (both decoded from JSON)."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT launch, name, started, study_text, definition, environment FROM launches "
                               "ORDER BY launch").fetchall()
        return [{"launch": r[0], "name": r[1], "started": r[2], "study_text": r[3],
                 "definition": json.loads(r[4]), "environment": json.loads(r[5])} for r in rows]

    def runs(self):
        """The ``runs`` table as a ``pandas.DataFrame`` (one row per recorded run, timing included)."""
        import pandas as pd

        with closing(self._connect()) as con:
            frame = pd.read_sql_query("SELECT * FROM runs ORDER BY method, task, config, trial", con)
        frame["uses_target_labels"] = frame["uses_target_labels"].astype(bool)
        return frame

    def frame(self, *, include_diverged: bool = False):
        """The records as a ``pandas.DataFrame``, one row per (run, checkpoint).

        Columns, exactly and in this order (:data:`FRAME_COLUMNS`): ``study``, ``benchmark``,
        ``task``, ``method``, ``config`` (int, 0 = defaults), ``trial`` (int), ``seed`` (int),
        ``step`` (int), ``hparams`` (JSON string), ``uses_target_labels`` (bool),
        ``target_accuracy`` (float, the oracle: a fraction in [0, 1], also for records of schema
        version 1, which stored percent), then one float column per validator,
        ``"source-accuracy"``, ``"iwv"``, ``"dev"``, ``"snd"``, ``"entropy"`` (higher is
        better; NaN where not computed). Rows are sorted by method, task, config, trial, step.

        Args:
            include_diverged: also give the checkpoints scored before a run diverged
                (default: only runs with status ``"ok"``).
        """
        import pandas as pd

        where = "" if include_diverged else "WHERE r.status = 'ok'"
        with closing(self._connect()) as con:
            base = pd.read_sql_query(
                "SELECT r.key AS key, r.study, r.benchmark, r.task, r.method, r.config, r.trial, r.seed, c.step, "
                f"r.hparams, r.uses_target_labels, c.target_accuracy FROM runs r JOIN checkpoints c ON c.key = r.key "
                f"{where}", con)
            scores = pd.read_sql_query("SELECT key, step, validator, value FROM scores", con)
            scale = self._accuracy_scale(con)
        if len(scores):
            wide = scores.pivot_table(index=["key", "step"], columns="validator", values="value", aggfunc="first",
                                      dropna=False).reset_index()
            base = base.merge(wide, on=["key", "step"], how="left")
        for name in VALIDATORS:
            base[name] = base[name].astype(float) if name in base else float("nan")
        base = base.sort_values(["method", "task", "config", "trial", "step"], kind="stable")
        out = base[list(FRAME_COLUMNS)].reset_index(drop=True)
        for col in ("config", "trial", "seed", "step"):
            out[col] = out[col].astype("int64")
        out["uses_target_labels"] = out["uses_target_labels"].astype(bool)
        out["target_accuracy"] = out["target_accuracy"].astype(float) / scale
        return out
