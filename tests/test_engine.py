"""The step engine against independent oracles: HF generate() and a full no-cache forward per step."""
from __future__ import annotations


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


# -- the reference loop, every family, the cache choice ------------------------------------------------------

import logging  # noqa: E402

from engine import reference  # noqa: E402
from engine.batch import pick_cache  # noqa: E402
from engine.step_engine import StepEngine  # noqa: E402
from tests.tiny_families import FAMILIES, tiny_family_model  # noqa: E402

JOBS = [
    ("a", "The cat sat", GenerationParams(steps=9, top_k=5, seed=1)),
    ("b", "Once upon a time there was a small house", GenerationParams(steps=7, top_k=5, temperature=0.8, seed=2)),
    ("c", "I", GenerationParams(steps=6, top_k=5, seed=3)),
    ("d", "She opened the door and saw", GenerationParams(steps=8, top_k=5, temperature=1.3, top_p=0.9, seed=4)),
]


def drain(batch, specs):
    """Add specs, step until empty; results per key."""
    out: dict[str, list] = {}
    for spec in specs:
        batch.add(spec)
    while len(batch):
        for r in batch.step():
            out.setdefault(r.key, []).append(r)
    return out


def batched_vs_alone(engine, jobs=JOBS, **batch_args):
    """Each job alone, and all together (joining at different steps, one dropped and re-added): results per key."""
    def fresh(n):
        batch = engine.batch(n, **batch_args)
        batch.eos_ids = frozenset()  # random models: every job runs its full length
        return batch

    alone = {key: drain(fresh(1), [SequenceSpec(key, engine.tokenize(p), params)])[key] for key, p, params in jobs}
    batch = fresh(8)
    join_at = {"a": 0, "b": 0, "c": 2, "d": 4}
    together: dict[str, list] = {key: [] for key, _, _ in jobs}
    tick = 0
    while tick < 3 or len(batch):
        for key, prompt, params in jobs:
            if join_at[key] == tick:
                batch.add(SequenceSpec(key, engine.tokenize(prompt), params))
        for result in batch.step():
            together[result.key].append(result)
        tick += 1
        if tick == 3:  # a job leaving mid-batch must not disturb the others
            batch.drop("c")
            together["c"].clear()
            batch.add(SequenceSpec("c", engine.tokenize("I"), jobs[2][2]))
    return alone, together


def assert_same_steps(got, want, tol=1e-4):
    assert [r.chosen_id for r in got] == [r.chosen_id for r in want]
    for g, w in zip(got, want):
        assert g.top_ids == w.top_ids
        assert g.top_probs == pytest.approx(w.top_probs, abs=tol)
        assert g.step.context == w.step.context
    assert got[-1].text == want[-1].text


def test_batched_jobs_equal_the_same_jobs_alone(tiny_engine):
    """Different prompt lengths, joining at different steps, one leaving mid-batch, mixed greedy and sampled."""
    alone, together = batched_vs_alone(tiny_engine)
    for key, _, _ in JOBS:
        assert_same_steps(together[key], alone[key])


def test_steps_match_the_reference_loop(tiny_engine):
    """engine/reference.py, the loop written plainly, is an oracle for greedy and whole-vocabulary sampling."""
    ids = tiny_engine.tokenize("Once upon a time")
    for temperature in (0.0, 0.9):
        want = reference.generate(tiny_engine.model, ids, 10, temperature=temperature, seed=5)
        got = run_alone(tiny_engine, "Once upon a time", steps=10, top_k=4, temperature=temperature, seed=5)
        assert [r.chosen_id for r in got] == [t for t, _ in want]
        for r, (_, probs) in zip(got, want):
            assert r.top_probs == pytest.approx(probs.topk(4).values.tolist(), abs=1e-5)
            assert r.chosen_prob == pytest.approx(probs[r.chosen_id].item(), abs=1e-5)
    assert len({t for t, _ in want}) > 3


