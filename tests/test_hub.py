"""Models from the Hugging Face Hub: `autoregress pull`, the `make run` hook, and loading `org/name` offline.

The real huggingface_hub code runs against a stand-in Hub on loopback (HF_ENDPOINT), serving the
tiny test model as `org/name` next to copies of its weights in formats a pull must skip.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stack.hub import PullError, files_to_fetch, missing_files
from stack.redis_server import free_port
from tests.hub_standin import HubStandIn

PROJECT = Path(__file__).resolve().parent.parent
DUPLICATES = ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx", "model.gguf",
              "original/consolidated.00.pth"]
WANTED = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
CLI = "import sys; from cli.main import main; rc = main(); print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"


def test_a_pull_takes_config_tokenizer_and_safetensors_only():
    listing = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "README.md", "LICENSE.txt", ".gitattributes",
               "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
               "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
               "original/consolidated.00.pth", "original/tokenizer.model", "onnx/model.onnx", "model.gguf"}
    assert files_to_fetch(listing) == [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]


def test_a_pull_takes_pytorch_bin_when_there_is_no_safetensors():
    assert files_to_fetch({"config.json", "vocab.json", "merges.txt", "pytorch_model.bin", "tf_model.h5"}) == [
        "config.json", "merges.txt", "pytorch_model.bin", "vocab.json"]
    with pytest.raises(PullError, match="no weights that transformers loads"):
        files_to_fetch({"config.json", "tokenizer.json", "model.gguf", "onnx/model.onnx"})


def test_a_snapshot_missing_a_shard_is_not_complete(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert missing_files(tmp_path) == ["model-00002-of-00002.safetensors"]
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert missing_files(tmp_path) == []


@pytest.fixture(scope="module")
def hub(tiny_model_dir, tmp_path_factory):
    """The stand-in Hub: `org/name` (tiny model plus duplicate weight formats), a gated repo, nothing else."""
    repo = tmp_path_factory.mktemp("hub") / "org-name"
    shutil.copytree(tiny_model_dir, repo)
    for name in DUPLICATES:
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_bytes(b"the same weights in another format")
    standin = HubStandIn({"org/name": repo}, gated={"meta-llama/Llama-3.2-1B"}).start()
    yield standin
    standin.stop()


def hub_env(hf_home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """Environment for a subprocess using the Hub at `endpoint` and the cache in `hf_home`; no token."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    return env | {"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
                  "PYTHONPATH": str(PROJECT)} | extra


def run_python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=PROJECT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def pulled(hub, tmp_path_factory):
    """`autoregress pull org/name` into a fresh Hugging Face cache; (result, HF_HOME, requests the Hub saw)."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    before = len(hub.requests)
    result = run_python(CLI, "pull", "org/name", env=hub_env(hf_home, hub.url))
    return result, hf_home, hub.requests[before:]


def test_pull_fetches_only_what_a_causal_lm_needs_with_a_progress_bar(pulled):
    result, hf_home, requests = pulled
    assert result.returncode == 0, result.stderr
    assert "downloading org/name: 5 files" in result.stderr and "Fetching 5 files" in result.stderr
    assert "no torch" in result.stdout and "MODEL_NAME=org/name make run" in result.stdout
    snapshot = next((hf_home / "hub" / "models--org--name" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == WANTED
    fetched = {path.rsplit("/", 1)[-1] for method, path in requests if method == "GET" and "/resolve/" in path}
    assert fetched == set(WANTED)


def test_pull_of_a_gated_model_without_token_says_how_to_get_access(hub, tmp_path):
    result = run_python(CLI, "pull", "meta-llama/Llama-3.2-1B", env=hub_env(tmp_path, hub.url))
    assert result.returncode == 1
    assert "meta-llama/Llama-3.2-1B is gated" in result.stderr
    assert "https://huggingface.co/meta-llama/Llama-3.2-1B" in result.stderr and "set HF_TOKEN" in result.stderr


def test_pull_of_a_gated_model_with_a_token_lacking_access_says_so(hub, tmp_path):
    result = run_python(CLI, "pull", "meta-llama/Llama-3.2-1B", env=hub_env(tmp_path, hub.url, HF_TOKEN="hf_test"))
    assert result.returncode == 1 and "your Hugging Face token has no access to it yet" in result.stderr


def test_pull_of_an_unknown_id_says_it_does_not_exist(hub, tmp_path):
    result = run_python(CLI, "pull", "someorg/not-a-model", env=hub_env(tmp_path, hub.url))
    assert result.returncode == 1 and "no model 'someorg/not-a-model' on the Hugging Face Hub" in result.stderr


def test_pull_without_network_says_to_pull_elsewhere_or_copy_the_cache(tmp_path):
    result = run_python(CLI, "pull", "org/name", env=hub_env(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert result.returncode == 1
    assert "org/name is not in the Hugging Face cache" in result.stderr and "cannot be reached" in result.stderr
    assert "autoregress pull org/name" in result.stderr and "copy that folder" in result.stderr


def test_pull_offline_of_a_model_already_in_the_cache_says_it_is_ready(pulled):
    """The README's offline way (copy the cache folder, then check it with pull) said "not in the cache"."""
    _, hf_home, _ = pulled
    dead_hub = f"http://127.0.0.1:{free_port()}"
    for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
        result = run_python(CLI, "pull", "org/name", env=hub_env(hf_home, dead_hub, **extra))
        assert result.returncode == 0, result.stderr
        assert "org/name is already complete in the Hugging Face cache" in result.stderr
        assert "org/name is ready in" in result.stdout and "not in the Hugging Face cache" not in result.stderr


