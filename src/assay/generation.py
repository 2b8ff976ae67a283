"""Batched generation and teacher-forced scoring for causal language models, on token ids.

The engine is the one place where a local language model runs: the causal-LM target
(:mod:`assay.targets.causal_lm`) wraps it for text, probes and attacks may call it directly on an
``nn.Module``. It lives beside ``targets`` and ``attacks`` rather than in either, because both use it.

- :meth:`GenerationEngine.generate`: left-padded batches with a KV cache; greedy decoding, or
  sampling (temperature, top-k, top-p) from a per-prompt seeded generator, so a prompt's output does
  not depend on which other prompts share its batch. Rows leave the batch as soon as they finish
  (end-of-sequence, a stop string, or ``max_new_tokens``): the cost follows the work that is left.
- :meth:`GenerationEngine.score`: per-token log-probabilities of given continuations after given
  prompts (teacher forcing), optionally with the mean and standard deviation of log p under the
  model's own next-token distribution at each position (what Min-K%++ standardises with). Prompts
  shared by every continuation (the candidates of a canary) are run once and their KV cache reused.
- Batches are packed by length under ``max_batch_size`` rows and ``max_batch_tokens`` padded tokens;
  an out-of-memory error halves the batch and retries, and the smaller size is kept.
- Everything runs on the model's device (CPU, CUDA or MPS).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from assay.errors import InputError

FINISH_REASONS = ("eos", "stop", "length")


@dataclass
class Generated:
    """One prompt's continuation: the new token ids (the end-of-sequence token excluded), the decoded
    text cut before the first stop string, why it ended, and the prompt's length in tokens."""

    ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


@dataclass
class Scored:
    """Teacher-forced log-probabilities of one continuation's tokens (natural log), shape ``(n,)``;
    ``mean``/``std`` of log p(z) under the next-token distribution at each position when asked for."""

    logprobs: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory error of any torch backend."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(e, oom_types):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


# one decoding step costs about as much as this many prompt tokens in a padded forward pass: a step
# streams every weight for a handful of rows (on 2 CPU cores, SmolLM2-135M: ~90 ms a step against
# ~3 ms a prompt token), so a batch is split only when its padding would cost more than that
DECODE_STEP_TOKENS = 32