@pytest.fixture(scope="module")
def family_engines(tiny_engine):
    tok = tiny_engine.tokenizer
    return {name: StepEngine(tiny_family_model(name, len(tok), tok.eos_token_id), tok, name) for name in FAMILIES}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_batches_on_the_slot_cache_and_matches_its_oracles(family_engines, family):
    """Per family: the slot cache is chosen; batched == alone; greedy == generate; steps == the reference loop."""
    engine = family_engines[family]
    assert engine.cache_kind == "static"
    alone, together = batched_vs_alone(engine)
    for key, _, _ in JOBS:
        assert_same_steps(together[key], alone[key])
    ids = engine.tokenize("Once upon a time there was")
    generated = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy = alone_steps(engine, ids, GenerationParams(steps=10, top_k=3, seed=0))
    assert [r.chosen_id for r in greedy] == generated[0, len(ids):].tolist()
    sampled = alone_steps(engine, ids, GenerationParams(steps=10, top_k=3, temperature=1.0, seed=9))
    assert [r.chosen_id for r in sampled] == [t for t, _ in reference.generate(engine.model, ids, 10, 1.0, 9)]


def alone_steps(engine, ids, params):
    batch = engine.batch(1)
    batch.eos_ids = frozenset()
    return drain(batch, [SequenceSpec("x", ids, params)])["x"]


def test_padded_fallback_still_batches_exactly(tiny_engine):
    """The left-padded cache (the fallback) keeps batched == alone."""
    alone, together = batched_vs_alone(tiny_engine, cache_kind="padded")
    for key, _, _ in JOBS:
        assert_same_steps(together[key], alone[key])


def test_a_family_the_slot_cache_cannot_serve_falls_back_at_load_and_says_so(tiny_engine, caplog):
    """Falcon with ALiBi builds its bias from a 2D mask: the probe rejects the slot cache, the padded one serves it."""
    config_class, model_class, shape = FAMILIES["falcon"]
    tok = tiny_engine.tokenizer
    config = config_class(vocab_size=len(tok), eos_token_id=tok.eos_token_id, alibi=True, **shape)
    torch.manual_seed(0)
    engine = StepEngine(model_class(config).eval(), tok, "falcon-alibi")
    with caplog.at_level(logging.INFO, logger="engine.step_engine"):
        assert engine.cache_kind == "padded"
    assert any("falcon-alibi: batch cache padded (slot cache unsupported" in m for m in caplog.messages)
    assert isinstance(engine.batch(2).backend, type(tiny_engine.batch(2, cache_kind="padded").backend))
    alone, together = batched_vs_alone(engine)
    for key, _, _ in JOBS:
        assert_same_steps(together[key], alone[key])


def test_the_tiny_model_is_served_by_the_slot_cache_chosen_at_load(tiny_model_dir, caplog):
    from engine.loading import load_engine

    with caplog.at_level(logging.INFO, logger="engine.step_engine"):
        engine = load_engine(str(tiny_model_dir), "cpu")
    assert engine._cache_kind == "static"  # decided during load, not at the first batch
    assert any("batch cache static (slot cache matches a full forward)" in m for m in caplog.messages)
    assert pick_cache(engine.model)[0] == "static"


# -- text: incremental contexts, readable candidates ------------------------------------------------------------

MULTIBYTE = "Ça 日本語 🙂👍🏽 — ok"


def test_every_context_equals_a_full_decode_even_mid_character(tiny_engine):
    """Forced byte-level tokens split multi-byte characters; each context (and its edit) is exact."""
    tok = tiny_engine.tokenizer
    forced = tuple(tok(MULTIBYTE, add_special_tokens=False)["input_ids"])
    assert any("\ufffd" in tok.decode(forced[:i]) for i in range(1, len(forced))), "the text must split characters"
    prompt = tiny_engine.tokenize("The cat")
    hot = GenerationParams(steps=60, top_k=3, temperature=3.0, seed=13)  # random bytes, often broken characters
    specs = [SequenceSpec("forced", prompt, GenerationParams(steps=len(forced), top_k=3, seed=0), forced_next=forced),
             SequenceSpec("hot", prompt, hot)]
    batch = tiny_engine.batch(4)
    batch.eos_ids = frozenset()
    results = drain(batch, specs)
    for key, spec in zip(("forced", "hot"), specs):
        ids, previous = list(spec.ids), None
        for r in results[key]:
            assert r.context == tok.decode(ids, skip_special_tokens=True)
            keep, tail = r.context_edit
            if previous is None:
                assert keep == 0 and tail == r.context
            else:
                assert previous[:keep] + tail == r.context
            previous = r.context
            ids.append(r.chosen_id)
        assert results[key][-1].text == tok.decode(ids, skip_special_tokens=True)
    assert results["forced"][-1].text.endswith(MULTIBYTE)



