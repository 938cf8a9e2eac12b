"""Models from the Hugging Face Hub: which files a causal LM needs, whether they are cached, and fetching them.

No torch here: `autoregress pull` and the launcher use this module.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

CONFIG_FILES = {"config.json", "generation_config.json"}
TOKENIZER_FILES = {  # every file some tokenizer class reads; a repo has a few of them
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "spiece.model", "vocab.json", "merges.txt", "vocab.txt",
    "chat_template.jinja", "chat_template.json",
}


class PullError(Exception):
    """The model cannot be had; the message says why and what to do, for people."""


def valid_hub_id(model: str) -> bool:
    """True when the Hub's own rules accept `model` as a model id (`org/name` or `name`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def weight_files(names: set[str]) -> list[str]:
    """The one weight format to fetch: safetensors when the repo has them, else pytorch_model*.bin.

    Other copies of the same weights (.bin next to safetensors, .h5, .msgpack, onnx/, gguf,
    original/*.pth) are never chosen; only top-level `model*`/`pytorch_model*` files load.
    """
    for stem, suffix in (("model", ".safetensors"), ("pytorch_model", ".bin")):
        chosen = sorted(n for n in names if n.startswith(stem) and "/" not in n
                        and (n.endswith(suffix) or n == f"{stem}{suffix}.index.json"))
        if any(n.endswith(suffix) for n in chosen):
            return chosen
    return []


def files_to_fetch(names: set[str]) -> list[str]:
    """What a causal LM needs from a repo listing: config, generation config, tokenizer files, one weight format.

    Raises:
        PullError: the repo has no weights that transformers loads.
    """
    weights = weight_files(names)
    if not weights:
        raise PullError("it has no weights that transformers loads (model*.safetensors or pytorch_model*.bin)")
    return sorted((names & (CONFIG_FILES | TOKENIZER_FILES)) | set(weights))


def missing_files(folder: Path) -> list[str]:
    """What a downloaded snapshot still lacks to load: config, a tokenizer, weights, shards named by the index."""
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    missing = [] if "config.json" in names else ["config.json"]
    if not names & TOKENIZER_FILES:
        missing.append("tokenizer files")
    weights = weight_files(names)
    if not weights:
        return missing + ["weights (model*.safetensors)"]
    for index in (w for w in weights if w.endswith(".index.json")):
        shards = set(json.loads((folder / index).read_text())["weight_map"].values())
        missing += sorted(shards - names)
    return missing


def snapshot_state(model: str, revision: str = "") -> tuple[Path | None, list[str]]:
    """The cached snapshot of `model` at `revision` and what it lacks to load ((None, []): none), without the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # finds the snapshot of that revision; only config.json is checked here (a pull fetches a subset)
        folder = Path(snapshot_download(model, revision=revision or None, local_files_only=True,
                                        allow_patterns=["config.json"]))
    except LocalEntryNotFoundError:
        return None, []
    return folder, missing_files(folder)


def cached_snapshot(model: str, revision: str = "") -> Path | None:
    """The cached snapshot of `model` at `revision` when it is complete enough to load, without the network."""
    folder, missing = snapshot_state(model, revision)
    return None if missing else folder


def pull(model: str, revision: str = "", token: str = "", out: TextIO = sys.stderr) -> Path:
    """Download what `model` needs into the Hugging Face cache (a progress bar on stderr); returns the snapshot.

    Raises:
        PullError: gated without access, unknown id or revision, no network, or no loadable weights.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=10)  # one try: the calls below retry for ~20 s when offline
        api = HfApi(token=token or None)  # None: huggingface_hub reads HF_TOKEN or a saved login
        listing = {f.path: f.size for f in api.list_repo_tree(model, revision=revision or None, recursive=True)
                   if isinstance(f, RepoFile)}
        try:
            wanted = files_to_fetch(set(listing))
        except PullError as exc:
            raise PullError(f"{model}: {exc}") from None
        total = sum(listing[n] or 0 for n in wanted)
        print(f"downloading {model}{'@' + revision if revision else ''}: {len(wanted)} files, "
              f"{total / 1e6:,.1f} MB ({', '.join(wanted)})", file=out, flush=True)
        folder = snapshot_download(model, revision=revision or None, token=token or None, allow_patterns=wanted)
    except Exception as exc:
        if not unreachable(exc):
            raise explain(exc, model, revision, token) from None
        why = f"the Hugging Face Hub cannot be reached ({type(exc).__name__})"
        cached, missing = snapshot_state(model, revision)  # read once: complete, partly copied, or absent
        if cached is None:
            raise PullError(not_cached_message(model, why)) from None
        if missing:  # name what is missing rather than "not in the cache"
            raise PullError(f"{model} is in the Hugging Face cache ({cached}) but lacks {', '.join(missing)}, and "
                            f"{why}. Pull it again on a machine with internet and copy the whole folder here") from None
        print(f"{why}, but {model} is already complete in the Hugging Face cache", file=out, flush=True)
        return cached
    return Path(folder)


