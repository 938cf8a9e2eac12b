"""What a model's files are, in a few bytes: two workers that announce one model id must hold the same files.

A local model is named by its folder (`local/<folder>`), so two different folders of one name would be one model
to the service. The fingerprint tells them apart without reading whole weight files: the config, the tokenizer,
and each loaded weight file's name, size and its first and last MiB (a safetensors file's header is at its start; a
different model of the same shapes differs in its values, which fill the rest).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stack.hub import cached_snapshot, weight_files  # which files a model loads from (no torch there)

SAMPLE_BYTES = 1 << 20
DESCRIBING = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def model_folder(model_name: str, revision: str | None = None) -> Path:
    """The folder a model loads from: a local path as given (`~` expanded), or its snapshot in the Hub cache.

    Raises:
        FileNotFoundError: no complete snapshot of it is cached.
    """
    local = Path(os.path.expanduser(model_name))
    if local.is_dir():
        return local
    folder = cached_snapshot(model_name, revision or "")
    if folder is None:
        raise FileNotFoundError(f"no complete snapshot of {model_name} in the Hugging Face cache")
    return folder


def files_fingerprint(folder: Path) -> str:
    """A short hex digest of the model files in `folder` (equal files, equal digest, wherever the folder is)."""
    digest = hashlib.sha256()
    for name in DESCRIBING:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    names = {path.name for path in folder.iterdir() if path.is_file()}
    for path in (folder / name for name in weight_files(names)):  # not training_args.bin, nor a copy in another format
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as weights:
            digest.update(weights.read(SAMPLE_BYTES))
            weights.seek(max(size - SAMPLE_BYTES, 0))
            digest.update(weights.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]