def test_a_context_resumed_mid_character_stays_exact_at_every_cut(tiny_engine):
    """A resumed job's context may start inside a character; every later context (and edit) is still exact."""
    from engine.text import Decoder

    tok = tiny_engine.tokenizer
    # byte-level symbols: two stray lead bytes (0xC3), another (0xD2), "u", then 0xC8 0xA8 = "\u0228", "X"
    bytes_ = tok.convert_tokens_to_ids(["\u00c3", "\u00c3", "\u00d2", "u", "\u00c8", "\u00a8", "X"])
    ids = list(tok("The cat sat tay", add_special_tokens=False)["input_ids"]) + bytes_
    ids += list(tok(", \u65e5\u672c\U0001f642 \u00c7a va", add_special_tokens=False)["input_ids"])
    assert_every_cut_appends_exactly(Decoder(tok), ids)


def assert_every_cut_appends_exactly(decoder, ids: list[int]) -> None:
    """From every cut of `ids` (a resumed row), each appended token keeps the text equal to a full decode, and
    each edit turns the old text into the new."""
    tok = decoder.tokenizer
    for cut in range(1, len(ids)):
        row = decoder.row(ids[:cut])
        for n in range(cut, len(ids)):
            old = row.text
            keep, tail = row.append(ids[n])
            want = tok.decode(ids[: n + 1], skip_special_tokens=True)
            assert row.text == want and old[:keep] + tail == want, (cut, n)


def sentencepiece_style_tokenizer():
    """A tokenizer decoded as Llama-2, Mistral and Phi-3 tokenizers are: "▁" is a space, byte tokens, and the
    sequence's first space stripped. Built offline from a hand-made vocabulary (decoding needs no merges)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + ["▁The", "▁cat", "▁sat", "▁on", "▁the"]
    model = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[], unk_token="<unk>",
                                 byte_fallback=True))
    model.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    model.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("chosen", [["▁sat", "</s>", "▁on", "▁the"], ["<0x20>", "<0xE2>", "▁on"],
                                    ["<0x41>", "<s>", "<0xE2>", "▁on"]])
def test_a_token_that_shows_nothing_alone_keeps_the_next_ones_context_exact(chosen):
    """A skipped special token, or a space its decoder strips when it comes first, decodes to nothing alone, so it
    cannot be the left context of the next token's window. Before, "The cat sat</s> on" read "The cat saton"."""
    from engine.text import Decoder

    tok = sentencepiece_style_tokenizer()
    decoder = Decoder(tok)
    assert decoder.incremental and not decoder.byte_level
    assert_every_cut_appends_exactly(decoder, tok.convert_tokens_to_ids(["▁The", "▁cat"] + chosen))


def test_a_candidate_holding_part_of_a_character_shows_its_bytes(tiny_engine):
    tok = tiny_engine.tokenizer
    batch = tiny_engine.batch(1)
    partial = [i for i in range(len(tok)) if "\ufffd" in tok.decode([i])]
    assert partial, "the byte-level vocabulary has tokens that are parts of characters"
    for i in partial:
        text = batch.token_text(i)
        assert "\ufffd" not in text and "<0x" in text
    e2 = tok.convert_tokens_to_ids("â")  # byte 0xE2 in byte-level BPE's alphabet
    assert batch.token_text(e2) == "<0xE2>"
    whole = tok.convert_tokens_to_ids("Ġthe") if "Ġthe" in tok.get_vocab() else tok("the")["input_ids"][0]
    assert batch.token_text(whole) == tok.decode([whole])
    assert tiny_engine.pieces([e2])[0]["token"] == "<0xE2>"


# -- forced tokens (scoring), resumable specs ---------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_forced_steps_report_the_forced_token_with_its_probability_and_rank(tiny_engine, temperature):
    prompt = tiny_engine.tokenize("Once upon a time")
    forced = tuple(tiny_engine.tokenize(" the cat sat on the mat")[:6])
    params = GenerationParams(steps=20, top_k=5, temperature=temperature, seed=2)
    batch = tiny_engine.batch(4)
    batch.add(SequenceSpec("other", tiny_engine.tokenize("I want"), GenerationParams(steps=3, seed=1)))
    results = drain(batch, [SequenceSpec("s", prompt, params, forced_next=forced)])["s"]
    assert [r.chosen_id for r in results] == list(forced)  # ends after len(forced_next) steps, not params.steps
    assert results[-1].finish_reason.value == "length"
    ids = list(prompt)
    for r in results:
        probs = full_forward_probs(tiny_engine, ids, temperature)
        assert r.forced
        assert r.chosen_prob == pytest.approx(probs[r.chosen_id].item(), abs=1e-4)
        assert r.chosen_rank == int((probs > probs[r.chosen_id]).sum()) + 1
        assert r.step.chosen.id == r.chosen_id and r.step.chosen_rank == r.chosen_rank
        ids.append(r.chosen_id)
    resumed = drain(tiny_engine.batch(2), [SequenceSpec("s", ids[:len(prompt) + 2], params, 3, forced)])["s"]
    assert [r.chosen_id for r in resumed] == list(forced[2:])  # a resumed spec takes forced_next[n] at step n + 1
    assert [r.chosen_prob for r in resumed] == pytest.approx([r.chosen_prob for r in results[2:]], abs=1e-5)


