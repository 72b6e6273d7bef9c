"""The run store: every artifact a run writes or reads, under one root on object storage.

The root is `LLM_EVAL_ARTIFACTS_URL` (or the config's `artifacts_url`, which wins):
`file:///abs/path` or a plain absolute path, `s3://bucket/prefix`, or
`s3://conn_id@bucket/prefix` (that Airflow connection's credentials and endpoint). Unset,
it is the local folder `LLM_EVAL_ARTIFACTS_DIR`, else `artifacts/` in the project.
Paths are Airflow `ObjectStoragePath`s, imported on first use: never at DAG parse time.

Layout (every name is a constant below):

    runs/<dag>/<run>/            config.json dataset.jsonl bad_rows.json
                                 selection.json registration.json leaderboard.html summary.md
    runs/<dag>/<run>/models/<m>/ results.json failure.json usage.json outputs.jsonl records.jsonl report.html
                                 finetuned/ and server.log (local target)
    history/<dag>/               <catalog version>.json trend.html
    registry/<group>/            v00001.json ...
    cache/<dag>/<m>/             responses.sqlite (the local target's response cache)

No reader takes a half-written object for a whole one: an object store puts whole objects,
and on a local disk a write goes to a hidden file that is then renamed.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

ARTIFACTS_URL_ENV = "LLM_EVAL_ARTIFACTS_URL"
ARTIFACTS_DIR_ENV = "LLM_EVAL_ARTIFACTS_DIR"

# a run's folder
CONFIG = "config.json"
DATASET = "dataset.jsonl"
BAD_ROWS = "bad_rows.json"
SELECTION = "selection.json"
PAIRWISE = "pairwise.json"  # the run's pairwise comparison (Pairwise)
AGREEMENT = "agreement.json"  # each labelled rubric's judge against people (LLMJudge, Pairwise)
HUMAN_LABELS = "human_labels.json"  # rubric -> people's ratings of this run's answers (the records view)
REVIEW_FLAGS = "review_flags.json"  # the answers the review form asks the reviewer to rate
REGISTRATION = "registration.json"
LEADERBOARD = "leaderboard.html"
SUMMARY = "summary.md"
# a model's folder in a run
RESULTS = "results.json"
FAILURE = "failure.json"
USAGE = "usage.json"  # what the model's endpoint and jobs were billed for
OUTPUTS = "outputs.jsonl"
RECORDS = "records.jsonl"
MODEL_REPORT = "report.html"
INSPECT_LOGS = "inspect"  # a model's Inspect logs, <task>.eval each
TUNED = "finetuned"
SERVER_LOG = "server.log"  # the local model server's log, kept by its teardown
# other rooms
TREND = "trend.html"
RESPONSE_CACHE = "responses.sqlite"

_S3_URL = re.compile(
    r"^s3://(?:(?P<conn>[A-Za-z0-9_.-]+)@)?(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$"
)
EXPECTED = "file:///absolute/path, an absolute path, s3://bucket[/prefix] or s3://conn_id@bucket[/prefix]"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of `s3://bucket/key`; ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def check_url(url: str) -> str:
    """The URL as given when it names a store; ValueError saying what is expected otherwise."""
    if url.startswith("s3://"):
        if not _S3_URL.match(url):
            raise ValueError(f"artifacts URL {url!r} is not a valid S3 location: expected {EXPECTED}")
    elif url.startswith("file://"):
        if not url.removeprefix("file://").startswith("/"):
            raise ValueError(f"artifacts URL {url!r} has a relative file path: expected {EXPECTED}")
    elif "://" in url or not url.startswith("/"):
        raise ValueError(f"artifacts URL {url!r} is not supported: expected {EXPECTED}")
    return url


def configured_url(config_url: str | None = None) -> str:
    """The store's root URL: the config's, else the environment's, else the local folder."""
    url = config_url or os.environ.get(ARTIFACTS_URL_ENV)
    if url:
        return check_url(url)
    from llmeval.runtime import PROJECT_DIR

    return str(Path(os.environ.get(ARTIFACTS_DIR_ENV) or PROJECT_DIR / "artifacts").resolve())


