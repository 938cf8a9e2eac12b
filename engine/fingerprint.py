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

SAMPLE_BYTES = 1 << 20
DESCRIBING = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model")
WEIGHTS = ("model*.safetensors", "pytorch_model*.bin")  # what transformers loads: the first that the folder has


def model_folder(model_name: str, token: str | None = None, revision: str | None = None) -> Path:
    """The folder a model loads from: a local path as given (`~` expanded), or its snapshot in the Hub cache."""
    local = Path(os.path.expanduser(model_name))
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_name, revision=revision, token=token, local_files_only=True))


def files_fingerprint(folder: Path) -> str:
    """A short hex digest of the model files in `folder` (equal files, equal digest, wherever the folder is)."""
    digest = hashlib.sha256()
    for name in DESCRIBING:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    loaded = next((found for found in (sorted(folder.glob(pattern)) for pattern in WEIGHTS) if found), [])
    for path in loaded:  # other files (training_args.bin, a second copy in another format) do not count
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as weights:
            digest.update(weights.read(SAMPLE_BYTES))
            weights.seek(max(size - SAMPLE_BYTES, 0))
            digest.update(weights.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]