def test_forced_steps_stop_at_params_steps_and_unforced_rows_say_so(tiny_engine):
    prompt = tiny_engine.tokenize("The sun")
    forced = tuple(tiny_engine.tokenize(" is bright today and"))
    results = drain(tiny_engine.batch(2), [SequenceSpec("s", prompt, GenerationParams(steps=2, seed=0),
                                                        forced_next=forced)])["s"]
    assert [r.chosen_id for r in results] == list(forced[:2])
    assert not run_alone(tiny_engine, "The sun", steps=2)[0].forced


def test_spec_of_moves_a_job_to_another_batch_without_changing_it(tiny_engine):
    params = GenerationParams(steps=10, top_k=3, temperature=1.1, seed=4)
    whole = run_alone(tiny_engine, "She opened the", steps=10, top_k=3, temperature=1.1, seed=4)
    first = tiny_engine.batch(3)
    first.add(SequenceSpec("j", tiny_engine.tokenize("She opened the"), params))
    got = [r for _ in range(4) for r in first.step()]
    spec = first.spec_of("j")
    assert spec.first_index == 5 and spec.ids[-4:] == [r.chosen_id for r in got]
    first.drop("j")
    assert first.spec_of("j") is None and len(first) == 0
    got += drain(tiny_engine.batch(2), [spec])["j"]
    assert_same_steps(got, whole)


# -- the fixed-shape decode step that CUDA graphs capture ------------------------------------------------------

from engine.batch import FREE_SLOT  # noqa: E402
from engine.sampling import pack_choices, pack_choices_fixed, step_uniform  # noqa: E402


def test_fixed_shape_choice_equals_the_eager_choice():
    """The graph's sampler (no host decisions) picks exactly what the eager one picks, row by row."""
    gen = torch.Generator().manual_seed(0)
    rows, vocab, k = 12, 3000, 5
    logits = torch.randn(rows, vocab, generator=gen) * 4
    logits[3] = torch.randn(vocab, generator=gen) * 0.01  # flat: its nucleus reaches past the candidates
    temperature = [0.0, 0.8, 1.3, 1.0, 0.5, 2.0, 0.0, 0.9, 1.0, 1.0, 0.7, 0.0]
    top_p = [1.0, 1.0, 0.9, 0.95, 0.5, 1.0, 0.3, 0.99, 1.0, 0.8, 1.0, 1.0]
    uniform = [step_uniform(7, i) for i in range(rows)]
    forced = [-1] * rows
    forced[8], forced[11] = 17, 2999
    eager = pack_choices(logits, temperature, top_p, uniform, forced, k)
    fixed = pack_choices_fixed(logits, torch.tensor(temperature), torch.tensor(top_p),
                               torch.tensor(uniform, dtype=torch.float64), torch.tensor(forced), k)
    short = fixed[:, -1].bool().tolist()
    assert short == [i == 3 for i in range(rows)]  # only the flat nucleus row is flagged, to be redone eagerly
    keep = [i for i in range(rows) if not short[i]]
    assert torch.equal(fixed[keep, :-1], eager[keep, :-1])


