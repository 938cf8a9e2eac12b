"""engine.head: a half-precision model's logits in fp32 where the device has the product, else the model's own."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from contract.jobs import GenerationParams
from engine.batch import SequenceSpec
from engine.head import Fp32Head
from engine.step_engine import StepEngine
from tests.tiny_families import tiny_family_model


def upcast_linear(x, weight, bias):
    """What CUDA's fp32-output product computes, done on a CPU by upcasting (a CPU has no such kernel)."""
    return F.linear(x.float(), weight.float(), None if bias is None else bias.float())


def bf16_engine(tiny_engine, family="llama"):
    tok = tiny_engine.tokenizer
    return StepEngine(tiny_family_model(family, len(tok), tok.eos_token_id, torch.bfloat16), tok, family)


def test_a_bf16_model_keeps_its_head_where_there_is_no_fp32_output_product(tiny_engine, caplog):
    with caplog.at_level(logging.INFO, logger="engine.step_engine"):
        engine = bf16_engine(tiny_engine)
    assert isinstance(engine.model.get_output_embeddings(), torch.nn.Linear)
    assert any("logits in bfloat16: no fp32-output product here" in m for m in caplog.messages)


def test_an_fp32_model_needs_no_new_head(tiny_engine):
    assert isinstance(tiny_engine.model.get_output_embeddings(), torch.nn.Linear)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_an_fp32_output_head_gives_unrounded_logits_and_keeps_every_promise(tiny_engine, monkeypatch, family):
    """Gemma 2 soft-caps its logits after the head, GPT-NeoX's head is `embed_out`: both go through it."""
    monkeypatch.setattr("engine.head.linear_fp32", upcast_linear)
    engine = bf16_engine(tiny_engine, family)
    head = engine.model.get_output_embeddings()
    assert isinstance(head, Fp32Head)
    ids = engine.tokenize("Once upon a time there was")
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0, -1]
    assert logits.dtype == torch.float32
    assert (logits != logits.bfloat16().float()).any()  # not rounded to bf16 any more
    generated = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    batch = engine.batch(1)
    batch.eos_ids = frozenset()
    batch.add(SequenceSpec("g", ids, GenerationParams(steps=12, top_k=3, seed=0)))
    greedy = [r.chosen_id for _ in range(12) for r in batch.step()]
    assert greedy == generated[0, len(ids):].tolist()


def test_a_probe_that_disagrees_keeps_the_models_head(tiny_engine, monkeypatch, caplog):
    monkeypatch.setattr("engine.head.linear_fp32", lambda x, w, b: upcast_linear(x, w, b) * 1.01)
    with caplog.at_level(logging.INFO, logger="engine.step_engine"):
        engine = bf16_engine(tiny_engine)
    assert isinstance(engine.model.get_output_embeddings(), torch.nn.Linear)
    assert any("the fp32-output product differs by" in m for m in caplog.messages)