def cache_without_weights(pulled, tmp_path: Path) -> Path:
    """A copy of the pulled Hugging Face home whose org/name snapshot lacks its weights (a partly copied cache)."""
    copy = tmp_path / "hf_home"
    shutil.copytree(pulled[1], copy, symlinks=True)
    snapshot = next((copy / "hub" / "models--org--name" / "snapshots").iterdir())
    (snapshot / "model.safetensors").unlink()
    return copy


def test_pull_offline_of_a_cached_model_that_lacks_its_weights_names_them(pulled, tmp_path):
    copy = cache_without_weights(pulled, tmp_path)
    result = run_python(CLI, "pull", "org/name", env=hub_env(copy, f"http://127.0.0.1:{free_port()}"))
    assert result.returncode == 1
    assert "is in the Hugging Face cache" in result.stderr and "but lacks weights" in result.stderr


LOAD = """
import sys
from engine.loading import load_engine
engine = load_engine(sys.argv[1], "cpu")
ids = engine.tokenize("The cat sat")
print(engine.name, ids, engine.tokenizer.decode(ids))
"""


def test_a_pulled_model_loads_as_org_name_with_no_network(pulled, tiny_model_dir):
    _, hf_home, _ = pulled
    dead_hub = f"http://127.0.0.1:{free_port()}"  # any request to a Hub would fail
    offline = run_python(LOAD, "org/name", env=hub_env(hf_home, dead_hub, HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr
    local = run_python(LOAD, str(tiny_model_dir), env=hub_env(hf_home, dead_hub, HF_HUB_OFFLINE="1"))
    name, tokens = offline.stdout.split(" ", 1)
    assert name == "org/name" and tokens == local.stdout.split(" ", 1)[1]  # same tokenizer, same files


ENSURE = "import sys; from stack.hub import ensure_model; sys.exit(0 if ensure_model(sys.argv[1]) else 1)"


def test_make_run_downloads_a_missing_model_once_then_stays_offline(hub, tmp_path):
    env = hub_env(tmp_path, hub.url)
    first = run_python(ENSURE, "org/name", env=env)
    assert first.returncode == 0, first.stdout
    assert "not in the Hugging Face cache; downloading it once" in first.stdout
    assert "downloading org/name: 5 files" in first.stdout
    seen = len(hub.requests)
    second = run_python(ENSURE, "org/name", env=env)
    assert second.returncode == 0 and "from the Hugging Face cache" in second.stdout
    assert len(hub.requests) == seen  # a cached model costs no request


def test_make_run_stops_before_starting_anything_when_the_model_cannot_be_had(tmp_path):
    env = hub_env(tmp_path, f"http://127.0.0.1:{free_port()}", MODEL_NAME="someorg/not-cached",
                  HF_HUB_OFFLINE="1", DATA_DIR=str(tmp_path / "data"), REDIS_URL="")
    result = subprocess.run([sys.executable, "-m", "stack"], env=env, cwd=PROJECT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "cannot load the model: someorg/not-cached is not in the Hugging Face cache" in result.stdout
    assert "embedded Redis" not in result.stdout and not (tmp_path / "data" / "redis").exists()


def test_make_run_names_a_missing_local_model_folder_before_starting_anything(tmp_path):
    env = hub_env(tmp_path, f"http://127.0.0.1:{free_port()}", HF_HUB_OFFLINE="1", DATA_DIR=str(tmp_path / "data"),
                  REDIS_URL="")
    missing = run_python(ENSURE, "./models/nothere", env=env)
    assert missing.returncode == 1 and "there is no folder ./models/nothere" in missing.stdout
    misspelt = run_python(ENSURE, "models/dmeo", env=env)  # reads as a Hub id, but ./models exists here
    assert misspelt.returncode == 1
    assert "models/dmeo is not in the Hugging Face cache" in misspelt.stdout
    assert "nor is there a folder models/dmeo here" in misspelt.stdout
    not_an_id = run_python(ENSURE, "a--b/x", env=env)  # the Hub refuses "--": it was a traceback
    assert not_an_id.returncode == 1 and "there is no folder a--b/x" in not_an_id.stdout
    assert "Traceback" not in not_an_id.stderr


def test_make_run_names_what_a_local_model_folder_lacks_before_starting_anything(tmp_path, tiny_model_dir):
    """An empty folder, or one with a config alone, reached the worker, whose one-line reason was cut mid-sentence
    ("Couldn't instantiate the backend tokenizer from one of"); a file was "Repo id must be in the form ..."."""
    env = hub_env(tmp_path, f"http://127.0.0.1:{free_port()}", HF_HUB_OFFLINE="1")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_python(ENSURE, str(empty), env=env)
    assert result.returncode == 1
    assert f"the folder {empty} lacks config.json, tokenizer files, weights (model*.safetensors)" in result.stdout
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", config_only)
    result = run_python(ENSURE, str(config_only), env=env)
    assert result.returncode == 1 and "lacks tokenizer files, weights" in result.stdout
    result = run_python(ENSURE, str(tiny_model_dir / "config.json"), env=env)
    assert result.returncode == 1 and "is a file; MODEL_NAME names the folder that holds the model" in result.stdout
    assert run_python(ENSURE, str(tiny_model_dir), env=env).returncode == 0


def test_make_run_offline_names_what_a_partly_copied_cache_lacks(pulled, tmp_path):
    """With HF_HUB_OFFLINE=1 a cached snapshot without its weights was called "not in the Hugging Face cache"."""
    copy = cache_without_weights(pulled, tmp_path)
    result = run_python(ENSURE, "org/name", env=hub_env(copy, f"http://127.0.0.1:{free_port()}", HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert "org/name is in the Hugging Face cache" in result.stdout and "but lacks weights" in result.stdout
    assert "not in the Hugging Face cache" not in result.stdout