def test_a_greedy_row_takes_the_lowest_id_among_tied_top_tokens_whatever_its_batch_shows():
    """As torch.argmax and so `generate` do. Before, it took the first of the batch's top-k, whose order among ties
    changed with k (the most candidates any row of the batch shows), so a batch-mate could change a greedy job."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 4096, generator=gen)
    logits[0, 7] = logits[0, 3] = logits.max() + 2  # an exact tie at the top (bf16 logits tie often)
    for k in (1, 2, 10, 50):
        assert int(pack_choices(logits, [0.0], [1.0], [0.0], [-1], k)[0, 2 * k]) == 3
    fixed = pack_choices_fixed(logits, torch.tensor([0.0]), torch.tensor([1.0]), torch.zeros(1, dtype=torch.float64),
                               torch.tensor([-1]), 50)
    assert int(fixed[0, 100]) == 3


def test_a_nucleus_row_draws_the_same_token_whether_or_not_a_batch_mate_needs_a_full_sort(monkeypatch):
    """A flat batch-mate whose nucleus outruns the candidates is sorted whole; the other rows keep their candidates.
    Before, every row of the call was sorted whole then, and tied tokens came out in another order."""
    monkeypatch.setattr("engine.sampling.NUCLEUS_CANDIDATES", 32)
    gen = torch.Generator().manual_seed(6)
    peaked = torch.randn(1, 300, generator=gen)
    peaked[0, 40:60] = 6.0  # 20 tied tokens hold most of the mass
    flat = torch.randn(1, 300, generator=gen) * 0.01
    for i in range(40):
        u = step_uniform(9, i)
        alone = pack_choices(peaked, [1.0], [0.9], [u], [-1], 3)
        together = pack_choices(torch.cat([peaked, flat]), [1.0, 1.0], [0.9, 0.95], [u, u], [-1, -1], 3)
        assert together[0, 6] == alone[0, 6], f"draw {i}"


class EagerAsGraph:
    """A stand-in graph runner for CPU: replays the fixed step eagerly, optionally corrupting it.

    Like CudaGraphs it first runs every bucket's step on whatever inputs are staged (its warm-up).
    """

    def __init__(self, step, grid, width, corrupt=None):
        self.step, self.corrupt, self.runs, self.logits = step, corrupt, 0, {}
        self.pending = None  # the bucket launched and not yet waited for
        for bucket in sorted(grid, reverse=True):
            step(bucket)

    def launch(self, b):
        assert self.pending is None, "launched twice without waiting"
        self.runs += 1
        packed, self.logits[b] = self.step(b)  # computed now, from the inputs staged before the launch
        out = packed.cpu()
        self.out, self.pending = (self.corrupt(out) if self.corrupt else out), b

    def wait(self, b):
        assert self.pending == b, f"waited for bucket {b}, launched {self.pending}"
        self.pending = None
        return self.out


def recording_graphs():
    """A graph factory for BatchEngine that keeps every EagerAsGraph it makes: (factory, runners)."""
    runners = []

    def factory(step, grid, width):
        runners.append(EagerAsGraph(step, grid, width))
        return runners[-1]

    return factory, runners


def test_checked_graph_runner_serves_steps_that_equal_eager_ones(tiny_engine, caplog):
    """The graph path (fixed shapes, full-width mask, bucket padding, staged inputs) gives the eager results."""
    factory, runners = recording_graphs()

    with caplog.at_level(logging.INFO, logger="engine.batch"):
        alone, together = batched_vs_alone(tiny_engine, graphs=factory)
    assert runners and all(tiny_engine.batch(2, graphs=factory).graphs_on for _ in [0])
    assert any("CUDA graphs on" in m for m in caplog.messages)
    eager_alone, _ = batched_vs_alone(tiny_engine, graphs=False)
    for key, _, _ in JOBS:
        assert_same_steps(together[key], alone[key])
        assert_same_steps(together[key], eager_alone[key])
    assert runners[-1].runs > 0


@pytest.mark.parametrize("fault", ["probabilities", "tokens", "capture"])
def test_a_graph_that_fails_its_self_check_never_serves_a_step(tiny_engine, caplog, fault):
    def corrupt(out):
        out = out.clone()
        if fault == "probabilities":
            out[:, 0] += 1e-3
        else:
            out[:, 10] += 1  # the first candidate's id (packed after the max_top_k = 10 probabilities)
        return out

    def factory(step, sizes, width):
        if fault == "capture":
            raise RuntimeError("operation not permitted when stream is capturing")
        return EagerAsGraph(step, sizes, width, corrupt)

    with caplog.at_level(logging.WARNING, logger="engine.batch"):
        batch = tiny_engine.batch(4, graphs=factory, max_top_k=10)
    assert not batch.graphs_on
    reason = {"probabilities": "probabilities differ", "tokens": "different tokens", "capture": "capture failed"}[fault]
    assert any("CUDA graphs off, running eagerly" in m and reason in m for m in caplog.messages)
    batch.eos_ids = frozenset()
    got = drain(batch, [SequenceSpec("a", tiny_engine.tokenize("The cat sat"), JOBS[0][2])])["a"]
    assert_same_steps(got, run_alone(tiny_engine, "The cat sat", steps=9, top_k=5, seed=1))


def test_the_fixed_choice_gives_valid_ids_for_any_staged_inputs_even_top_p_zero():
    """A graph's warm-up runs whatever is staged; an index of -1 is a device-side assert that kills the GPU context.

    Found on the first H200 run: the staging started as zeros, so top_p 0 kept no candidate.
    """
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(5))
    zeros = torch.zeros(4)
    packed = pack_choices_fixed(logits, torch.tensor([0.0, 0.8, 1.0, 2.0]), zeros, zeros.double(),
                                torch.full((4,), -1), 5)
    chosen = packed[:, 10].long()
    assert chosen[0] == logits[0].argmax()  # greedy ignores top_p
    assert chosen[1:].tolist() == logits[1:].argmax(-1).tolist()  # an empty nucleus falls back to the top token


def test_a_batch_stages_free_slot_inputs_before_any_graph_warms_up(tiny_engine):
    """What a graph's warm-up sees before the first job: every column a free slot (greedy, top_p 1, unforced)."""
    seen = []

    def factory(step, sizes, width):
        seen.append(step.__self__._inputs.clone())
        return EagerAsGraph(step, sizes, width)

    batch = tiny_engine.batch(4, graphs=factory, max_top_k=10)
    assert batch.graphs_on
    assert seen[0].tolist() == [[float(v)] * 4 for v in FREE_SLOT]


