"""One unlearnctl run tracked in Weights & Biases.

A :class:`unlearnctl.tracking.Tracker`: unlearnctl's driver (:class:`unlearnctl.tracking.TrackerHooks`, in
:mod:`unlearnctl_wandb.plugin`) imports this module on the first tracked run only (it imports wandb), and
decides when each method is called; what is logged comes from :mod:`unlearnctl.tracking`. Every
``wandb.init`` here is ``reinit="create_new"``: a W&B run the user has open in the same process is left
alone, and the run object is used directly (never ``wandb.log``). The W&B settings are read from the
environment at each run (``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``, ``WANDB_ENTITY``) and passed to
``wandb.init``, so a change between two runs of one process is honoured too.
"""

from __future__ import annotations

import netrc
import os
import secrets
import shutil
import string
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import wandb

from unlearnctl import tracking as rec
from unlearnctl.tracking import Tracker, TrackingFailed

TRACKER = "wandb"
#: the W&B project of unlearnctl's runs unless WANDB_PROJECT says otherwise
DEFAULT_PROJECT = "unlearnctl"
#: modes in which nothing leaves the machine
LOCAL_MODES = ("offline", "dryrun", "disabled")


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def new_run_id() -> str:
    """A W&B run id (8 lower-case letters and digits, as W&B makes them)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def check_credentials(mode: str | None) -> None:
    """An online run needs credentials: without them, fail here, at ``run_started``, with one clear line
    (in a terminal W&B would otherwise stop the unlearning run to ask for an API key)."""
    if mode in LOCAL_MODES or wandb.run is not None or _has_key():
        return
    try:  # W&B's own look-up (settings files, identity tokens); asks nothing, checks nothing on the network
        logged_in = wandb.login(prompt=False, verify=False)
    except TypeError:  # a wandb without `prompt`: it would ask
        logged_in = False
    if not logged_in:
        raise TrackingFailed(
            "no W&B API key: run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline to keep the run "
            "on this machine"
        )


def _has_key() -> bool:
    """An API key in WANDB_API_KEY or in the ``.netrc`` entry of the W&B host."""
    if _env("WANDB_API_KEY"):
        return True
    host = urlparse(_env("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        return netrc.netrc(_env("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def failures(what: str, on_failure: Any = None) -> AbstractContextManager[None]:
    """Turn any error of wandb into one :class:`TrackingFailed`."""
    return rec.failures(lambda exc: f"W&B failed to {what} ({hint(exc)})", on_failure)


def hint(exc: BaseException) -> str:
    """The error, with what to do when W&B has no credentials."""
    if "api key" in str(exc).lower() or "api_key" in str(exc).lower():
        return "no W&B API key: run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline"
    return rec.short(exc)


class WandbTracker(Tracker):
    """The W&B run of one unlearnctl run: created by ``forget``/``replay``/``train``/``train-judge``,
    resumed by ``eval``/``audit`` of the run folder (its id is in the manifest's ``extra["wandb"]``).

    A run that makes something starts its W&B run at its first logged step (or at its end when it logs
    none): by then a ``forget --resume`` has restored, from its checkpoint, the id of the run it continues.
    """

    def __init__(
        self, run_id: str, project: str, entity: str | None, *, name: str, config: dict[str, Any], step: int = 0
    ) -> None:
        self.run_id = run_id
        self.project = project
        self.entity = entity
        self.mode = _env("WANDB_MODE")
        self.name = name
        self.config = config
        self.last_step = step
        self.wb: Any = None
        #: a call failed: the tracker says so once and stays quiet for the rest of the run
        self.broken = False

    # --- start -----------------------------------------------------------------------------------------

    @classmethod
    def start(cls, run: Any) -> WandbTracker:
        with failures("start a run"):
            check_credentials(_env("WANDB_MODE"))
            project = _env("WANDB_PROJECT") or DEFAULT_PROJECT
            entity = _env("WANDB_ENTITY")
            if run.kind in rec.STUDY_KINDS:
                tracker = cls._study(run, project, entity)
                tracker.init(run)
                return tracker
            name = Path(run.out_dir).name if run.out_dir is not None else run.description
            tracker = cls(new_run_id(), project, entity, name=name, config=rec.run_config(run))
            run.extra[TRACKER] = tracker.record()
            return tracker

    @classmethod
    def _study(cls, run: Any, project: str, entity: str | None) -> WandbTracker:
        """``eval``/``audit``: resume the W&B run the studied run folder records (in its project), else
        start one."""
        found = rec.studied_manifest(run)
        manifest = found[1] if found is not None else None
        record = rec.recorded_run(manifest, TRACKER)
        if record:
            return cls(
                str(record["run_id"]),
                str(record.get("project") or project),
                record.get("entity") or entity,
                name="",
                config={},
                step=rec.last_step(manifest, record),
            )
        target = (run.config or {}).get("target") or run.description
        config = rec.manifest_config(manifest) if manifest is not None else {}
        if found is not None:
            config["studied_run"] = str(found[0].resolve())
        return cls(new_run_id(), project, entity, name=f"{run.kind} {Path(str(target)).name}", config=config)

    def record(self) -> dict[str, Any]:
        """What the manifest's ``extra["wandb"]`` keeps: enough for ``eval`` to resume the run."""
        out: dict[str, Any] = {"run_id": self.run_id, "project": self.project, "step": self.last_step}
        if self.entity:
            out["entity"] = self.entity
        if self.mode:
            out["mode"] = self.mode
        return out

    def init(self, run: Any) -> None:
        """``wandb.init`` the run (``resume="allow"``: the same id continues it)."""
        directory = _env("WANDB_DIR")
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
        settings = {} if _env("WANDB_CONSOLE") else {"console": "off"}  # leave unlearnctl's terminal alone
        self.wb = wandb.init(
            id=self.run_id,
            project=self.project,
            entity=self.entity,
            dir=directory,
            mode=self.mode,  # type: ignore[arg-type]
            # a study resuming a recorded run (no name of its own) leaves its name, job type and tags alone
            name=self.name or None,
            job_type=run.kind if self.name else None,
            tags=[run.kind] if self.name else None,
            config=self.config or None,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(**settings),
        )

    # --- during the run ------------------------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str, run: Any) -> Iterator[None]:
        def broke() -> None:
            self.broken = True
            if self.wb is None and isinstance(run.extra, dict):
                run.extra.pop(TRACKER, None)  # no W&B run was made: do not record one
            self._close(exit_code=1)

        with failures(what, on_failure=broke):
            yield

    def log_step(self, run: Any, step: int, values: Mapping[str, Any]) -> None:
        if self.broken:
            return
        with self.guard("log a step", run):
            if self.wb is None:
                self._adopt_resumed_run(run)
                self.init(run)
            metrics = {rec.sanitize_key(k): v for k, v in rec.step_values(values).items()}
            self.wb.log(metrics, step=int(step))
            self.last_step = int(step)

    def _adopt_resumed_run(self, run: Any) -> None:
        """``forget --resume``: the checkpoint restored ``run.extra`` with the W&B run of the interrupted
        process; continue that one."""
        record = run.extra.get(TRACKER)
        if isinstance(record, dict) and record.get("run_id") and record["run_id"] != self.run_id:
            self.run_id = str(record["run_id"])
            self.project = str(record.get("project") or self.project)
            self.entity = record.get("entity") or self.entity
            run.extra[TRACKER] = self.record()

    def save_files(self, run: Any, result: Any) -> None:
        """Copy the run's files into the W&B run's folder (so an offline run can be synced after the run
        folder has moved) and save them; the model, when asked for, as a ``model`` artifact."""
        if self.mode == "disabled":
            return
        files_dir = Path(self.wb.dir)
        model_files = []
        for path, rel in rec.output_files(run, result):
            if rel.split("/", 1)[0] == rec.MODEL_DIR:
                model_files.append((path, rel))
                continue
            copy = files_dir / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            self.wb.save(str(copy), base_path=str(files_dir), policy="now")
        if model_files:
            artifact = wandb.Artifact(f"model-{self.run_id}", type="model", metadata={"run_dir": str(run.out_dir)})
            for path, rel in model_files:
                artifact.add_file(str(path), name=rel.split("/", 1)[1])
            self.wb.log_artifact(artifact)

    # --- the end ----------------------------------------------------------------------------------------

    def finish(self, run: Any, result: Any) -> None:
        if self.broken:
            return
        with self.guard("finish the run", run):
            if self.wb is None:  # logged no step
                self.init(run)
            if run.kind in rec.STUDY_KINDS:
                payload = getattr(result, "payload", None) or {}
                self.wb.config.update({run.kind: rec.payload_config(payload)}, allow_val_change=True)
                metrics = rec.payload_metrics(payload, run.kind)
            else:
                manifest = rec.run_manifest(run)
                metrics = {}
                if manifest is not None:
                    self.wb.config.update(rec.manifest_config(manifest), allow_val_change=True)
                    metrics = rec.manifest_metrics(manifest)
            # a study's numbers go to the summary, not the history: a resumed offline run cannot know the
            # step the run it continues reached, and W&B drops history rows logged at an earlier step
            self.wb.summary.update({rec.sanitize_key(k): v for k, v in metrics.items()})
            self.save_files(run, result)
            self._close(exit_code=0)

    def _close(self, exit_code: int) -> None:
        wb, self.wb = self.wb, None
        if wb is not None:
            with suppress(Exception):  # at exit, W&B's own service may be gone already
                wb.finish(exit_code=exit_code)

    def abort(self, exit_code: int = 1) -> None:
        """The unlearnctl run ended without ``run_finished``: finish the W&B run as failed (``forget
        --resume`` continues it); never raises."""
        if not self.broken:
            self._close(exit_code)
