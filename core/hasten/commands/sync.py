"""``hasten sync RUN_DIR [--uri URI]``: send what tracking could not (RUN_DIR/tracking-fallback.jsonl)."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from hasten.builtins.mlflow_sender import (
    FALLBACK_FILE,
    RUN_ID_FILE,
    SYNCED_FILE,
    Sender,
    _use_fast_failing_http,
    resolve_uri,
)
from hasten.errors import UserError


def sync_fallback(run_dir: str | Path, uri: str | None = None) -> dict[str, Any]:
    """Send RUN_DIR/tracking-fallback.jsonl to MLflow (``hasten sync``).

    On success the file is renamed to ``tracking-fallback.synced.jsonl``. On
    failure the operations not yet sent are written back, so a later sync
    neither repeats nor loses any, and a :class:`UserError` says what failed.
    """
    path = Path(run_dir) / FALLBACK_FILE
    if not path.is_file():
        raise UserError(f"hasten sync: no {FALLBACK_FILE} in {run_dir}; nothing to send")
    ops = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    _use_fast_failing_http()
    sender: Sender | None = None
    counts: collections.Counter[str] = collections.Counter()
    for index, op in enumerate(ops):
        try:
            if op["op"] == "open":
                target = uri or op.get("uri") or resolve_uri(None)
                from hasten.builtins.tracking_store import check_uri, prepare_store

                check_uri(target, key="--uri")
                prepare_store(target)  # a broken local store is named as such, not as "unreachable"
                sender = Sender(target, background=False)
                op = {**op, "run_id": op.get("run_id"), "experiment": op.get("experiment") or "hasten"}
                sender.execute(op)
                ops[index] = {**op, "run_id": sender.run_id}  # a retry must not create a second run
                (Path(run_dir) / RUN_ID_FILE).write_text(f"{sender.run_id}\n", encoding="utf-8")
            else:
                if sender is None:
                    raise UserError(f"{path}: the first line must be an 'open' record")
                sender.execute(op)
        except UserError:
            raise
        except Exception as exc:
            # Keep the latest open record before the failure, so the rest knows its run.
            header = [o for o in ops[:index] if o["op"] == "open"][-1:] if op["op"] != "open" else []
            remaining = header + ops[index:]
            path.write_text("".join(json.dumps(o) + "\n" for o in remaining), encoding="utf-8")
            raise UserError(
                f"hasten sync: sending to {sender.uri if sender else uri} failed at operation {index + 1} "
                f"of {len(ops)} ({type(exc).__name__}: {exc}); the rest stays in {path}"
            ) from None
        counts[op["op"]] += len(op["metrics"]) if op["op"] == "metrics" else 1
    path.rename(Path(run_dir) / SYNCED_FILE)
    return {"run_id": sender.run_id if sender else None, "sent": dict(counts)}


def cmd_sync(args: Any) -> int:
    result = sync_fallback(args.run_dir, args.uri)
    sent = result["sent"]
    print(
        f"sent {sent.get('metrics', 0)} metric values, {sent.get('artifact', 0)} artifacts "
        f"to MLflow run {result['run_id']}"
    )
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync", help="send tracking data saved while the MLflow server was unreachable (tracking-fallback.jsonl)"
    )
    parser.add_argument("run_dir", help="the run directory holding tracking-fallback.jsonl")
    parser.add_argument("--uri", default=None, help="tracking URI to send to (default: the one the run used)")
    parser.set_defaults(handler=cmd_sync)