def test_a_capture_that_leaves_the_gpu_unusable_stops_the_engine_instead_of_running_eagerly(tiny_engine,
                                                                                           monkeypatch):
    """After a device-side assert nothing runs on that GPU: 'run eagerly' would only fail every step after."""
    monkeypatch.setattr("engine.graphs.device_error", lambda device: "AcceleratorError: device-side assert triggered")

    def factory(step, sizes, width):
        raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(RuntimeError, match="unable to run anything .*device-side assert.* until the process restarts"):
        tiny_engine.batch(4, graphs=factory, max_top_k=10)


def test_with_graphs_the_next_decode_is_on_its_way_when_step_returns(tiny_engine):
    """The device computes step n + 1 while the caller stores step n (the worker's Redis write overlaps it)."""
    factory, runners = recording_graphs()

    batch = tiny_engine.batch(2, graphs=factory, max_top_k=10)
    batch.eos_ids = frozenset()
    batch.add(SequenceSpec("a", tiny_engine.tokenize("The cat sat"), GenerationParams(steps=3, top_k=5, seed=1)))
    in_flight = []
    for _ in range(3):
        assert len(batch.step()) == 1
        in_flight.append(runners[0].pending)
    assert in_flight == [(1, 64), (1, 64), None]  # after steps 1 and 2 the next decode is launched; after the last, none


def test_a_graph_decode_reads_only_the_keys_its_rows_have_reached(tiny_engine):
    """A worker's slots hold MAX_PROMPT_TOKENS + MAX_STEPS positions; a decode that attended to all of them took
    twice as long for 256 jobs on an H200 as one attending to the 160 the jobs had reached."""
    factory, runners = recording_graphs()

    batch = tiny_engine.batch(2, max_length=500, graphs=factory, max_top_k=10)
    batch.eos_ids = frozenset()
    prompt = tiny_engine.tokenize("The cat sat on the mat and looked at the dog " * 5)[:60]
    batch.add(SequenceSpec("a", prompt, GenerationParams(steps=8, top_k=5, seed=1)))
    launched = []
    for _ in range(8):
        batch.step()
        launched.append(runners[0].pending)
    # after step n the decode feeds the token at position 59 + n: 64 keys hold it up to n = 4, then 128
    assert launched == [(1, 64)] * 4 + [(1, 128)] * 3 + [None]


def test_a_job_crossing_key_buckets_with_graphs_equals_the_job_alone(tiny_engine):
    factory, runners = recording_graphs()

    ids = tiny_engine.tokenize("The cat sat on the mat and looked at the dog " * 5)[:58]
    params = GenerationParams(steps=80, top_k=5, temperature=0.9, seed=3)
    batch = tiny_engine.batch(3, max_length=300, graphs=factory, max_top_k=10)
    batch.eos_ids = frozenset()
    together = drain(batch, [SequenceSpec("long", ids, params),
                             SequenceSpec("short", tiny_engine.tokenize("Hi"), GenerationParams(steps=5, seed=4))])
    alone = tiny_engine.batch(1, max_length=300, graphs=False)
    alone.eos_ids = frozenset()
    want = drain(alone, [SequenceSpec("long", ids, params)])["long"]
    assert {b[1] for b in runners[0].logits} >= {64, 128, 256}  # every key bucket the job passed through ran
    assert_same_steps(together["long"], want)


