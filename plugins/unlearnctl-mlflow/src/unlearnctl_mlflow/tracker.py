"""One unlearnctl run tracked in MLflow, through ``mlflow.tracking.MlflowClient`` (never the fluent API:
an MLflow run the user has open in the same process is left alone).

A :class:`unlearnctl.tracking.Tracker`: unlearnctl's driver (:class:`unlearnctl.tracking.TrackerHooks`, in
:mod:`unlearnctl_mlflow.plugin`) imports this module on the first tracked run only (it imports MLflow), and
decides when each method is called; what is logged comes from :mod:`unlearnctl.tracking`.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import socket
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import unlearnctl
from unlearnctl import tracking as rec
from unlearnctl.tracking import Tracker, TrackingFailed

TRACKER = "mlflow"
#: the experiment of unlearnctl's runs unless MLFLOW_EXPERIMENT_NAME (or MLFLOW_EXPERIMENT_ID) says otherwise
DEFAULT_EXPERIMENT = "unlearnctl"
#: step metrics are sent in batches, at most this many seconds apart (and when the run ends)
FLUSH_SECONDS = 2.0
#: how long to wait for a tracking server to accept a connection before giving up on it
CONNECT_TIMEOUT_S = 10.0
#: MLflow's limits: values of a parameter (older servers: 500), entries of one log_batch
MAX_PARAM_LENGTH = 500
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


def tracking_uri() -> str:
    """Where MLflow logs: ``MLFLOW_TRACKING_URI``, else MLflow's own default (a local store)."""
    return str(mlflow.get_tracking_uri())


def failures(uri: str, what: str, on_failure: Any = None) -> AbstractContextManager[None]:
    """Turn any error of MLflow into one :class:`TrackingFailed` naming the tracking URI."""
    return rec.failures(lambda exc: f"MLflow at '{rec.safe_uri(uri)}' failed to {what} ({hint(exc, uri)})", on_failure)


def hint(exc: BaseException, uri: str) -> str:
    """The error, with what to do for the two stores MLflow 3's client alone cannot use."""
    scheme = urlparse(uri).scheme
    if scheme in ("sqlite", "postgresql", "mysql", "mssql") and importlib.util.find_spec("sqlalchemy") is None:
        return (
            "a database store needs SQLAlchemy, which mlflow-skinny leaves out: `pip install mlflow`, or set "
            "MLFLOW_TRACKING_URI to a tracking server (http://...)"
        )
    if "Unsupported" in type(exc).__name__ and "URI" in type(exc).__name__:
        return f"MLflow has no store for '{scheme}:' URIs: check MLFLOW_TRACKING_URI"
    if "MLFLOW_ALLOW_FILE_STORE" in str(exc):
        return "MLflow 3 uses a file store only with MLFLOW_ALLOW_FILE_STORE=true; or use a server or a database"
    return rec.short(exc)


