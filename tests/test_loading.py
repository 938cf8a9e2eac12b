"""Model loading: dtype choice per device, DTYPE/MODEL_REVISION settings, weights straight onto the device, thread split."""
from __future__ import annotations

import os

import pytest
import torch

from contract.settings import Settings
from engine import loading
from engine.loading import available_cores, load_engine, pick_dtype, thread_share

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("capability,expected", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                 ((7, 5), torch.float16), ((6, 1), torch.float16)])
def test_auto_dtype_is_bf16_on_gpus_that_have_it_and_fp16_on_older_ones(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert pick_dtype("auto", CUDA) is expected


def test_auto_dtype_is_fp32_on_cpu_and_an_explicit_dtype_is_honoured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("float16", torch.device("cpu")) is torch.float16
    assert pick_dtype("float32", CUDA) is torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_dtype_and_revision_settings():
    settings = Settings.from_env({"DTYPE": "bfloat16", "MODEL_REVISION": "v1.0"})
    assert (settings.dtype, settings.model_revision) == ("bfloat16", "v1.0")
    assert Settings.from_env({}).dtype == "auto"
    with pytest.raises(ValueError, match=r"DTYPE must be one of auto, float32, bfloat16, float16, got 'int8'"):
        Settings.from_env({"DTYPE": "int8"})


def test_explicit_dtype_reaches_the_loaded_weights(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), "cpu", dtype="bfloat16")
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}


def test_weights_are_loaded_onto_the_device_not_moved_there_afterwards(tiny_model_dir, monkeypatch):
    """from_pretrained gets the target device (each tensor goes straight there); the model is never .to()'d."""
    calls: dict[str, list] = {"from_pretrained": [], "to": []}
    real_from_pretrained = loading.AutoModelForCausalLM.from_pretrained
    real_to = torch.nn.Module.to

    def from_pretrained(*args, **kwargs):
        calls["from_pretrained"].append(kwargs)
        return real_from_pretrained(*args, **kwargs)

    def to(self, *args, **kwargs):
        calls["to"].append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    engine = load_engine(str(tiny_model_dir), "cpu")
    assert [kw["device_map"] for kw in calls["from_pretrained"]] == [torch.device("cpu")]
    assert calls["to"] == [] and engine.device == torch.device("cpu")


@pytest.mark.parametrize("cores,workers,share", [(2, 1, 1), (16, 1, 8), (16, 3, 4), (8, 3, 2), (4, 8, 1)])
def test_threads_split_the_cores_among_the_workers_leaving_a_share_for_web_and_redis(cores, workers, share):
    assert thread_share(cores, workers) == share


def test_a_container_cpu_limit_caps_the_cores(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text("100000 100000\n")  # 1 CPU
    assert available_cores(limit) == 1
    limit.write_text("max 100000\n")
    assert available_cores(limit) == affinity
    assert available_cores(tmp_path / "absent") == affinity


def test_workers_per_host_sets_each_workers_torch_threads(monkeypatch):
    monkeypatch.setattr(loading, "available_cores", lambda: 16)
    before = torch.get_num_threads()
    try:
        assert loading.set_cpu_threads(0, workers=3) == 4 and torch.get_num_threads() == 4
        assert loading.set_cpu_threads(6, workers=3) == 6  # an explicit TORCH_THREADS wins
    finally:
        torch.set_num_threads(before)


def test_a_model_path_from_the_home_folder_loads_as_written_in_an_env_file(tiny_model_dir, tmp_path, monkeypatch):
    """`MODEL_NAME=~/tiny` (a .env line: no shell expands it) passed the launcher's check, then the worker took
    "~/tiny" for a Hub id and exited."""
    (tmp_path / "tiny").symlink_to(tiny_model_dir)
    monkeypatch.setenv("HOME", str(tmp_path))
    engine = load_engine("~/tiny", "cpu", dtype="float32")
    assert engine.name == "local/tiny" and engine.fingerprint
