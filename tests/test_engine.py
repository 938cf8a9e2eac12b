"""The step engine against independent oracles: HF generate() and a full no-cache forward per step."""
from __future__ import annotations

import math

import pytest
import torch

from contract.jobs import GenerationParams
from engine.batch import SequenceSpec


def run_alone(engine, prompt, **params):
    return list(engine.steps(prompt, GenerationParams(**params)))


def full_forward_probs(engine, ids, temperature):
    """The notebook's method: run the whole context with no cache, softmax the last logits."""
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0, -1].float()
    return torch.softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)


def test_greedy_equals_hf_generate(tiny_engine):
    prompt = "The cat sat"
    results = run_alone(tiny_engine, prompt, steps=12, top_k=5)
    ids = tiny_engine.tokenize(prompt)
    generated = tiny_engine.model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0,
    )[0, len(ids):].tolist()
    assert [r.step.chosen.id for r in results] == generated
    assert len(set(generated)) > 3, "the oracle is only meaningful if the tiny model's output varies"


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
def test_every_step_matches_a_full_no_cache_forward(tiny_engine, temperature):
    prompt = "Once upon a time"
    results = run_alone(tiny_engine, prompt, steps=10, top_k=8, temperature=temperature, seed=3)
    ids = tiny_engine.tokenize(prompt)
    for r in results:
        probs = full_forward_probs(tiny_engine, ids, temperature)
        expected_p, expected_ids = probs.topk(8)
        assert [t.id for t in r.step.top] == expected_ids.tolist()
        assert [t.prob for t in r.step.top] == pytest.approx(expected_p.tolist(), abs=1e-4)
        assert r.step.chosen.prob == pytest.approx(probs[r.step.chosen.id].item(), abs=1e-4)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum().item()
        assert r.step.entropy == pytest.approx(entropy, abs=1e-3)
        assert r.step.context == tiny_engine.tokenizer.decode(ids, skip_special_tokens=True)
        ids.append(r.step.chosen.id)


def test_top_k_is_respected_and_descending(tiny_engine):
    for k in (1, 3, 17):
        for r in run_alone(tiny_engine, "I want to", steps=3, top_k=k, temperature=1.0, seed=1):
            probs = [t.prob for t in r.step.top]
            assert len(probs) == k
            assert probs == sorted(probs, reverse=True)


def test_indices_and_context_grow_by_one_token(tiny_engine):
    results = run_alone(tiny_engine, "The sun is", steps=5, top_k=2)
    assert [r.step.index for r in results] == [1, 2, 3, 4, 5]
    assert results[-1].finish_reason.value == "length"
    ids = tiny_engine.tokenize("The sun is") + [r.step.chosen.id for r in results]
    assert results[-1].text == tiny_engine.tokenizer.decode(ids, skip_special_tokens=True)
    assert all(r.finish_reason is None for r in results[:-1])


def test_same_seed_same_output_and_seed_matters(tiny_engine):
    a = [r.step.chosen.id for r in run_alone(tiny_engine, "She opened the", steps=15, temperature=1.2, seed=7)]
    b = [r.step.chosen.id for r in run_alone(tiny_engine, "She opened the", steps=15, temperature=1.2, seed=7)]
    c = [r.step.chosen.id for r in run_alone(tiny_engine, "She opened the", steps=15, temperature=1.2, seed=8)]
    assert a == b
    assert a != c


def test_sampling_reports_rank_of_chosen(tiny_engine):
    results = run_alone(tiny_engine, "The cat sat", steps=30, temperature=2.0, seed=5, top_k=50)
    ranks = [r.step.chosen_rank for r in results]
    assert any(rank > 1 for rank in ranks), "high temperature should sometimes pick a non-top token"
    for r in results:
        ids = [t.id for t in r.step.top]
        if r.step.chosen.id in ids:
            assert ids.index(r.step.chosen.id) + 1 == r.step.chosen_rank


def test_tiny_top_p_always_takes_the_most_likely_token(tiny_engine):
    results = run_alone(tiny_engine, "The cat sat", steps=10, temperature=1.5, top_p=1e-6, seed=11)
    assert all(r.step.chosen.id == r.step.top[0].id for r in results)