def test_the_next_decode_is_launched_with_the_chosen_tokens_before_the_host_records_them(tiny_engine):
    """The device's next step overlaps the engine's own per-row work, not only the caller's."""
    seen = []

    class Watching(EagerAsGraph):
        def launch(self, b):
            batch = self.step.__self__
            seen.append((int(batch._inputs[0, 0]), batch.text_of("a")))
            super().launch(b)

    batch = tiny_engine.batch(2, graphs=lambda step, sizes, width: Watching(step, sizes, width))
    batch.eos_ids = frozenset()
    seen.clear()  # the self-check's launches
    batch.add(SequenceSpec("a", tiny_engine.tokenize("The cat sat"), GenerationParams(steps=4, top_k=5, seed=1)))
    results = [batch.step()[0] for _ in range(4)]
    assert [token for token, _ in seen] == [r.chosen_id for r in results[:3]]
    assert [text for _, text in seen] == [r.context for r in results[:3]]  # the chosen token not yet appended


def test_graph_rows_that_fill_their_slot_exactly_never_decode_past_it(tiny_engine):
    """A row's last step launches no decode at the position after it, which lies past its slot."""
    prompt = tiny_engine.tokenize("The cat sat")
    params = GenerationParams(steps=6, top_k=3, seed=1)
    specs = [SequenceSpec("a", prompt, params), SequenceSpec("b", prompt, GenerationParams(steps=3, top_k=3, seed=2))]
    length = len(prompt) + params.steps - 1
    batch = tiny_engine.batch(2, max_length=length, graphs=lambda step, sizes, width: EagerAsGraph(step, sizes, width))
    assert batch.backend.length == length and batch.graphs_on
    batch.eos_ids = frozenset()
    eager = tiny_engine.batch(2, max_length=length, graphs=False)
    eager.eos_ids = frozenset()
    graph, want = drain(batch, specs), drain(eager, specs)
    for key in ("a", "b"):
        assert_same_steps(graph[key], want[key])


def test_scored_tokens_through_the_graph_path_equal_the_eager_path(tiny_engine):
    """Forced tokens are staged for the step the graph runs next, as the eager step takes them."""
    forced = tiny_engine.tokenize(" on the mat and then slept")
    specs = [SequenceSpec("s", tiny_engine.tokenize("The cat sat"),
                          GenerationParams(steps=len(forced), top_k=3, temperature=0.8, seed=2), forced_next=forced),
             SequenceSpec("o", tiny_engine.tokenize("Once upon a time"),
                          GenerationParams(steps=6, top_k=3, temperature=0.9, seed=3))]
    graph = drain(tiny_engine.batch(4, graphs=lambda step, sizes, width: EagerAsGraph(step, sizes, width)), specs)
    eager = drain(tiny_engine.batch(4, graphs=False), specs)
    assert [r.chosen_id for r in graph["s"]] == list(forced)
    for key in ("s", "o"):
        assert_same_steps(graph[key], eager[key])


def test_graph_rows_whose_nucleus_outruns_the_candidates_are_redone_eagerly(tiny_engine, monkeypatch):
    monkeypatch.setattr("engine.sampling.NUCLEUS_CANDIDATES", 4)  # most nuclei at T = 2 now reach past them
    params = GenerationParams(steps=8, top_k=3, temperature=2.0, top_p=0.95, seed=6)
    spec = SequenceSpec("n", tiny_engine.tokenize("The cat sat"), params)
    flagged = []

    class Counting(EagerAsGraph):
        def wait(self, b):
            out = super().wait(b)
            flagged.append(int(out[:, -1].sum()))
            return out

    batch = tiny_engine.batch(2, graphs=lambda step, sizes, width: Counting(step, sizes, width), max_top_k=3)
    flagged.clear()  # the self-check's runs
    graph = drain(batch, [spec])
    eager = drain(tiny_engine.batch(2, graphs=False), [spec])
    assert sum(flagged) > 0  # the redo ran
    assert_same_steps(graph["n"], eager["n"])


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_bf16_on_cpu_batched_equals_alone_bit_for_bit(tiny_engine, family):
    """Holds for these two tiny models on CPU (the padded cache broke it), not promised in bf16 (README: Batch
    invariance): tiny Phi-3, whose bf16 logits tie, takes a path on which one job batched moves a probability by a
    rounding step (0.19 alone, 0.189999 batched)."""
    tok = tiny_engine.tokenizer
    engine = StepEngine(tiny_family_model(family, len(tok), tok.eos_token_id, torch.bfloat16), tok, family)
    assert engine.cache_kind == "static"
    alone, together = batched_vs_alone(engine)
    for key, _, _ in JOBS:
        assert [r.chosen_id for r in together[key]] == [r.chosen_id for r in alone[key]]
        assert [r.top_probs for r in together[key]] == [r.top_probs for r in alone[key]]  # exactly equal