def root(config_url: str | None = None) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    url = configured_url(config_url)
    return ObjectStoragePath(url if "://" in url else f"file://{url}")


def safe_segment(value: str) -> str:
    """A run id or name made safe as one path segment (no separators, no '..')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "_", value).strip(".")
    return cleaned or "_"


def run_folder(dag_id: str, run_id: str, config_url: str | None = None) -> ObjectStoragePath:
    return root(config_url) / "runs" / safe_segment(dag_id) / safe_segment(run_id)


def model_folder(run: Any, model: str) -> Any:
    """A model's folder inside a run folder (a store path or a local Path alike)."""
    return run / "models" / safe_segment(model)


def history_folder(dag_id: str, config_url: str | None = None) -> ObjectStoragePath:
    return root(config_url) / "history" / safe_segment(dag_id)


def labels_file(dag_id: str, rubric: str, config_url: str | None = None) -> ObjectStoragePath:
    """People's ratings of a DAG's answers on one rubric, as reviewers gave them (append-only)."""
    return root(config_url) / "labels" / safe_segment(dag_id) / f"{safe_segment(rubric)}.jsonl"


def registry_folder(config_url: str | None = None) -> ObjectStoragePath:
    return root(config_url) / "registry"


def cache_object(dag_id: str, model: str, config_url: str | None = None) -> ObjectStoragePath:
    return root(config_url) / "cache" / safe_segment(dag_id) / safe_segment(model) / RESPONSE_CACHE


def describe(path: Any) -> str:
    """The path's URL and, for object storage, the Airflow connection it uses (for errors)."""
    if _is_local(path):
        return str(path)
    conn = getattr(path, "conn_id", None)
    return f"{path} (connection {conn!r})" if conn else f"{path} (default AWS credentials, no connection)"


def _is_local(path: Any) -> bool:
    return isinstance(path, Path) or (getattr(path, "protocol", "file") or "file") in ("file", "local")


def _local(path: Any) -> Path:
    return path if isinstance(path, Path) else Path(path.path)


def write_bytes(path: Any, data: bytes) -> None:
    """Write a whole object: readers see the old one or the new one, never a part."""
    if _is_local(path):
        target = _local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    else:
        path.write_bytes(data)


def write_text(path: Any, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def create_new(path: Any, text: str) -> bool:
    """Write `path` only if it does not exist yet (atomically); False when it already did.
    Local disks use O_EXCL on a complete hidden file linked into place; S3 uses a
    conditional PUT (If-None-Match: *)."""
    data = text.encode("utf-8")
    if _is_local(path):
        target = _local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, target)  # fails if the name exists; the file is whole when it appears
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    try:
        path.fs.pipe_file(path.path, data, mode="create")
        return True
    except Exception as exc:  # s3fs maps 412 PreconditionFailed to an OSError subtype
        if "PreconditionFailed" in repr(exc) or "412" in str(exc) or isinstance(exc, FileExistsError):
            return False
        raise


def upload_tree(local: Path, dest: Any) -> list[str]:
    """Copy every file under a local folder into the store; the names written."""
    written = []
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        name = file.relative_to(local).as_posix()
        write_bytes(dest / name, file.read_bytes())
        written.append(name)
    return written


def download_tree(src: Any, local: Path) -> list[str]:
    """Copy every object under a store folder into a local folder; the names copied."""
    copied: list[str] = []
    if not src.exists():
        return copied
    for item in src.rglob("*"):
        if item.is_file():
            name = item.relative_to(src).as_posix()
            target = local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with item.open("rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            copied.append(name)
    return copied


def download(src: Any, local: Path) -> Path:
    """Copy one object to a local file (scratch space for a command that needs a file)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, open(local, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return local
