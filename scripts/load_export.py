#!/usr/bin/env python3
"""Load Backflip exports with Hugging Face `datasets` (not run in CI).

    pip install datasets pyarrow
    backflip export --project my-project --format preferences-jsonl --out out/
    backflip export --project my-project --format preferences-parquet --out out/
    backflip export --project my-project --format raw-jsonl --out out/
    python3 scripts/load_export.py out/

Checks each file's sha256 against the manifest beside it, then loads it and
prints the first preference row in the shape reward/DPO trainers (e.g. TRL's
RewardTrainer, DPOTrainer) read: prompt, chosen, rejected.
"""

import hashlib
import json
import sys
from pathlib import Path

from datasets import load_dataset


def check_manifest(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for f in manifest["files"]:
        digest = hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest()
        assert digest == f["sha256"], f"{f['path']}: sha256 mismatch"
    print(f"manifest ok: {manifest['format']}, {manifest['rows']} rows, filters {manifest['filters']}")


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    if (folder / "manifest.json").exists():
        check_manifest(folder)
    if (folder / "preferences.jsonl").exists():
        ds = load_dataset("json", data_files=str(folder / "preferences.jsonl"), split="train")
        print(ds)
        row = ds[0]
        print({k: row[k] for k in ("prompt", "chosen", "rejected", "agreement", "votes")})
    if (folder / "preferences.parquet").exists():
        ds = load_dataset("parquet", data_files=str(folder / "preferences.parquet"), split="train")
        print(ds.features)
    if (folder / "judgments.jsonl").exists():
        ds = load_dataset("json", data_files=str(folder / "judgments.jsonl"), split="train")
        print(ds.to_pandas().groupby("rater")["choice"].value_counts())


if __name__ == "__main__":
    main()