def unreachable(exc: Exception) -> bool:
    """True when `exc` says the Hub could not be reached (no network, or HF_HUB_OFFLINE=1)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError, TimeoutError)) \
        or any(c.__name__ == "TransportError" for c in type(exc).__mro__)  # httpx's connect/read errors


def explain(exc: Exception, model: str, revision: str, token: str) -> Exception:
    """A PullError that says what went wrong with the Hub and what to do; other errors unchanged."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, PullError):
        return exc
    if isinstance(exc, GatedRepoError):
        page = f"https://huggingface.co/{model}"
        if token or get_token():
            return PullError(f"{model} is gated and your Hugging Face token has no access to it yet: open {page} "
                             "signed in as the token's owner, accept the licence, wait for approval, then retry")
        return PullError(f"{model} is gated: open {page} signed in to Hugging Face and accept its licence, "
                         "create a read token at https://huggingface.co/settings/tokens, then set HF_TOKEN "
                         "(in .env or the environment) and retry")
    if isinstance(exc, RevisionNotFoundError):
        return PullError(f"{model} has no revision {revision!r}: check MODEL_REVISION (a branch, tag or commit)")
    if isinstance(exc, RepositoryNotFoundError):
        private = "" if token else "; a private model also needs HF_TOKEN"
        return PullError(f"no model {model!r} on the Hugging Face Hub: check the id (e.g. meta-llama/Llama-3.2-1B){private}")
    if isinstance(exc, HfHubHTTPError):
        return PullError(f"the Hugging Face Hub refused {model}: {str(exc).splitlines()[0]}")
    return exc


def not_cached_message(model: str, why: str) -> str:
    """What to do when a model is neither cached nor downloadable here."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}"
    return (f"{model} is not in the Hugging Face cache ({folder}) and {why}. Run `autoregress pull {model}` "
            f"(or `make pull MODEL={model}`) on a machine with internet and copy that folder here, "
            f"or set MODEL_NAME to a local folder with the model")


def ensure_model(model: str, revision: str = "", token: str = "", out: TextIO = sys.stdout) -> bool:
    """Before workers start: a local folder or cached model stays offline; otherwise download it, saying what.

    Prints the reason and returns False when the model cannot be had.
    """
    local = Path(model).expanduser()
    if local.is_file():
        print(f"cannot load the model: {model} is a file; MODEL_NAME names the folder that holds the model",
              file=out, flush=True)
        return False
    if local.is_dir():
        lacking = missing_files(local)
        if lacking:
            print(f"cannot load the model: the folder {model} lacks {', '.join(lacking)} (a model saved with "
                  "save_pretrained, or a whole copied model folder, has them all)", file=out, flush=True)
        return not lacking
    if not valid_hub_id(model):
        print(f"cannot load the model: there is no folder {model} (MODEL_NAME is a local folder, or a Hugging "
              "Face id such as meta-llama/Llama-3.2-1B)", file=out, flush=True)
        return False
    from huggingface_hub import constants

    cached, lacking = snapshot_state(model, revision)
    if cached and not lacking:
        print(f"model {model}: from the Hugging Face cache ({cached})", file=out, flush=True)
        return True
    try:
        if constants.HF_HUB_OFFLINE and cached:
            raise PullError(f"{model} is in the Hugging Face cache ({cached}) but lacks {', '.join(lacking)}, and "
                            "HF_HUB_OFFLINE=1 forbids downloading the rest. Pull it again on a machine with internet "
                            "and copy the whole folder here")
        if constants.HF_HUB_OFFLINE:
            raise PullError(not_cached_message(model, "HF_HUB_OFFLINE=1 forbids downloading it"))
        if cached:
            print(f"model {model} is in the Hugging Face cache but lacks {', '.join(lacking)}; downloading it",
                  file=out, flush=True)
        else:
            print(f"model {model} is not in the Hugging Face cache; downloading it once", file=out, flush=True)
        pull(model, revision, token, out=out)
    except PullError as exc:
        folder = Path(model).expanduser()
        hint = f" (nor is there a folder {model} here)" if "/" in model and folder.parent.is_dir() else ""
        print(f"cannot load the model: {exc}{hint}", file=out, flush=True)
        return False
    return True
