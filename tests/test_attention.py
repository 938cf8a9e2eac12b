"""The attention kernel a CUDA worker uses (engine.attention): cuDNN's per-shape plans stalled every eager step."""
from __future__ import annotations

import logging

import pytest
import torch

from engine.attention import prefer_attention_kernels
from engine.step_engine import StepEngine


@pytest.fixture
def cudnn_attention_restored():
    """Put PyTorch's process-wide switch back as it was, whatever the test did."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_a_cuda_model_runs_without_cudnns_attention(cudnn_attention_restored):
    torch.backends.cuda.enable_cudnn_sdp(True)
    said = prefer_attention_kernels(torch.device("cuda", 0))
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert "cuDNN" in said


def test_a_cpu_model_leaves_pytorchs_choice_alone(cudnn_attention_restored):
    torch.backends.cuda.enable_cudnn_sdp(True)
    prefer_attention_kernels(torch.device("cpu"))
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_the_engine_makes_the_choice_for_its_device_at_load(tiny_engine, monkeypatch, caplog):
    seen = []
    monkeypatch.setattr("engine.step_engine.prefer_attention_kernels",
                        lambda device: seen.append(device) or "attention: chosen")
    with caplog.at_level(logging.INFO, logger="engine.step_engine"):
        StepEngine(tiny_engine.model, tiny_engine.tokenizer, name="tiny")
    assert seen == [torch.device("cpu")]
    assert "tiny: attention: chosen" in caplog.text
