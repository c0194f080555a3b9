"""Checkpoints of a :class:`~adaptlib.trainer.Trainer` run: what a file holds, its atomic write,
reading and checking one (format, version, settings; never unpickled), and restoring a run from it.

The public entry points stay on the Trainer (:meth:`~adaptlib.trainer.Trainer.save_checkpoint`,
:meth:`~adaptlib.trainer.Trainer.load_checkpoint`, ``fit(resume=...)``); see the Trainer's docstring
for what a checkpoint holds and when it is refused.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ._history import History, _LogSums

# ``trainer`` below is the Trainer whose run is saved or restored (typed Any: this module must not import
# adaptlib.trainer, which imports it)

FORMAT = "adaptlib.Trainer checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a partial one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_state(trainer: Any) -> Dict[str, Any]:
    """What :meth:`Trainer.save_checkpoint` writes: the state of the run after ``trainer.step`` steps."""
    sums, count = trainer._log_state
    rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": FORMAT, "version": VERSION, "settings": trainer._settings(), "step": trainer.step,
        "model": trainer.model.state_dict(), "method": trainer.method.state_dict(),
        "optimizer": trainer._optimizer.state_dict() if trainer._optimizer is not None else None,
        "streams": {name: st.state_dict() for name, st in trainer._streams.items()},
        "rng": rng, "log_sums": sums.state_dict(), "log_count": count,
        "history": {"train": [dict(r) for r in trainer.history.train], "eval": [dict(r) for r in trainer.history.eval]},
    }
    amp = getattr(trainer, "amp", None)
    if amp is not None and amp.state_dict():  # the fp16 loss scale, so a resumed run scales as the original
        state["grad_scaler"] = amp.state_dict()
    return state


def read_checkpoint(trainer: Any, path: Path) -> Dict[str, Any]:
    """The checkpoint at ``path``, read without unpickling and checked against ``trainer``'s settings."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} is not an adaptlib Trainer checkpoint: it holds objects other than tensors, "
                         f"numbers, strings, lists and dicts, and adaptlib does not unpickle those ({e})") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint file ({e})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path} is not an adaptlib Trainer checkpoint")
    if checkpoint.get("version") != VERSION:
        raise ValueError(f"{path} is a version-{checkpoint.get('version')} checkpoint; this adaptlib reads "
                         f"version {VERSION}")
    saved, now = checkpoint["settings"], trainer._settings()
    diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diffs:
        raise ValueError(f"checkpoint {path} was saved by a run with other settings, so it cannot continue this "
                         f"one: " + "; ".join(diffs) + ". Use the same settings, or start a new run "
                         "(resume=False, or another checkpoint_dir)")
    return checkpoint


def _with_kernel_flags(saved: Dict[str, Any], optimizer: Any) -> Dict[str, Any]:
    """``saved`` (an optimizer state dict) with the implementation flags (``fused``, ``foreach``)
    of ``optimizer``, the one this process built: ``load_state_dict`` would otherwise restore the
    saving process's choice, which this torch or device may not support (and a per-tensor step
    then meets the fp16 scaler's fused-step arguments). The update is the same either way."""
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    if len(flags) != len(saved.get("param_groups", ())):
        return saved  # load_state_dict names the mismatch
    groups = [{**g, **f} for g, f in zip(saved["param_groups"], flags)]
    return {**saved, "param_groups": groups}


def restore_model(model: nn.Module, checkpoint: Dict[str, Any], path: Path) -> None:
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        raise RuntimeError(f"the model of checkpoint {path} does not fit this model: {e}") from None


def checkpoint_to_resume(trainer: Any, resume: Union[bool, str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The checkpoint ``fit(resume=...)`` continues from, read and checked, or ``None`` for a fresh start."""
    if resume is True:
        path = trainer.checkpoint_path()
        if path is None:
            raise ValueError("resume=True continues from checkpoint_dir/last.pt: pass checkpoint_dir to the "
                             "Trainer, or resume=<path of a checkpoint file>")
        if not path.is_file():
            return None  # first launch: nothing to resume
    elif resume is False or resume is None:
        pending, trainer._pending = trainer._pending, None
        return pending
    else:
        path = Path(resume)
    checkpoint = read_checkpoint(trainer, path)
    checkpoint["_path"] = str(path)
    trainer._pending = None
    return checkpoint


def start(trainer: Any, checkpoint: Optional[Dict[str, Any]]) -> Tuple[_LogSums, int]:
    """Set up step 0, or restore the run from ``checkpoint``; return the logging sums and count.

    Called by :meth:`Trainer.fit` after the method's ``setup`` and the optimizer's creation; the
    global RNG states are restored last, after everything that draws from them.
    """
    if checkpoint is None:
        trainer.step = 0
        trainer.history = History()
        trainer._log_state = (_LogSums(), 0)
        return _LogSums(), 0
    path = Path(checkpoint.get("_path", "checkpoint"))
    restore_model(trainer.model, checkpoint, path)
    if checkpoint["optimizer"] is None:  # saved before any fit: only the model is restored
        trainer.step, trainer.history = 0, History()
        trainer._log_state = (_LogSums(), 0)
        return _LogSums(), 0
    trainer.method.load_state_dict(checkpoint["method"])
    trainer._optimizer.load_state_dict(_with_kernel_flags(checkpoint["optimizer"], trainer._optimizer))
    if "grad_scaler" in checkpoint and getattr(trainer, "amp", None) is not None:
        trainer.amp.load_state_dict(checkpoint["grad_scaler"])
    if set(checkpoint["streams"]) != set(trainer._streams):
        raise ValueError(f"checkpoint {path} has data streams {sorted(checkpoint['streams'])}, this run "
                         f"{sorted(trainer._streams)}")
    for name, stream in trainer._streams.items():
        try:
            stream.load_state_dict(checkpoint["streams"][name])
        except ValueError as e:
            raise ValueError(f"{name}: {e} (checkpoint {path})") from None
    trainer.step = int(checkpoint["step"])
    trainer.history = History([dict(r) for r in checkpoint["history"]["train"]],
                              [dict(r) for r in checkpoint["history"]["eval"]])
    sums = _LogSums.from_state(checkpoint["log_sums"], trainer.device)
    count = int(checkpoint["log_count"])
    trainer._log_state = (sums, count)
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return sums, count


def after_step(trainer: Any, sums: _LogSums, count: int) -> None:
    """Bookkeeping at the end of each step: remember the logging sums; write the checkpoint when due."""
    trainer._log_state = (sums, count)
    path = trainer.checkpoint_path()
    if path is not None and (trainer.step % trainer.checkpoint_every == 0 or trainer.step == trainer.steps):
        trainer.save_checkpoint(path)