def check_reachable(uri: str) -> None:
    """Fail fast when an ``http(s)`` tracking server does not accept connections (MLflow itself retries
    for minutes before giving up). Skipped when a proxy is configured for the host."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    host = parsed.hostname
    if urllib.request.getproxies().get(parsed.scheme) and not urllib.request.proxy_bypass(host):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        timeout = min(CONNECT_TIMEOUT_S, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or CONNECT_TIMEOUT_S))
    except ValueError:
        timeout = CONNECT_TIMEOUT_S
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise TrackingFailed(
            f"cannot reach the MLflow tracking server at '{rec.safe_uri(uri)}' ({rec.short(exc)}): start it or "
            "fix MLFLOW_TRACKING_URI"
        ) from exc


def experiment_id(client: MlflowClient) -> str:
    """``MLFLOW_EXPERIMENT_ID``, else the experiment named ``MLFLOW_EXPERIMENT_NAME`` (default
    ``unlearnctl``), created when missing."""
    given = os.environ.get("MLFLOW_EXPERIMENT_ID", "").strip()
    if given:
        return given
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:  # another process created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingFailed(
            f"MLflow experiment '{name}' is deleted: restore it (`mlflow experiments restore`) or set another "
            "MLFLOW_EXPERIMENT_NAME"
        )
    return str(experiment.experiment_id)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _missing(exc: MlflowException) -> bool:
    """The run asked for is not in this store (or not a run id this store knows the shape of)."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class MlflowTracker(Tracker):
    """The MLflow run of one unlearnctl run: created by ``forget``/``replay``/``train``/``train-judge``,
    re-opened by ``eval``/``audit`` of the run folder (its id is in the manifest's ``extra["mlflow"]``)."""

    def __init__(
        self, client: MlflowClient, uri: str, run_id: str, experiment: str, *, created: bool, step: int = 0
    ) -> None:
        self.client = client
        self.uri = uri
        self.run_id = run_id
        self.experiment_id = experiment
        #: this process created the MLflow run (so it also ends it)
        self.created = created
        #: the parameters the run has (MLflow parameters cannot change once logged)
        self.params: dict[str, str] = {}
        self.pending: list[Metric] = []
        self.last_flush = time.monotonic()
        self.last_step = step
        #: a call failed: the tracker says so once and stays quiet for the rest of the run
        self.broken = False

    # --- start ---------------------------------------------------------------------------------------

    @classmethod
    def start(cls, run: Any) -> MlflowTracker:
        uri = tracking_uri()
        with failures(uri, "start a run"):
            check_reachable(uri)
            client = MlflowClient(tracking_uri=uri)
            if run.kind in rec.STUDY_KINDS:
                return cls._open_study(client, uri, run)
            tracker = cls._create(client, uri, run, Path(run.out_dir).name if run.out_dir else run.description)
            tracker.log_params(rec.flatten(rec.run_config(run)))
            run.extra[TRACKER] = tracker.record()
            return tracker

    @classmethod
    def _create(
        cls, client: MlflowClient, uri: str, run: Any, name: str, extra_tags: Mapping[str, str] | None = None
    ) -> MlflowTracker:
        tags = {
            "unlearnctl.kind": run.kind,
            "unlearnctl.description": run.description or "",
            "unlearnctl.version": str(unlearnctl.__version__),
            "mlflow.source.name": "unlearnctl",
            "mlflow.source.type": "LOCAL",
            "mlflow.user": _user(),
            **(extra_tags or {}),
        }
        if run.out_dir is not None:
            tags["unlearnctl.run_dir"] = str(Path(run.out_dir).resolve())
        created = client.create_run(experiment_id(client), run_name=name or None, tags=tags)
        return cls(client, uri, created.info.run_id, created.info.experiment_id, created=True)

    @classmethod
    def _open_study(cls, client: MlflowClient, uri: str, run: Any) -> MlflowTracker:
        """``eval``/``audit``: the MLflow run the studied run folder records, else a new one."""
        found = rec.studied_manifest(run)
        folder, manifest = found if found is not None else (None, None)
        record = rec.recorded_run(manifest, TRACKER)
        if record:
            try:
                existing = client.get_run(str(record["run_id"]))
            except MlflowException as exc:
                if not _missing(exc):
                    raise
            else:
                if existing.info.lifecycle_stage != "deleted":
                    info = existing.info
                    step = rec.last_step(manifest, record)
                    tracker = cls(client, uri, info.run_id, info.experiment_id, created=False, step=step)
                    tracker.params = dict(existing.data.params)
                    return tracker
        target = (run.config or {}).get("target") or run.description
        tags = {"unlearnctl.studied_run": str(folder.resolve())} if folder is not None else {}
        if record:  # recorded, but not in this tracking store (another MLFLOW_TRACKING_URI?)
            tags["unlearnctl.recorded_run"] = f"{record.get('run_id')} at {record.get('tracking_uri', '?')}"
        name = f"{run.kind} {Path(str(target)).name}"
        tracker = cls._create(client, uri, run, name, tags)
        if manifest is not None:
            tracker.last_step = rec.last_step(manifest)
            tracker.log_params(rec.flatten(rec.manifest_config(manifest)))
        return tracker

    def record(self) -> dict[str, Any]:
        """What the manifest's ``extra["mlflow"]`` keeps: enough for ``eval`` to find the run again."""
        return {
            "run_id": self.run_id,
            "experiment_id": str(self.experiment_id),
            "tracking_uri": rec.safe_uri(self.uri),
            "step": self.last_step,
        }

    # --- during the run ------------------------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        with failures(self.uri, what, on_failure=self._broke):
            yield

    def _broke(self) -> None:
        self.broken = True
        self.pending.clear()

    def log_step(self, run: Any, step: int, values: Mapping[str, Any]) -> None:
        if self.broken:
            return
        with self.guard("log a step"):
            self._follow_resumed_run(run)
            now = int(time.time() * 1000)
            for key, value in rec.finite(rec.step_values(values)).items():
                self.pending.append(Metric(rec.sanitize_key(key), value, now, int(step)))
            self.last_step = int(step)
            if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                self.flush()

    def _follow_resumed_run(self, run: Any) -> None:
        """``forget --resume``: the checkpoint restored ``run.extra`` with the MLflow run of the interrupted
        process; continue that run (and drop the one just created, which holds only parameters)."""
        record = run.extra.get(TRACKER)
        recorded = record.get("run_id") if isinstance(record, dict) else None
        if not recorded or recorded == self.run_id:
            return
        try:
            earlier = self.client.get_run(str(recorded))
        except MlflowException as exc:
            if not _missing(exc):
                raise
            earlier = None
        if earlier is None or earlier.info.lifecycle_stage == "deleted":
            run.extra[TRACKER] = self.record()  # keep this run
            return
        self.client.delete_run(self.run_id)
        self.client.update_run(earlier.info.run_id, status="RUNNING")
        self.client.set_tag(earlier.info.run_id, "unlearnctl.resumed", "true")
        self.run_id, self.experiment_id = earlier.info.run_id, earlier.info.experiment_id
        self.params = dict(earlier.data.params)
        run.extra[TRACKER] = self.record()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:METRICS_PER_BATCH], self.pending[METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)
        self.last_flush = time.monotonic()

    def log_params(self, flat: Mapping[str, Any]) -> None:
        """Log the parameters the run does not have yet; a value that differs from the one logged before
        (MLflow keeps the first) is named in the tag ``unlearnctl.params_not_updated``."""
        values = {rec.sanitize_key(k): rec.text(v)[:MAX_PARAM_LENGTH] for k, v in flat.items()}
        new = [Param(k, v) for k, v in values.items() if k not in self.params]
        changed = sorted(k for k, v in values.items() if k in self.params and self.params[k] != v)
        for i in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + PARAMS_PER_BATCH])
        self.params.update({p.key: p.value for p in new})
        if changed:
            self.client.log_batch(
                self.run_id, tags=[RunTag("unlearnctl.params_not_updated", ", ".join(changed)[:5000])]
            )

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending.extend(Metric(rec.sanitize_key(k), v, now, int(step)) for k, v in rec.finite(values).items())
        self.flush()

    def log_files(self, run: Any, result: Any) -> None:
        for path, rel in rec.output_files(run, result):
            parent = Path(rel).parent.as_posix()
            self.client.log_artifact(self.run_id, str(path), artifact_path=None if parent == "." else parent)

    # --- the end ----------------------------------------------------------------------------------------

    def finish(self, run: Any, result: Any) -> None:
        if self.broken:
            return
        with self.guard("finish the run"):
            if run.kind in rec.STUDY_KINDS:
                payload = getattr(result, "payload", None) or {}
                self.log_params({f"{run.kind}.{k}": v for k, v in rec.flatten(rec.payload_config(payload)).items()})
                self.log_metrics(rec.payload_metrics(payload, run.kind), self.last_step)
            else:
                manifest = rec.run_manifest(run)
                if manifest is not None:
                    self.log_params(rec.flatten(rec.manifest_config(manifest)))
                    self.log_metrics(rec.manifest_metrics(manifest), self.last_step)
            self.flush()
            self.log_files(run, result)
            if self.created:
                self.client.set_terminated(self.run_id, "FINISHED")

    def abort(self, status: str = "FAILED") -> None:
        """The unlearnctl run ended without ``run_finished`` (an error, an interrupt): end the MLflow run
        it created as ``status`` (``forget --resume`` sets it running again); never raises (it runs at
        interpreter exit)."""
        if self.broken:
            return
        try:
            self.flush()
            if self.created:
                self.client.set_terminated(self.run_id, status)
        except Exception:
            pass