def test_stops_on_end_of_sequence(tiny_engine):
    first = run_alone(tiny_engine, "The cat sat", steps=3)[1].step.chosen.id  # greedy token of step 2
    batch = tiny_engine.batch(4)
    batch.eos_ids = frozenset({first})
    batch.add(SequenceSpec("a", tiny_engine.tokenize("The cat sat"), GenerationParams(steps=10, seed=0)))
    results = []
    while len(batch):
        results += batch.step()
    assert [r.step.index for r in results] == [1, 2]
    assert results[-1].finish_reason.value == "eos"


def test_resuming_from_stored_steps_gives_the_uninterrupted_result(tiny_engine):
    params = GenerationParams(steps=12, top_k=3, temperature=1.0, seed=21)
    whole = list(tiny_engine.steps("Once upon a time", params))
    ids = tiny_engine.tokenize("Once upon a time") + [r.step.chosen.id for r in whole[:5]]
    batch = tiny_engine.batch(2)
    batch.add(SequenceSpec("job", ids, params, first_index=6))
    resumed = []
    while len(batch):
        resumed += batch.step()
    assert [r.step.index for r in resumed] == list(range(6, 13))
    assert [r.step.chosen.id for r in resumed] == [r.step.chosen.id for r in whole[5:]]
    assert [r.step.context for r in resumed] == [r.step.context for r in whole[5:]]
    for got, want in zip(resumed, whole[5:]):
        assert [t.prob for t in got.step.top] == pytest.approx([t.prob for t in want.step.top], abs=1e-5)


def test_forced_ids_continue_from_the_forced_context(tiny_engine):
    base = run_alone(tiny_engine, "The cat sat", steps=3, top_k=5)
    alternative = base[0].step.top[2].id  # "what if" the third candidate had been chosen at step 1
    branched = list(tiny_engine.steps("The cat sat", GenerationParams(steps=2, top_k=5), forced_ids=(alternative,)))
    forced_context = tiny_engine.tokenize("The cat sat") + [alternative]
    assert branched[0].step.context == tiny_engine.tokenizer.decode(forced_context, skip_special_tokens=True)
    assert branched[0].step.index == 1


def test_batched_jobs_equal_the_same_jobs_alone(tiny_engine):
    """Different prompt lengths, joining at different steps, mixed greedy and sampled: same steps as alone."""
    jobs = [
        ("a", "The cat sat", GenerationParams(steps=9, top_k=5, seed=1)),
        ("b", "Once upon a time there was a small house", GenerationParams(steps=7, top_k=5, temperature=0.8, seed=2)),
        ("c", "I", GenerationParams(steps=6, top_k=5, seed=3)),
        ("d", "She opened the door and saw", GenerationParams(steps=8, top_k=5, temperature=1.3, top_p=0.9, seed=4)),
    ]
    join_at = {"a": 0, "b": 0, "c": 2, "d": 4}  # batch step at which each job is added
    alone = {key: list(tiny_engine.steps(prompt, params)) for key, prompt, params in jobs}

    batch = tiny_engine.batch(8)
    together: dict[str, list] = {key: [] for key, _, _ in jobs}
    tick = 0
    while tick < 3 or len(batch):
        for key, prompt, params in jobs:
            if join_at[key] == tick:
                batch.add(SequenceSpec(key, tiny_engine.tokenize(prompt), params))
        for result in batch.step():
            together[result.key].append(result)
        tick += 1
        if tick == 3:  # a job leaving mid-batch must not disturb the others
            batch.drop("c")
            together["c"].clear()
            batch.add(SequenceSpec("c", tiny_engine.tokenize("I"), jobs[2][2]))

    for key, _, _ in jobs:
        got, want = together[key], alone[key]
        assert [r.step.chosen.id for r in got] == [r.step.chosen.id for r in want], key
        for g, w in zip(got, want):
            assert [t.id for t in g.step.top] == [t.id for t in w.step.top]
            for gp, wp in zip(g.step.top, w.step.top):
                assert math.isclose(gp.prob, wp.prob, abs_tol=1e-3)
        assert got[-1].text == want[-1].text
