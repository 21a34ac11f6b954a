"""A run's attempts and SFT examples as a Hugging Face `datasets` dataset, where researchers already work.

    >>> export_run("demo-20261204-1a2b", Path("exports/demo"))      # pidistill export RUN_ID --to DIR
    >>> datasets.load_dataset("exports/demo", "attempts", split="train")

The folder holds one parquet file per table (`data/attempts.parquet`, `data/sft_examples.parquet`, the
catalog's columns as they are) and a dataset card (`README.md`) whose YAML header declares the two
configs, so `load_dataset(dir, "attempts")` needs nothing else; the card names the run, its experiment,
status, config hash, code version and data hash, and describes every column. The folder is written
beside its destination and renamed into place: a reader never sees half an export. `hf://owner/name`
pushes the same folder to the Hub as a dataset repository (`push_to_hub`; needs network and a token).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.catalog import connect
from storage.docs import column_doc
from storage.writer import folder_atomic

EXPORTED_TABLES = ("attempts", "sft_examples")
_MARK = "<!-- pidistill export -->"  # an earlier export's card: the only folder `force` may replace


class ExportError(ValueError):
    """What an export cannot do, said in a sentence (unknown run, destination in the way, ...)."""


def export_run(run_id: str, dest: Path | str, *, home: Path | None = None, force: bool = False) -> Path | str:
    """Export `run_id` to the folder `dest`, or to the Hub for `hf://owner/name`; returns where it went."""
    tables, run = _read(run_id, home)
    if isinstance(dest, str) and dest.startswith("hf://"):
        return _push(run, tables, dest[len("hf://") :])
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not _is_export(dest):
        raise ExportError(f"{dest} exists and is not a pidistill export: choose another folder")
    if dest.exists() and not force:
        raise ExportError(f"{dest} already holds an export: pass --force to replace it")
    with folder_atomic(dest) as work:
        _write(work, run, tables)
    return dest


def _read(run_id: str, home: Path | None) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    with connect(home) as con:
        found = con.execute("select * from runs where run_id = $run", {"run": run_id}).fetchall()
        if not found:
            known = [r[0] for r in con.execute("select run_id from runs order by started_at desc limit 5").fetchall()]
            raise ExportError(f"no run {run_id!r} in this home; the latest: {', '.join(known) or 'none'}")
        names = [d[0] for d in con.description or []]
        run = dict(zip(names, found[-1]))
        tables = {
            t: con.execute(f"select * from {t} where run_id = $run order by all", {"run": run_id}).to_arrow_table()
            for t in EXPORTED_TABLES
        }
    return tables, run


def _write(folder: Path, run: dict[str, Any], tables: dict[str, pa.Table]) -> None:
    (folder / "data").mkdir()
    for name, table in tables.items():
        pq.write_table(table, folder / "data" / f"{name}.parquet", compression="zstd")
    (folder / "README.md").write_text(card(run, tables), encoding="utf-8")


def _is_export(folder: Path) -> bool:
    card_path = folder / "README.md"
    return folder.is_dir() and card_path.is_file() and _MARK in card_path.read_text(encoding="utf-8", errors="replace")


def card(run: dict[str, Any], tables: dict[str, pa.Table]) -> str:
    """The dataset card: the configs `load_dataset` reads, then what the run was and what each column means."""
    header = ["---", "configs:"]
    for name in tables:
        header += [f"- config_name: {name}", f"  data_files: data/{name}.parquet"]
    header += ["tags:", "- pidistill", "---", ""]
    status = run.get("status")
    lines = [
        _MARK,
        f"# pidistill run `{run['run_id']}`",
        "",
        f"Experiment `{run.get('experiment')}`, status **{status}**"
        + ("" if status == "completed" else " (the run did not complete: its rows are what it wrote)")
        + ".",
        "",
        f"- config hash: `{run.get('config_hash')}`",
        f"- code version: `{run.get('code_version')}`",
        f"- data hash: `{run.get('data_hash')}`",
        f"- started: {run.get('started_at')}; finished: {run.get('finished_at')}",
        f"- smoke run: {bool(run.get('smoke'))}",
        "",
        "Every attempt the run made, accepted or rejected (`attempts`), and exactly what each training round",
        "trained on (`sft_examples`). The full config is at the end of this card.",
        "",
    ]
    for name, table in tables.items():
        lines += [f"## `{name}` ({table.num_rows:,} rows)", "", "| column | type | meaning |", "|---|---|---|"]
        for field in table.schema:
            meaning = (column_doc(name, field.name) or "").replace("|", "/")
            lines.append(f"| `{field.name}` | {field.type} | {meaning} |")
        lines.append("")
    config = run.get("config_json") or "{}"
    try:
        config = json.dumps(json.loads(config), indent=2, sort_keys=True)
    except ValueError:
        pass
    lines += ["## Config", "", "```json", config, "```", ""]
    return "\n".join(header + lines)


def _push(run: dict[str, Any], tables: dict[str, pa.Table], repo_id: str) -> str:
    """Upload the export folder to the Hub as a dataset repository (created if missing)."""
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"hf://{repo_id}: give the dataset repository as hf://owner/name")
    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="pidistill-export-") as tmp:
        folder = Path(tmp)
        _write(folder, run, tables)
        try:
            api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                repo_type="dataset",
                commit_message=f"pidistill run {run['run_id']}",
            )
        except (HfHubHTTPError, OSError, ValueError) as exc:  # OSError: offline, unreachable
            raise ExportError(f"could not push to hf://{repo_id}: {type(exc).__name__}: {exc}") from exc
    return f"hf://{repo_id}"
