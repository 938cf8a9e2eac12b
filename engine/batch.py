"""BatchEngine: advance many independent generations by one token per batched forward pass.

Continuous batching over a static slot KV cache (engine.slots): each job owns a slot and its
own position; a joining job is prefilled into a free slot and a leaving one frees its slot.
Models the slot cache can't serve use the left-padded cache (engine.padded), chosen at load by
`pick_cache` and logged. Each row has its own sampling parameters and its own (seed, step)-keyed
random draws, so a sequence's steps do not depend on what else shares the batch.

`engine/reference.py` is the same loop for one sequence, written plainly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from contract.jobs import FinishReason, GenerationParams, Step, TokenProb
from engine import graphs as cuda_graphs
from engine.padded import PaddedBackend
from engine.sampling import pack_choices, pack_choices_fixed, step_uniform, step_uniforms
from engine.slots import SlotBackend, Unsupported
from engine.text import Decoder, RowText

log = logging.getLogger(__name__)
DEFAULT_LENGTH = 2048  # slot length when the caller gives none (capped by the model's positions)
_MASK64 = (1 << 64) - 1
# the staged decode inputs of a free slot (token, position, temperature, top_p, uniform, forced): greedy, unforced
FREE_SLOT = (0, 0, 0.0, 1.0, 0.0, -1)
GraphFactory = Callable[[cuda_graphs.Step, list, int], cuda_graphs.GraphRunner]


@dataclass(frozen=True)
class SequenceSpec:
    """A generation to run.

    Attributes:
        key: caller's id for it (the job id).
        ids: context token ids so far (prompt, forced ids, and on resume the tokens already generated).
        params: sampling parameters; `seed` must be set.
        first_index: number of the next step (1, or n + 1 when resuming after n stored steps).
        forced_next: scoring: forced_next[j] is the token taken at step j + 1 (absolute, so a resumed
            spec keeps the same tuple); the sequence ends after len(forced_next) steps at most.
        draw_offset: tokens this sequence continues after (a branch's forced ids): step n samples with the
            draw of (seed, draw_offset + n), so a branch that forces its parent's own tokens continues as it.
    """

    key: str
    ids: list[int]
    params: GenerationParams
    first_index: int = 1
    forced_next: tuple[int, ...] = ()
    draw_offset: int = 0


class StepResult:
    """One step of one sequence; `finish_reason` and `text` are set on its last step.

    The candidates stay where the device put them: row `row` of the part's packed host array
    (probs in columns [0, k), ids in [k, 2k), see engine.sampling), so a writer can cut a whole
    batch's records at once; `top_ids` and `top_probs` read the row's first `shown` of them.
    `context_edit` = (keep, tail): this step's context is the previous step's context[:keep] + tail
    (keep 0 and the whole context on the first step a spec produces). `step` builds the contract
    Step (with the full context and candidate texts) on first use.
    """

    __slots__ = ("key", "index", "context", "context_edit", "packed", "row", "k", "shown", "chosen_id",
                 "chosen_prob", "chosen_rank", "entropy", "forced", "finish_reason", "text", "_names", "_step")

    def __init__(self, key: str, index: int, context: str, context_edit: tuple[int, str], packed: np.ndarray,
                 row: int, k: int, shown: int, chosen: tuple, forced: bool, finish_reason: FinishReason | None,
                 text: str | None, names: Callable[[int], str]) -> None:
        self.key, self.index, self.context, self.context_edit = key, index, context, context_edit
        self.packed, self.row, self.k, self.shown = packed, row, k, shown
        self.chosen_id, self.chosen_prob, self.chosen_rank, self.entropy = chosen
        self.forced, self.finish_reason, self.text = forced, finish_reason, text
        self._names, self._step = names, None

    @property
    def top_ids(self) -> list[int]:
        """The shown candidates' ids, most likely first."""
        return self.packed[self.row, self.k:self.k + self.shown].astype(np.int64).tolist()

    @property
    def top_probs(self) -> list[float]:
        """The shown candidates' probabilities (6 significant digits)."""
        return self.packed[self.row, :self.shown].tolist()

    @property
    def step(self) -> Step:
        """The contract Step (built once, on demand)."""
        if self._step is None:
            name = self._names
            self._step = Step(
                index=self.index,
                context=self.context,
                top=tuple(TokenProb(name(t), t, p) for t, p in zip(self.top_ids, self.top_probs)),
                chosen=TokenProb(name(self.chosen_id), self.chosen_id, self.chosen_prob),
                chosen_rank=self.chosen_rank,
                entropy=self.entropy,
            )
        return self._step


@dataclass(frozen=True)
class _InFlight:
    """A decode launched on the device and not yet collected: its rows, bucket, span and each slot's draw inputs."""

    rows: list
    bucket: cuda_graphs.Bucket
    span: int
    temperature: list[float]
    top_p: list[float]
    uniform: list[float]
    forced: list[int]


class _Row:
    """A sequence in the batch: its text (and ids), next step number, slot, and what the step needs."""

    __slots__ = ("spec", "text", "index", "last", "slot", "edit", "temperature", "top_p", "top_k", "seed", "forced",
                 "draw_offset")

    def __init__(self, spec: SequenceSpec, text: RowText) -> None:
        p = spec.params
        self.spec, self.text, self.index = spec, text, spec.first_index
        self.last = min(p.steps, len(spec.forced_next)) if spec.forced_next else p.steps
        self.slot = -1
        self.edit = (0, text.text)  # the context change this row's next step reports
        self.temperature, self.top_p, self.top_k, self.seed = p.temperature, p.top_p, p.top_k, p.seed
        self.forced, self.draw_offset = spec.forced_next, spec.draw_offset

    def forced_id(self, ahead: int = 0) -> int:
        """The token this step (or the one `ahead` of it) must take, or -1."""
        index = self.index + ahead
        return self.forced[index - 1] if index <= len(self.forced) else -1

    def uniform(self) -> float:
        return step_uniform(self.seed, self.draw_offset + self.index) if self.temperature > 0 else 0.0


def pick_cache(model: torch.nn.Module, probe_length: int = 12) -> tuple[str, str]:
    """Which cache serves this model: ("static", why) when the slot cache reproduces a no-cache forward, else ("padded", why).

    The probe prefills two contexts of different lengths into slots 1 and 0 in one left-padded
    forward, decodes two steps, and compares every step's logits with a full forward of each
    context alone (sliding windows included: the probe outruns a short window).
    """
    window = getattr(model.config, "sliding_window", None) or 0
    longest = max(probe_length, min(window + 4, 64))
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (longest, longest // 2)]
    try:
        backend = SlotBackend(model, 2, longest + 3)
        with torch.no_grad():
            got = [backend.prefill([1, 0], contexts)]
            rows = [list(c) for c in contexts]
            for _ in range(2):
                nxt = got[-1].argmax(-1).tolist()
                for r, t in zip(rows, nxt):
                    r.append(t)
                order = [nxt[1], nxt[0]]  # slot 0 holds the second context
                positions = [len(rows[1]) - 1, len(rows[0]) - 1]
                logits = backend.decode(torch.tensor(order, device=device), torch.tensor(positions, device=device),
                                        max(positions) + 1)
                got.append(logits[[1, 0]])
            half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
            for step, logits in enumerate(got):
                for i, row in enumerate(rows):
                    ids = row[: len(contexts[i]) + step]
                    want = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
                    diff = (logits[i].float() - want).abs().max().item()
                    if diff > (0.1 if half else 1e-3) * (want.std().item() + 1e-6):
                        return "padded", f"slot cache logits differ from a full forward by {diff:.3g}"
    except (Unsupported, RuntimeError, ValueError, TypeError, IndexError, AttributeError, NotImplementedError) as exc:
        return "padded", f"slot cache unsupported: {type(exc).__name__}: {exc}"
    return "static", "slot cache matches a full forward"


class BatchEngine:
    """Holds one batch; not thread safe (one owner thread calls add, drop and step).

    Args:
        model: a Hugging Face causal LM in eval mode, already on its device.
        tokenizer: its tokenizer.
        max_batch: most sequences stepped together; extra ones wait in `waiting`.
        max_length: longest context (prompt + steps) a slot holds; capped by the model's positions.
        cache: "static" (slot cache), "padded" (left-padded fallback), or "auto" (probe with pick_cache).
        graphs: CUDA graphs for the decode step: None = on for a static cache on CUDA, False = off,
            or a factory (step, (rows, keys) buckets, width) -> GraphRunner (tests inject one).
        max_top_k: most candidates a step reports (graphs pack this many).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_batch: int = 32, *, max_length: int | None = None,
                 cache: str = "auto", graphs: GraphFactory | bool | None = None, max_top_k: int = 50,
                 decoder: Decoder | None = None) -> None:
        self.model, self.tokenizer, self.max_batch, self.max_top_k = model, tokenizer, max_batch, max_top_k
        self.device = next(model.parameters()).device
        self.waiting: list[SequenceSpec] = []
        self._rows: list[_Row] = []
        self._by_key: dict[str, _Row] = {}
        self.decoder = decoder or Decoder(tokenizer)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)
        if cache == "auto":
            cache, why = pick_cache(model)
            log.info("batch cache: %s (%s)", cache, why)
        self.backend = (SlotBackend(model, max_batch, max_length or DEFAULT_LENGTH) if cache == "static"
                        else PaddedBackend(model))
        self._graphs = None
        self._inflight: _InFlight | None = None  # with graphs: the decode launched last
        if isinstance(self.backend, SlotBackend):
            slots = max_batch
            self._tok, self._pos = [0] * slots, [0] * slots
            # each slot's sampling parameters, set when a job takes it (free slots: greedy, unforced)
            self._temp, self._top_p, self._forced = [0.0] * slots, [1.0] * slots, [-1] * slots
            self._seed, self._draw = np.zeros(slots, dtype=np.uint64), np.zeros(slots, dtype=np.int64)
            self._forcing: dict[int, _Row] = {}  # slot -> its row, for rows with forced (scored) tokens
            # staged decode inputs, one column per slot; every column starts as a free slot's, so a graph's
            # warm-up runs valid inputs (a top_p of 0 would index out of bounds on the device)
            free = torch.tensor(FREE_SLOT, dtype=torch.float64)[:, None].expand(6, slots)
            self._inputs = free.to(self.device, copy=True)
            self._staging = free.clone().pin_memory() if self.device.type == "cuda" else free.clone()
            self.sizes = cuda_graphs.buckets(slots)
            self.key_sizes = cuda_graphs.buckets(self.backend.length, cuda_graphs.SHORTEST_KEYS)
            self._start_graphs(graphs)

    # -- public API ------------------------------------------------------------------------

    @property
    def graphs_on(self) -> bool:
        """Whether decode steps replay checked CUDA graphs."""
        return self._graphs is not None

    @property
    def vocab_size(self) -> int:
        """Width of the model's logits: every token id a step can show is below it."""
        return self.model.config.vocab_size

    def __len__(self) -> int:
        return len(self._rows) + len(self.waiting)

    def add(self, spec: SequenceSpec) -> None:
        """Queue a sequence; it joins the batch at the next step with room.

        Raises:
            ValueError: no seed, no context, or (slot cache) a context that cannot fit a slot.
        """
        if spec.params.seed is None:
            raise ValueError("SequenceSpec.params.seed must be set")
        if not spec.ids:
            raise ValueError("a sequence needs at least one token of context")
        if isinstance(self.backend, SlotBackend):
            last = min(spec.params.steps, len(spec.forced_next)) if spec.forced_next else spec.params.steps
            need = len(spec.ids) + max(last - spec.first_index, 0)
            if need > self.backend.length:
                raise ValueError(f"the sequence needs {need} positions; this batch holds {self.backend.length}")
        self.waiting.append(spec)

    def drop(self, key: str) -> None:
        """Remove a sequence now (cancelled, timed out, superseded)."""
        self.waiting = [s for s in self.waiting if s.key != key]
        row = self._by_key.get(key)
        if row is not None:
            self._retire([row])

    def text_of(self, key: str) -> str:
        """Current text of a sequence in the batch ("" when it is not there)."""
        row = self._by_key.get(key)
        return row.text.text if row is not None else ""

    def spec_of(self, key: str) -> SequenceSpec | None:
        """A spec that resumes this sequence where it stands (ids so far, next step), e.g. in another batch."""
        row = self._by_key.get(key)
        if row is not None:
            return replace(row.spec, ids=list(row.text.ids), first_index=row.index)
        return next((s for s in self.waiting if s.key == key), None)

    def decode(self, ids: list[int]) -> str:
        """Text of a token sequence, special tokens left out."""
        return self.decoder.decode(ids)

    def token_text(self, token_id: int) -> str:
        """Text of one candidate token; a part of a character shows as its bytes (<0xE2><0x80>)."""
        return self.decoder.candidate_text(token_id)

    @torch.no_grad()
    def step(self) -> list[StepResult]:
        """Advance every sequence in the batch by one token; admit waiting ones first.

        With CUDA graphs the next decode is launched as soon as this step's tokens are known, so the
        device computes it while the host records these results and the caller stores them; a row that
        finishes or is dropped meanwhile has its in-flight step discarded.
        """
        # 1. decode: rows already in the batch feed their pending token (with graphs: the decode launched
        #    during the last step). It runs before admission, so the dummy rows of free slots in the
        #    decode range can never touch a newly prefilled slot.
        parts = []
        if self._inflight is not None:
            parts.append(self._collect())
        elif self._rows:
            parts.append(self._decode_phase())
        # 2. admit: waiting sequences take free room and are prefilled together (their first step's logits)
        joined = self._admit_phase()
        if joined is not None:
            parts.append(joined)
        # 3. sample: the chosen token and the distribution of every row, one host transfer per part
        hosts = [(rows, where, packed.numpy(), k) for rows, where, packed, k in parts]  # (n, 2k + 5) float64 each
        if isinstance(self.backend, SlotBackend):
            self._draw[: self.backend.span] += 1  # every seated row moves to its next step (free slots: unused)
        # 4. launch (graphs): the next decode runs on the device while the host records this one
        if self._graphs is not None and self._advance(hosts):
            self._launch()
        results, finished = [], []
        for rows, where, host, k in hosts:
            tails = host[:, 2 * k:2 * k + 4].tolist()  # chosen id, its prob, its rank, entropy
            # 5. record: O(1) per row: the context grows by a decoded tail, nothing is re-decoded
            for row, i in zip(rows, where):
                results.append(self._record(row, host, i, k, tails[i], finished))
        # 6. retire: finished rows leave (their slots are free at the next step)
        if finished:
            self._retire(finished)
        return results

    # -- phases ----------------------------------------------------------------------------

    def _decode_inputs(self, ahead: int = 0) -> tuple[int, list, list, list, list]:
        """(span, temperature, top_p, uniform, forced) of slots 0..span-1 for the next decode.

        `ahead` = 1 when the rows are not yet recorded (their index is still the step just computed).
        """
        span = self.backend.span
        for s, r in self._forcing.items():
            self._forced[s] = r.forced_id(ahead)
        # every slot's (seed, step) draw at once; greedy and forced rows ignore theirs
        uniform = step_uniforms(self._seed[:span], self._draw[:span]).tolist()
        return span, self._temp[:span], self._top_p[:span], uniform, self._forced[:span]

    def _decode_phase(self):
        """Rows in the batch, eagerly -> (rows, packed row of each, host packed choices, k)."""
        rows = self._rows
        if isinstance(self.backend, PaddedBackend):
            logits = self.backend.decode([r.text.ids[-1] for r in rows])
            return rows, range(len(rows)), self._choose(logits, rows), self._k(rows)
        span, temp, top_p, uniform, forced = self._decode_inputs()
        where = [r.slot for r in rows]
        tokens = torch.tensor(self._tok[:span], dtype=torch.int64, device=self.device)  # a dtype given: 2x faster
        positions = torch.tensor(self._pos[:span], dtype=torch.int64, device=self.device)
        logits = self.backend.decode(tokens, positions, max(self._pos[:span]) + 1)
        k = self._k(rows)
        return rows, where, pack_choices(logits, temp, top_p, uniform, forced, k).cpu(), k

    def _advance(self, hosts: list) -> bool:
        """Each row's next decode input from its chosen token, before the row is recorded; whether any row goes on.

        A row at its last step gets a free slot's input (position 0): its next position may lie past its slot.
        """
        going_on = False
        for rows, where, host, k in hosts:
            chosen = host[:, 2 * k].astype(np.int64).tolist()
            for row, i in zip(rows, where):
                ended = row.index >= row.last
                self._tok[row.slot] = 0 if ended else chosen[i]
                self._pos[row.slot] = 0 if ended else len(row.text.ids)  # the chosen token's position
                going_on = going_on or not ended
        return going_on

    def _launch(self) -> None:
        """Stage the next decode of every row and replay its bucket's graph, without waiting for it.

        The bucket: the fewest rows holding slots 0..span-1, and the fewest keys holding every row's position.
        """
        span, temp, top_p, uniform, forced = self._decode_inputs(ahead=1)
        b = cuda_graphs.bucket_for(span, self.sizes)
        w = cuda_graphs.bucket_for(max(self._pos[:span]) + 1, self.key_sizes)
        columns = (self._tok[:span], self._pos[:span], temp, top_p, uniform, forced)
        self._stage(b, *(column + [free] * (b - span) for column, free in zip(columns, FREE_SLOT)))
        self._graphs.launch((b, w))
        self._inflight = _InFlight(list(self._rows), (b, w), span, temp, top_p, uniform, forced)

    def _collect(self):
        """The launched decode -> (rows still in the batch, packed row of each, host packed choices, k)."""
        f, self._inflight = self._inflight, None
        packed = self._graphs.wait(f.bucket)[:f.span].clone()
        flags = packed[:, -1].tolist()
        short = [i for i in range(f.span) if flags[i]]
        if short:  # a nucleus reaching past the graph's candidates: redo those rows with a full sort
            logits = self._graphs.logits[f.bucket][short]
            redo = pack_choices(logits, [f.temperature[i] for i in short], [f.top_p[i] for i in short],
                                [f.uniform[i] for i in short], [f.forced[i] for i in short], self.max_top_k).cpu()
            packed[short] = redo
        rows = [r for r in f.rows if self._by_key.get(r.spec.key) is r]  # left meanwhile: its step is discarded
        return rows, [r.slot for r in rows], packed, self.max_top_k

    def _admit_phase(self):
        """Waiting sequences that fit -> prefilled rows, as (rows, packed row of each, host packed choices, k)."""
        room = self.max_batch - len(self._rows)
        if not self.waiting or room <= 0:
            return None
        specs, self.waiting = self.waiting[:room], self.waiting[room:]
        rows = [_Row(spec, self.decoder.row(spec.ids)) for spec in specs]
        contexts = [r.text.ids for r in rows]
        if isinstance(self.backend, SlotBackend):
            for r in rows:
                self._seat(r, self.backend.take())
            logits = self.backend.prefill([r.slot for r in rows], contexts)
        else:
            logits = self.backend.prefill(contexts)
        self._rows.extend(rows)
        for r in rows:
            self._by_key[r.spec.key] = r
        return rows, range(len(rows)), self._choose(logits, rows), self._k(rows)

    def _record(self, row: _Row, host: np.ndarray, i: int, k: int, tail: list, finished: list) -> StepResult:
        """Turn packed row i into the row's StepResult and append the chosen token to the row."""
        chosen = int(tail[0])
        tail[0], tail[2] = chosen, int(tail[2])
        forced = row.index <= len(row.forced)
        context, edit = row.text.text, row.edit
        row.edit = row.text.append(chosen)
        reason = None
        if chosen in self.eos_ids and not forced:  # forced (scored) tokens never end a sequence early
            reason = FinishReason.EOS
        elif row.index >= row.last:
            reason = FinishReason.LENGTH
        result = StepResult(row.spec.key, row.index, context, edit, host, i, k, min(row.top_k, k), tail, forced,
                            reason, row.text.text if reason else None, self.token_text)
        row.index += 1
        if reason is not None:
            finished.append(row)
        elif row.slot >= 0:
            self._tok[row.slot], self._pos[row.slot] = chosen, len(row.text.ids) - 1
        return result

    def _seat(self, row: _Row, slot: int) -> None:
        """Give a joining row its slot and the slot its sampling parameters."""
        row.slot = slot
        self._temp[slot], self._top_p[slot] = row.temperature, row.top_p
        self._seed[slot], self._draw[slot] = row.seed & _MASK64, row.draw_offset + row.index
        if row.forced:
            self._forcing[slot] = row

    def _retire(self, leaving: list[_Row]) -> None:
        """Rows leave the batch; the slot cache frees their slots, the padded cache cuts them out."""
        gone = {id(r) for r in leaving}
        for r in leaving:
            self._by_key.pop(r.spec.key, None)
            if r.slot >= 0:
                self.backend.release(r.slot)
                self._tok[r.slot] = self._pos[r.slot] = 0
                self._temp[r.slot], self._top_p[r.slot], self._forced[r.slot] = 0.0, 1.0, -1
                self._forcing.pop(r.slot, None)
        if isinstance(self.backend, PaddedBackend):
            self.backend.keep([i for i, r in enumerate(self._rows) if id(r) not in gone])
        self._rows = [r for r in self._rows if id(r) not in gone]

    # -- sampling and graphs ---------------------------------------------------------------

    def _k(self, rows: list[_Row]) -> int:
        return min(max(r.top_k for r in rows), self.model.config.vocab_size)

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Eager choice for rows in order: host packed (len(rows), 2k + 5)."""
        return pack_choices(logits, [r.temperature for r in rows], [r.top_p for r in rows],
                            [r.uniform() for r in rows], [r.forced_id() for r in rows], self._k(rows)).cpu()

    def _stage(self, b: int, *columns: list) -> None:
        """Copy the decode inputs of slots 0..b-1 (token, position, T, top_p, u, forced) to the device."""
        self._staging.numpy()[:, :b] = columns  # straight from the lists: 30 us at 256 rows, 97 through torch.tensor
        self._inputs.copy_(self._staging, non_blocking=True)

    def _fixed_step(self, bucket: cuda_graphs.Bucket) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step of bucket (b rows, w keys) with fixed shapes (what a graph captures): staged inputs ->
        (packed, logits)."""
        b, w = bucket
        x = self._inputs[:, :b]
        logits = self.backend.decode(x[0].long(), x[1].long(), w)
        return pack_choices_fixed(logits, x[2].float(), x[3].float(), x[4], x[5].long(), self.max_top_k), logits

    def _stage_test(self, bucket: cuda_graphs.Bucket, trial: int) -> None:
        """Self-check inputs: random tokens, greedy, sampled, nucleus and forced rows; trial 1 puts row 0 at the
        bucket's last key."""
        b, w = bucket
        gen = torch.Generator().manual_seed(b * 2 + trial)
        vocab = self.model.config.vocab_size
        tokens = torch.randint(0, vocab, (b,), generator=gen).tolist()
        kinds = [(0.0, 1.0, -1), (0.8, 1.0, -1), (1.3, 0.9, -1), (0.7, 1.0, 3 % vocab)]
        temp, top_p, forced = zip(*(kinds[i % len(kinds)] for i in range(b)))
        positions = [(trial * (w - 1) + i) % w for i in range(b)]
        self._stage(b, tokens, positions, list(temp), list(top_p), [step_uniform(i, trial) for i in range(b)],
                    list(forced))

    def _start_graphs(self, graphs: GraphFactory | bool | None) -> None:
        """Capture and self-check the decode graphs; stay eager (and log why) unless every bucket matches."""
        if graphs is False or (graphs in (None, True) and self.device.type != "cuda"):
            return
        factory = cuda_graphs.CudaGraphs if graphs in (None, True) else graphs
        width = 2 * self.max_top_k + 5
        try:
            grid = [(b, w) for b in self.sizes for w in self.key_sizes]
            runner = factory(self._fixed_step, grid, width)
            why = cuda_graphs.self_check(runner, self._fixed_step, self._stage_test, grid, self.max_top_k)
        except Exception as exc:  # capture can fail in many ways; each means "run eagerly" if the GPU still works
            why = f"capture failed: {type(exc).__name__}: {exc}"
            broken = cuda_graphs.device_error(self.device)
            if broken:
                raise RuntimeError(f"CUDA graph capture left {self.device} unable to run anything ({broken}); "
                                   "nothing can be served on it until the process restarts") from exc
        if why is None:
            self._graphs = runner
            log.info("CUDA graphs on for decode buckets of %s rows x %s keys", self.sizes, self.key_sizes)
        else:
            log.warning("CUDA graphs off, running eagerly: %s", why)