@pytest.mark.parametrize("family", ["llama", "mistral", "phi3"])
def test_bf16_on_cpu_greedy_equals_generate(tiny_engine, family):
    """bf16 logits tie often: a greedy step takes the lowest id among the tied, as `generate` does."""
    tok = tiny_engine.tokenizer
    engine = StepEngine(tiny_family_model(family, len(tok), tok.eos_token_id, torch.bfloat16), tok, family)
    ids = engine.tokenize("Once upon a time there was")
    generated = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy = alone_steps(engine, ids, GenerationParams(steps=24, top_k=3, seed=0))
    assert [r.chosen_id for r in greedy] == generated[0, len(ids):].tolist()


def test_bf16_the_same_jobs_joining_a_batch_the_same_way_give_the_same_steps_bit_for_bit(tiny_engine):
    """What bf16 promises everywhere (README: Batch invariance): a replayed batch repeats itself exactly."""
    tok = tiny_engine.tokenizer
    engine = StepEngine(tiny_family_model("llama", len(tok), tok.eos_token_id, torch.bfloat16), tok, "llama")
    _, first = batched_vs_alone(engine)
    _, again = batched_vs_alone(engine)
    for key, _, _ in JOBS:
        assert [(r.chosen_id, r.top_ids, r.top_probs, r.entropy) for r in first[key]] == \
               [(r.chosen_id, r.top_ids, r.top_probs, r.entropy) for r in again[key]]


def test_every_slots_draw_at_once_equals_the_draw_of_each_alone():
    """The batch draws all slots' (seed, step) numbers in numpy's wrapping uint64: each equals step_uniform's."""
    import numpy as np

    from engine.sampling import step_uniforms

    gen = torch.Generator().manual_seed(3)
    seeds = torch.randint(0, 2**62, (1000,), generator=gen).tolist() + [0, 1, 2**63 - 1, 2**64 - 1]
    steps = torch.randint(1, 10**6, (len(seeds),), generator=gen).tolist()
    got = step_uniforms(np.array(seeds, dtype=np.uint64), np.array(steps, dtype=np.int64)).tolist()
    assert got == [step_uniform(s, i) for s, i in zip(seeds, steps)]


def test_a_batch_where_every_row_samples_chooses_what_a_mixed_batch_and_each_row_alone_choose():
    """Every row sampling skips the (B, V) row copies; the choices must not change with it."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 300, generator=gen) * 3
    temperature = [0.8, 1.0, 1.5, 0.8, 2.0, 0.7]
    uniform = [step_uniform(seed, 3) for seed in range(6)]
    for top_p in ([1.0] * 6, [1.0, 0.9, 1.0, 0.5, 1.0, 0.95]):
        together = pack_choices(logits, temperature, top_p, uniform, [-1] * 6, 5)
        alone = torch.cat([pack_choices(logits[i:i + 1], temperature[i:i + 1], top_p[i:i + 1], uniform[i:i + 1],
                                        [-1], 5) for i in range(6)])
        with_greedy = pack_choices(torch.cat([logits, logits[:1]]), temperature + [0.0], top_p + [1.0],
                                   uniform + [0.0], [-1] * 7, 5)[:6]
        assert torch.equal(together, alone) and torch.equal(together, with_greedy)


def test_special_token_text_typed_in_a_prompt_is_read_as_text(tiny_engine):
    """A student who typed "<|endoftext|>" got the control token: their text vanished from every context shown."""
    typed = "The cat<|endoftext|> sat"
    ids = tiny_engine.tokenize(typed)
    assert tiny_engine.tokenizer.decode(ids, skip_special_tokens=True) == typed