def _joinable(cache) -> bool:
    """Whether a prompt cache is a plain dynamic cache (full attention, one keys and values tensor per
    layer), so that caches of several chunks of rows can be joined."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and type(cache).__name__ == "DynamicCache" and all(
        type(layer).__name__ == "DynamicLayer" and getattr(layer, "keys", None) is not None for layer in layers)


class GenerationEngine:
    """Generation and scoring on a Hugging Face-style causal LM (``model(input_ids, attention_mask,
    position_ids, past_key_values, use_cache)`` returning ``.logits`` and ``.past_key_values``).

    Parameters
    ----------
    model : the causal language model; put in eval mode, left on its device.
    tokenizer : needed only to decode text (``Generated.text``) and to find stop strings.
    pad_token_id, eos_token_ids : default from the model's generation config / config / tokenizer.
    max_batch_size : most rows per forward pass (halved on out-of-memory, and kept halved).
    max_batch_tokens : most padded tokens (rows x length) per forward pass.
    max_logits : most logit values (rows x positions x vocabulary) one scoring pass may hold.

    Example
    -------
    >>> engine = GenerationEngine(model, tokenizer)                           # doctest: +SKIP
    >>> out = engine.generate([[1, 42, 7]], max_new_tokens=8)                 # doctest: +SKIP
    >>> engine.score([[1, 42]], [[7, 9]])[0].logprobs                          # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer=None,
        *,
        pad_token_id: int | None = None,
        eos_token_ids: Sequence[int] | int | None = None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_logits: int = 1 << 26,
    ):
        if max_batch_size < 1 or max_batch_tokens < 1:
            raise InputError("max_batch_size and max_batch_tokens must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        cfg = getattr(model, "config", None)
        gen_cfg = getattr(model, "generation_config", None)
        if eos_token_ids is None:
            for src in (gen_cfg, cfg, tokenizer):
                eos_token_ids = getattr(src, "eos_token_id", None) if src is not None else None
                if eos_token_ids is not None:
                    break
        if isinstance(eos_token_ids, int):
            eos_token_ids = [eos_token_ids]
        self.eos_token_ids = sorted(set(int(i) for i in (eos_token_ids or [])))
        if pad_token_id is None:
            for src in (tokenizer, gen_cfg, cfg):
                pad_token_id = getattr(src, "pad_token_id", None) if src is not None else None
                if pad_token_id is not None:
                    break
        if pad_token_id is None:
            pad_token_id = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = int(max_batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_logits = int(max_logits)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        # keep the last positions by index where the model takes indices: a slice of the hidden states is a
        # strided view, and the vocabulary projection of a strided (batch, k, d) view goes through a
        # batched matmul over the broadcast weight, 3-5x slower on a CPU than on the gathered rows
        self._keep_index = self._keep_arg is not None and "Tensor" in str(params[self._keep_arg].annotation)
        # transformers 5 renamed past_key_values to cache
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.forward_passes = 0  # every model call, for accounting and tests
        self.oom_retries = 0

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters
            return torch.device("cpu")

    @property
    def vocab_size(self) -> int:
        emb = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if emb is not None and hasattr(emb, "out_features"):
            return int(emb.out_features)
        return int(self.model.config.vocab_size)

    def _forward(self, keep: int | None = None, past=None, **kw):
        if keep is not None and self._keep_arg is not None:
            x = kw.get("input_ids", kw.get("inputs_embeds"))
            if self._keep_index and x is not None:
                w = x.shape[1]
                kw[self._keep_arg] = torch.arange(max(w - keep, 0), w, device=x.device)
            else:
                kw[self._keep_arg] = keep
        if past is not None:
            kw[self._cache_arg] = past
        self.forward_passes += 1
        out = self.model(**kw)
        logits = out.logits
        if keep is not None and self._keep_arg is None:
            logits = logits[:, -keep:]
        cache = getattr(out, "cache", None)
        return logits, cache if cache is not None else getattr(out, "past_key_values", None)

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _plan(self, lengths: list[int], extra_per_row: int = 0) -> list[list[int]]:
        """Row indices grouped into batches: similar lengths together (longest first, so a batch that
        does not fit in memory fails early), each under the row and padded-token limits. A batch is
        also closed when the rows left are less than half its length and padding them all would cost
        more than another batch's decoding steps (``extra_per_row`` new tokens, each about as dear as
        ``DECODE_STEP_TOKENS`` prompt tokens in a padded forward pass)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        for k, i in enumerate(order):
            width = (lengths[cur[0]] if cur else lengths[i]) + extra_per_row
            wasteful = bool(cur) and 2 * lengths[i] < lengths[cur[0]] and \
                (lengths[cur[0]] - lengths[i]) * (len(order) - k) > DECODE_STEP_TOKENS * (extra_per_row + 1)
            if cur and (wasteful or len(cur) + 1 > self.max_batch_size or (len(cur) + 1) * width > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    def _run_adaptive(self, batches: list[list[int]], fn: Callable[[list[int]], None]) -> None:
        """Run ``fn`` on each batch; on out-of-memory halve the batch (and the engine's maximum) and retry."""
        todo = list(reversed(batches))
        while todo:
            rows = todo.pop()
            try:
                fn(rows)
            except Exception as e:
                if not is_oom(e) or len(rows) == 1:
                    raise
                self.oom_retries += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = len(rows) // 2
                self.max_batch_size = max(1, min(self.max_batch_size, half))
                todo += [rows[half:], rows[:half]]

    # ------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Generated]:
        """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens.

        ``temperature=0`` decodes greedily (ties go to the lowest token id, as ``argmax`` does);
        otherwise sampling from ``softmax(logits / temperature)`` restricted to the ``top_k`` most
        likely tokens (0: all) and the smallest set with mass ``>= top_p``. Prompt ``i`` samples
        from its own generator seeded by ``(seed, i)``. A row stops at an end-of-sequence token, when
        its decoded text contains a ``stop`` string (the text is cut before it), or at the limit.
        """
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens={max_new_tokens} must be >= 0")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise InputError("temperature must be >= 0, top_p in (0, 1] and top_k >= 0")
        stop = [s for s in (stop or ()) if s]
        if stop and self.tokenizer is None:
            raise InputError("stop strings need a tokenizer to decode the generated text")
        prompts = [list(map(int, p)) for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise InputError("every prompt needs at least one token (prepend the BOS token to an empty prompt)")
        results: list[Generated | None] = [None] * len(prompts)
        done = [0]

        def run(rows: list[int]) -> None:
            outs = self._generate_batch([prompts[i] for i in rows], rows, max_new_tokens, temperature,
                                        top_k, top_p, seed, stop)
            for i, g in zip(rows, outs):
                results[i] = g
            done[0] += len(rows)
            if progress is not None:
                progress(done[0], len(prompts))

        self._run_adaptive(self._plan([len(p) for p in prompts], max_new_tokens), run)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts, indices, max_new, temperature, top_k, top_p, seed, stop) -> list[Generated]:
        n = len(prompts)
        new: list[list[int]] = [[] for _ in range(n)]
        reason = ["length"] * n
        texts: list[str | None] = [None] * n
        if max_new == 0:
            return [Generated([], "", "length", len(p)) for p in prompts]
        dev = self.device
        gens = None
        if temperature > 0:
            gens = []
            for i in indices:
                g = torch.Generator(device=dev)
                g.manual_seed((int(seed) * 1_000_003 + int(i)) % (2**63))
                gens.append(g)
        eos = torch.as_tensor(self.eos_token_ids, dtype=torch.long, device=dev) if self.eos_token_ids else None
        logits, past, mask, pos = self._prefill(prompts)
        alive = torch.arange(n, device=dev)  # original row of each row still in the batch
        last_pos = pos[:, -1]
        can_drop = hasattr(past, "batch_select_indices")
        for step in range(max_new):
            nxt = self._choose(logits[:, -1, :].float(), temperature, top_k, top_p,
                               None if gens is None else [gens[int(r)] for r in alive.tolist()])
            is_eos = torch.isin(nxt, eos).tolist() if eos is not None else [False] * len(alive)
            nxt_list = nxt.tolist()
            for j, r in enumerate(alive.tolist()):
                if reason[r] != "length":  # finished earlier, kept only by a cache that cannot drop rows
                    continue
                if is_eos[j]:
                    reason[r] = "eos"
                    continue
                new[r].append(nxt_list[j])
                if stop:
                    text = self.tokenizer.decode(new[r], skip_special_tokens=True)
                    cut = min((k for k in (text.find(s) for s in stop) if k >= 0), default=-1)
                    if cut >= 0:
                        texts[r], reason[r] = text[:cut], "stop"
            if step == max_new - 1:
                break
            keep = torch.as_tensor([reason[r] == "length" for r in alive.tolist()], dtype=torch.bool, device=dev)
            if not bool(keep.any()):
                break
            if can_drop and not bool(keep.all()):
                sel = keep.nonzero().flatten()
                past.batch_select_indices(sel)
                alive, nxt, mask, last_pos = alive[sel], nxt[sel], mask[sel], last_pos[sel]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=dev)], dim=1)
            last_pos = last_pos + 1
            logits, past = self._forward(keep=1, input_ids=nxt.view(-1, 1), attention_mask=mask,
                                         position_ids=last_pos.view(-1, 1), past=past, use_cache=True)
        out = []
        for r in range(n):
            text = texts[r]
            if text is None:
                text = self.tokenizer.decode(new[r], skip_special_tokens=True) if self.tokenizer is not None else ""
            out.append(Generated(new[r], text, reason[r], len(prompts[r])))
        return out

    def _prefill(self, prompts: list[list[int]]):
        """The prompts' last logits and KV cache, left-padded to one width for decoding together.

        Prompts of very different lengths run in chunks of similar lengths (``_plan``: a chunk is
        cut where padding the rest to its width would cost more than another forward pass) and the
        chunks' caches are joined, left-padded with masked zeros; padding every prompt to the longest
        would compute every padded position in every layer. Models whose cache cannot be joined
        (not a plain dynamic cache) run in one padded pass."""
        def run(rows: list[int]):
            ids, mask = self._left_pad([prompts[i] for i in rows])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits, past = self._forward(keep=1, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            return rows, logits, past, mask, pos

        every = list(range(len(prompts)))
        chunks = self._plan([len(p) for p in prompts]) if len(prompts) > 1 else [every]
        if len(chunks) == 1:
            return run(every)[1:]
        parts = [run(chunks[0])]
        if not _joinable(parts[0][2]):
            return run(every)[1:]  # the whole batch in one padded pass instead
        parts += [run(rows) for rows in chunks[1:]]
        width = max(p[3].shape[1] for p in parts)
        order = torch.as_tensor([r for p in parts for r in p[0]], device=self.device)
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order), device=self.device)  # joined row of each prompt

        def join(tensors, dim):  # left-pad each part to the common width, stack the rows, restore the order
            padded = []
            for t in tensors:
                gap = width - t.shape[dim]
                if gap:
                    shape = list(t.shape)
                    shape[dim] = gap
                    t = torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)
                padded.append(t)
            return torch.cat(padded, dim=0).index_select(0, back)

        past = parts[0][2]
        for li, layer in enumerate(past.layers):
            layer.keys = join([p[2].layers[li].keys for p in parts], 2)
            layer.values = join([p[2].layers[li].values for p in parts], 2)
        logits = torch.cat([p[1] for p in parts], dim=0).index_select(0, back)
        return logits, past, join([p[3] for p in parts], 1), join([p[4] for p in parts], 1)

    @staticmethod
    def _choose(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, gens) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        if top_k and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        probs = logits.softmax(-1)
        return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])

    # ---------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[int]],
        *,
        stats: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Scored]:
        """``log p(continuation_j | prompt, continuation_<j)`` for every token of every continuation.

        Each prompt needs at least one token (the position that predicts the first continuation
        token). When every prompt is the same, it is run once and its KV cache is shared.
        """
        if len(prompts) != len(continuations):
            raise InputError(f"{len(prompts)} prompts but {len(continuations)} continuations; give one each")
        prompts = [list(map(int, p)) for p in prompts]
        conts = [list(map(int, c)) for c in continuations]
        if any(len(p) == 0 for p in prompts):
            raise InputError("every prompt needs at least one token (prepend the BOS token to an empty prompt)")
        results: list[Scored | None] = [None] * len(prompts)
        empty = [i for i, c in enumerate(conts) if not c]
        for i in empty:
            z = torch.zeros(0)
            results[i] = Scored(z, z.clone() if stats else None, z.clone() if stats else None)
        todo = [i for i, c in enumerate(conts) if c]
        if not todo:
            return results  # type: ignore[return-value]
        shared = len(todo) > 1 and all(prompts[i] == prompts[todo[0]] for i in todo)
        done = [0]

        def report(k: int) -> None:
            done[0] += k
            if progress is not None:
                progress(done[0], len(todo))

        if shared:
            self._score_shared(prompts[todo[0]], todo, conts, stats, results, report)
        else:
            vocab = self.vocab_size
            lengths = [len(prompts[i]) + len(conts[i]) for i in todo]

            def run(rows: list[int]) -> None:
                idx = [todo[r] for r in rows]
                keep = max(len(conts[i]) for i in idx) + 1
                for part in self._split_for_logits(idx, keep, vocab):
                    self._score_batch([prompts[i] for i in part], [conts[i] for i in part], part, stats, results)
                report(len(rows))

            self._run_adaptive(self._plan(lengths), run)
        return results  # type: ignore[return-value]

    def _split_for_logits(self, idx: list[int], keep: int, vocab: int) -> list[list[int]]:
        per = max(1, self.max_logits // max(1, keep * vocab))
        return [idx[k:k + per] for k in range(0, len(idx), per)]

    @staticmethod
    def _token_stats(logits: torch.Tensor, targets: torch.Tensor, stats: bool):
        logp = torch.log_softmax(logits.float(), dim=-1)
        chosen = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if not stats:
            return chosen, None, None
        p = logp.exp()
        mean = (p * logp).sum(-1)
        var = (p * logp.square()).sum(-1) - mean.square()
        return chosen, mean, var.clamp(min=0).sqrt()

    def _score_batch(self, prompts, conts, idx, stats, results) -> None:
        seqs = [p + c for p, c in zip(prompts, conts)]
        keep = max(len(c) for c in conts) + 1
        ids, mask = self._left_pad(seqs)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, _ = self._forward(keep=keep, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        # left padding: row r's continuation fills its last len(c) positions, predicted by the
        # logits one position earlier
        for r, (c, i) in enumerate(zip(conts, idx)):
            lo = keep - len(c) - 1
            tgt = torch.as_tensor(c, dtype=torch.long, device=logits.device)
            lp, mean, std = self._token_stats(logits[r, lo:keep - 1], tgt, stats)
            results[i] = Scored(lp.cpu(), None if mean is None else mean.cpu(), None if std is None else std.cpu())

    def _score_shared(self, prompt, todo, conts, stats, results, report) -> None:
        dev = self.device
        p_ids = torch.as_tensor([prompt], dtype=torch.long, device=dev)
        p_mask = torch.ones_like(p_ids)
        p_pos = torch.arange(len(prompt), device=dev).view(1, -1)
        first_logits, prefix_cache = self._forward(keep=1, input_ids=p_ids, attention_mask=p_mask,
                                                   position_ids=p_pos, use_cache=True)
        first = first_logits[0, -1]
        vocab = first.shape[-1]
        can_share = prefix_cache is not None and hasattr(prefix_cache, "batch_repeat_interleave")

        def run(rows: list[int]) -> None:
            idx = [todo[r] for r in rows]
            width = max(len(conts[i]) for i in idx)
            for part in self._split_for_logits(idx, width, vocab):
                if not can_share:
                    self._score_batch([prompt] * len(part), [conts[i] for i in part], part, stats, results)
                    continue
                b = len(part)
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(b)
                w = max(len(conts[i]) for i in part)
                # right padding after the shared prefix: real tokens never attend to the pads after them
                ids = torch.full((b, w), self.pad_token_id, dtype=torch.long)
                cmask = torch.zeros((b, w), dtype=torch.long)
                for r, i in enumerate(part):
                    ids[r, : len(conts[i])] = torch.as_tensor(conts[i])
                    cmask[r, : len(conts[i])] = 1
                ids, cmask = ids.to(dev), cmask.to(dev)
                mask = torch.cat([torch.ones((b, len(prompt)), dtype=torch.long, device=dev), cmask], dim=1)
                pos = (len(prompt) + torch.arange(w, device=dev)).view(1, -1).expand(b, -1)
                logits, _ = self._forward(input_ids=ids, attention_mask=mask, position_ids=pos,
                                          past=cache, use_cache=True)
                for r, i in enumerate(part):
                    c = conts[i]
                    lg = torch.cat([first.view(1, -1), logits[r, : len(c) - 1]], dim=0)
                    tgt = torch.as_tensor(c, dtype=torch.long, device=dev)
                    lp, mean, std = self._token_stats(lg, tgt, stats)
                    results[i] = Scored(lp.cpu(), None if mean is None else mean.cpu(), None if std is None else std.cpu())
            report(len(rows))

        self._run_adaptive(self._plan([len(conts[i]) for i in todo]), run)
