"""Greedy Coordinate Gradient (GCG; Zou et al., "Universal and Transferable Adversarial Attacks on
Aligned Language Models", 2023) on a local causal language model, and transfer of its suffixes.

The attack appends an adversarial suffix of ``suffix_tokens`` tokens to a request and minimises
the cross-entropy of a target string (``"Sure, here is ..."``) as the start of the model's answer.
Each step:

1. the gradient of the target loss with respect to the one-hot encoding of every suffix token
   (the suffix enters the model as ``one_hot @ embedding_matrix``);
2. per suffix position, the ``topk`` tokens with the most negative gradient (printable ASCII,
   non-special tokens only, as in the paper's released code);
3. ``search_width`` candidates, each the current suffix with one uniformly drawn position replaced
   by one of that position's top-k tokens; candidates whose text does not tokenize back to the same
   tokens are dropped (the suffix must survive being sent as text), and so are duplicates;
4. every candidate's loss, all of them in batched forward passes; the best becomes the suffix.

It stops early when the target is the model's greedy answer (every target token is the argmax
under teacher forcing), and always after ``steps`` steps. The result's success is then checked the
honest way: the request plus the suffix *as text* is sent through the target's ``generate``.

What makes it fast (measured against nanogcg in ``benchmarks/bench_gcg.py``):

- the tokens before the suffix (system prompt, chat template, request) run once, and their KV cache
  is shared by every forward pass; the gradient pass's cache of the current suffix is the
  candidates' starting point (no separate pass for it);
- a candidate differs from the current suffix at one position ``p`` only, so the tokens before
  ``p`` are shared too: each candidate runs only from its own ``p`` on (on average half the suffix
  is not recomputed). The candidates' remaining tokens are packed end to end into rows of about
  ``ROW_TOKENS`` with a block attention mask and their own position ids, all of them in one forward
  pass (per ``PASS_TOKENS``): one pass streams the weights once, where a pass per group of
  candidates would stream them once per group. Packing is checked against plain grouped passes on
  the first step for each model and used only when they agree; models that cannot take a custom
  4-D mask run the grouped passes (candidates sorted by ``p`` and cut into groups);
- the vocabulary projection runs only where the target tokens are predicted, on gathered rows.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from assay.errors import InputError, TargetError
from assay.targets.llm import LanguageModelTarget

_MARK = "\u2063ASSAY-GCG-SUFFIX\u2063"  # an invisible separator: no chat template edits it
_ALLOWED: dict[int, torch.Tensor] = {}  # id(tokenizer) -> bool mask over the embedding rows
_PACKING_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> packed passes agreed with grouped
MIN_ROWS = 4  # fewest candidates per shared-prefix group (on a CPU even 4 rows fill a matrix product well)
PASS_TOKENS = 4096  # most candidate tokens in one packed forward pass
ROW_TOKENS = 160  # about this many tokens per packed row (its masked attention is quadratic in the length)


@dataclass
class GCGResult:
    """One GCG run. ``success``: the target's greedy answer to ``prompt`` (request + suffix, sent as
    text) starts with the target string; ``argmax_match``: the optimisation's own teacher-forced
    check said so (it can differ when the whole prompt tokenizes differently from its parts)."""

    request: str
    target_text: str
    suffix: str
    suffix_ids: list[int]
    loss: float
    losses: list[float]
    steps: int
    success: bool
    argmax_match: bool
    output: str
    seconds: float
    candidates_evaluated: int
    forward_passes: int
    history: list[str] = field(default_factory=list)
    search_seconds: float = 0.0  # the optimisation alone, without the final check's generation
    search_cpu_seconds: float = 0.0  # its CPU time (this process)

    @property
    def prompt(self) -> str:
        return self.request + self.suffix


def _tok(target) -> Any:
    tok = getattr(target, "tokenizer", None)
    model = getattr(target, "model", None)
    if tok is None or model is None or not hasattr(model, "get_input_embeddings"):
        raise TargetError(f"GCG needs a local white-box causal LM (a .gguf file or a model directory); "
                          f"{getattr(target, 'name', target)} gives no gradients")
    return tok


def allowed_tokens(tokenizer, vocab: int, allow_non_ascii: bool = False) -> torch.Tensor:
    """Boolean mask of the embedding rows GCG may put in a suffix: real tokens of the tokenizer, not
    special, decoding to non-empty printable (ASCII unless allowed) text."""
    key = (id(tokenizer), vocab, allow_non_ascii)
    if key not in _ALLOWED:
        mask = torch.zeros(vocab, dtype=torch.bool)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        n = min(vocab, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        for i, t in enumerate(texts):
            s = t.strip()
            if i in special or not s or not s.isprintable():
                continue
            if not allow_non_ascii and not t.isascii():
                continue
            mask[i] = True
        _ALLOWED[key] = mask
    return _ALLOWED[key]


def _split_prompt(target, request: str, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the suffix, rendered as the target renders prompts."""
    tok = target.tokenizer
    if not chat:
        return target.encode(request), []
    text = target.chat_text(request + _MARK)
    if text.count(_MARK) != 1:
        raise InputError("the chat template altered the suffix position; run GCG with chat=False")
    before, after = text.split(_MARK)
    b = list(tok(before, add_special_tokens=False)["input_ids"])
    a = list(tok(after, add_special_tokens=False)["input_ids"])
    return b or target._bos(), a


def _retokenizes(tokenizer, rows: torch.Tensor) -> torch.Tensor:
    texts = tokenizer.batch_decode(rows.tolist())
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([list(a) == r for a, r in zip(again, rows.tolist())], dtype=torch.bool)


class _Runner:
    """The state of one GCG run on one model (kept in one object so the loops stay readable)."""

    def __init__(self, target, before: list[int], after: list[int], goal: list[int], batch_size: int):
        self.t = target
        self.engine = target.engine
        self.model = target.model
        self.dev = target.device
        self.emb = self.model.get_input_embeddings()
        self.before, self.after, self.goal = before, after, goal
        self.batch_size = batch_size
        self.goal_t = torch.tensor(goal, device=self.dev)
        self.tail = torch.tensor(after + goal[:-1], dtype=torch.long, device=self.dev)
        with torch.no_grad():
            _, self.prefix = self._fwd(torch.tensor([before], device=self.dev), None, 0, keep=1)
        self.can_share = self.prefix is not None and all(
            hasattr(self.prefix, m) for m in ("crop", "batch_repeat_interleave"))
        # packing needs the vocabulary projection at chosen positions; it is checked against the
        # grouped passes on the first candidates before it is trusted (``_check_packing``)
        self.can_pack = self.can_share and hasattr(self.prefix, "layers") and hasattr(self.model, "base_model") \
            and self.model.get_output_embeddings() is not None
        self.pack_checked = self.model in _PACKING_OK
        self.can_pack = self.can_pack and _PACKING_OK.get(self.model, True)
        self.forward_passes = 1

    def _fwd(self, ids_or_embeds: torch.Tensor, past, start: int, keep: int, embeds: bool = False):
        b, w = ids_or_embeds.shape[:2]
        pos = (start + torch.arange(w, device=self.dev)).view(1, -1).expand(b, -1)
        mask = torch.ones((b, start + w), dtype=torch.long, device=self.dev)
        kw = {"inputs_embeds" if embeds else "input_ids": ids_or_embeds}
        return self.engine._forward(keep=keep, past=past, attention_mask=mask, position_ids=pos, use_cache=True, **kw)

    @staticmethod
    def _detach(cache, drop: int):
        """``cache`` without its last ``drop`` positions, cut from the autograd graph."""
        if drop:
            cache.crop(-drop)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
        return cache

    def _past(self, cut: int | None = None, rows: int = 1, base=None):
        if not self.can_share:
            return None
        c = copy.deepcopy(self.prefix if base is None else base)
        if cut:
            c.crop(-cut)
        if rows > 1:
            c.batch_repeat_interleave(rows)
        return c

    def gradient(self, suffix: torch.Tensor) -> tuple[torch.Tensor, float, Any]:
        """d loss / d one-hot(suffix): (suffix_len, vocab); the current loss; and the KV cache of the
        tokens before the suffix and the suffix (the candidates' shared start), or None.

        ``one_hot @ W`` is exactly the embedding rows ``W[suffix]``, so the pass takes the rows and
        the gradient with respect to the one-hot matrix is that with respect to the rows times
        ``W^T`` (the chain rule through the product; the product itself would be wasted work)."""
        W = self.emb.weight
        rows = W[suffix].detach().requires_grad_(True)
        tail_embeds = self.emb(self.tail).detach()
        embeds = torch.cat([rows, tail_embeds]).unsqueeze(0)
        T = len(self.goal)
        base = None
        if self.can_share:
            logits, cache = self._fwd(embeds, self._past(), len(self.before), keep=T, embeds=True)
            if self.can_pack and cache is not None:
                base = cache
        else:
            full = torch.cat([self.emb(torch.tensor(self.before, device=self.dev)).detach(), embeds[0]]).unsqueeze(0)
            logits, _ = self._fwd(full, None, 0, keep=T, embeds=True)
        self.forward_passes += 1
        loss = F.cross_entropy(logits[0, -T:].float(), self.goal_t)
        (g_rows,) = torch.autograd.grad(loss, [rows])
        grad = g_rows @ W.detach().T
        if base is not None:
            base = self._detach(base, len(self.tail))
        return grad, float(loss.detach()), base

    @torch.no_grad()
    def losses(self, suffix: torch.Tensor, cands: torch.Tensor, pos: torch.Tensor, base=None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target loss of every candidate (one changed position each, ``pos``), and whether the target
        is its greedy answer (teacher-forced argmax of every target token). ``base``: the KV cache of
        the tokens before the suffix and the current suffix, when the gradient pass made it."""
        if base is not None and self.can_pack and not self.pack_checked:
            self._check_packing(suffix, cands, pos, base)
        if base is not None and self.can_pack:
            return self._packed_losses(suffix, cands, pos, base)
        return self._grouped_losses(suffix, cands, pos)

    def _check_packing(self, suffix, cands, pos, base) -> None:
        """Packed passes rely on the model honouring a custom 4-D attention mask and position ids;
        on the first step a few candidates go both ways, and packing is used only when they agree."""
        k = min(len(cands), 3)
        packed = self._packed_losses(suffix, cands[:k], pos[:k], base)[0]
        grouped = self._grouped_losses(suffix, cands[:k], pos[:k])[0]
        self.can_pack = bool(torch.allclose(packed, grouped, rtol=1e-3, atol=1e-3))
        self.pack_checked = True
        _PACKING_OK[self.model] = self.can_pack

    def _packed_losses(self, suffix, cands, pos, base) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates packed end to end into a few long rows: candidate ``i`` contributes only its
        tokens from its changed position ``p_i`` on (then the chat template's tokens and the target),
        with its own positions, and attends to the shared cache up to ``p_i`` and to its own tokens
        only. The arithmetic is that of one group per candidate, done in one forward pass per
        ``PASS_TOKENS`` (each pass streams every weight once, which on a CPU costs as much as ~30
        tokens of a 135M model); rows of ``ROW_TOKENS`` keep the masked attention, which is
        quadratic in the row length, small."""
        T, S, L = len(self.goal), len(suffix), len(self.before)
        tail = self.tail
        loss = torch.empty(len(cands), device=self.dev)
        hit = torch.zeros(len(cands), dtype=torch.bool, device=self.dev)
        lens = [S - int(p) + len(tail) for p in pos.tolist()]
        passes, cur, tokens = [], [], 0
        for i, n in enumerate(lens):  # at most PASS_TOKENS tokens and batch_size candidates per pass
            if cur and (tokens + n > PASS_TOKENS or len(cur) >= self.batch_size):
                passes.append(cur)
                cur, tokens = [], 0
            cur.append(i)
            tokens += n
        if cur:
            passes.append(cur)
        decoder = self.model.base_model
        head = self.model.get_output_embeddings()
        causal = torch.ones(S + len(tail), S + len(tail), dtype=torch.bool, device=self.dev).tril()
        for members in passes:
            R = max(1, min(len(members), round(sum(lens[i] for i in members) / ROW_TOKENS)))
            rows: list[list[int]] = [[] for _ in range(R)]
            filled = [0] * R
            for i in sorted(members, key=lambda i: -lens[i]):  # longest first, each to the emptiest row
                r = min(range(R), key=filled.__getitem__)
                rows[r].append(i)
                filled[r] += lens[i]
            W = max(filled)
            ids = torch.zeros(R, W, dtype=torch.long, device=self.dev)
            where = torch.zeros(R, W, dtype=torch.long, device=self.dev)
            mask = torch.zeros(R, 1, W, L + S + W, dtype=torch.bool, device=self.dev)
            at_row, at_col, order = [], [], []
            for r, mine in enumerate(rows):
                o = 0
                for i in mine:
                    p, n = int(pos[i]), lens[i]
                    ids[r, o:o + n] = torch.cat([cands[i, p:], tail])
                    where[r, o:o + n] = L + p + torch.arange(n, device=self.dev)
                    mask[r, 0, o:o + n, :L + p] = True
                    mask[r, 0, o:o + n, L + S + o:L + S + o + n] = causal[:n, :n]
                    at_row += [r] * T
                    at_col += range(o + n - T, o + n)
                    order.append(i)
                    o += n
                pad = torch.arange(o, W, device=self.dev)
                mask[r, 0, pad, L + S + pad] = True  # padding sees itself only (no empty softmax row)
            past = copy.deepcopy(base)
            if R > 1:
                past.batch_repeat_interleave(R)
            out = decoder(input_ids=ids, attention_mask=mask, position_ids=where, use_cache=True,
                          **{self.engine._cache_arg: past})
            self.forward_passes += 1
            self.engine.forward_passes += 1
            h = out.last_hidden_state[torch.tensor(at_row, device=self.dev), torch.tensor(at_col, device=self.dev)]
            idx = torch.tensor(order, device=self.dev)
            loss[idx], hit[idx] = self._target_scores(head(h).view(len(order), T, -1))
        return loss, hit

    def _target_scores(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per candidate, from the logits ``(rows, T, vocab)`` that predict the target's T tokens: the
        mean cross-entropy of the target, and whether every target token is the argmax."""
        lg = logits.float()
        b, T = lg.shape[:2]
        loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), self.goal_t.repeat(b), reduction="none").view(b, T).mean(1)
        return loss, (lg.argmax(-1) == self.goal_t).all(1)

    def _grouped_losses(self, suffix: torch.Tensor, cands: torch.Tensor, pos: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        T, S, L = len(self.goal), len(suffix), len(self.before)
        loss = torch.empty(len(cands), device=self.dev)
        hit = torch.zeros(len(cands), dtype=torch.bool, device=self.dev)
        if self.can_share:
            _, base = self._fwd(suffix.view(1, -1), self._past(), L, keep=1)  # cache of before + suffix
            self.forward_passes += 1
            # sorted by changed position and cut into groups of at least MIN_ROWS candidates: a group
            # runs from its smallest position on (tokens before it are the current suffix's, cached);
            # one group per position would make batches too small to use the hardware when B is small
            order = torch.argsort(pos, stable=True)
            n = max(1, min(S, len(cands) // MIN_ROWS))
            groups = [(int(pos[c].min()), c) for c in torch.tensor_split(order, n) if len(c)]
        else:
            base = None
            groups = [(0, torch.arange(len(cands), device=self.dev))]
        for p, idx in groups:
            for lo in range(0, len(idx), self.batch_size):
                rows = idx[lo:lo + self.batch_size]
                b = len(rows)
                x = torch.cat([cands[rows, p:], self.tail.expand(b, -1)], dim=1)
                if base is not None:
                    past, start = self._past(S - p, b, base), L + p
                else:
                    x = torch.cat([torch.tensor(self.before, device=self.dev).expand(b, -1), x], dim=1)
                    past, start = None, 0
                logits, _ = self._fwd(x, past, start, keep=T)
                self.forward_passes += 1
                loss[rows], hit[rows] = self._target_scores(logits[:, -T:])
        return loss, hit


def gcg(
    target: LanguageModelTarget,
    request: str,
    target_text: str,
    *,
    steps: int = 250,
    search_width: int = 512,
    topk: int = 256,
    suffix_tokens: int = 20,
    init: str | None = None,
    chat: bool = True,
    early_stop: bool = True,
    allow_non_ascii: bool = False,
    batch_size: int = 512,
    max_new_tokens: int | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> GCGResult:
    """Find a suffix that makes ``target`` (a local causal LM) answer ``request`` with ``target_text``.

    Parameters
    ----------
    steps : the most optimisation steps (each: one gradient, ``search_width`` candidate losses).
    search_width : candidates per step (the paper's B, 512).
    topk : tokens kept per suffix position (the paper's k, 256).
    suffix_tokens : suffix length when ``init`` is not given (the paper's 20, initialised to " x").
    init : the initial suffix text (it must start with a space or punctuation to stay separate).
    chat : put request + suffix in a user message through the model's chat template (else raw text).
    early_stop : stop as soon as the target is the greedy answer.
    batch_size : most candidates per forward pass.
    max_new_tokens : tokens generated for the final check (default: the target's length + 8).
    seed : draws of positions and tokens.
    """
    tok = _tok(target)
    if not target_text:
        raise InputError("GCG needs a non-empty target string, e.g. 'Sure, here is'")
    if steps < 1 or search_width < 1 or topk < 1 or batch_size < 1:
        raise InputError("steps, search_width, topk and batch_size must be >= 1")
    t0, c0 = time.perf_counter(), time.process_time()
    if init is None:
        if suffix_tokens < 1:
            raise InputError(f"suffix_tokens={suffix_tokens} must be >= 1")
        suffix = _init_suffix(tok, suffix_tokens)
    else:
        suffix = torch.tensor(tok(init, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if len(suffix) == 0:
        raise InputError("the initial suffix has no tokens; give a non-empty init")
    if not bool(_retokenizes(tok, suffix.view(1, -1))[0]):
        raise InputError(f"the initial suffix {init!r} does not tokenize back to itself; use e.g. ' x' * 20")
    goal = list(tok(target_text, add_special_tokens=False)["input_ids"])
    before, after = _split_prompt(target, request, chat)
    target.budget.charge(1)  # one audited query: the whole optimisation runs on a local white-box model
    requires = [p.requires_grad for p in target.model.parameters()]
    for p in target.model.parameters():
        p.requires_grad_(False)  # gradients flow to the one-hot suffix only
    try:
        r = _Runner(target, before, after, goal, batch_size)
        dev = r.dev
        suffix = suffix.to(dev)
        allowed = allowed_tokens(tok, r.emb.weight.shape[0], allow_non_ascii).to(dev)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        S = len(suffix)
        best_loss, best_suffix, losses, history = float("inf"), suffix.clone(), [], []
        matched, evaluated, done = False, 0, 0
        for step in range(steps):
            grad, cur_loss, base = r.gradient(suffix)
            if step == 0:
                best_loss = cur_loss
            grad[:, ~allowed] = float("inf")
            top = (-grad).topk(min(topk, int(allowed.sum())), dim=1).indices  # (S, k)
            pos = torch.randint(0, S, (search_width,), generator=gen).to(dev)
            pick = torch.randint(0, top.shape[1], (search_width,), generator=gen).to(dev)
            cands = suffix.expand(search_width, -1).clone()
            cands[torch.arange(search_width, device=dev), pos] = top[pos, pick]
            keep = (cands != suffix).any(1)  # a top-k token equal to the current one changes nothing
            keep &= _retokenizes(tok, cands.cpu()).to(dev)
            cands, pos = cands[keep], pos[keep]
            if len(cands):
                cands, first = _unique_rows(cands)
                pos = pos[first]
            if not len(cands):
                losses.append(cur_loss)
                done = step + 1
                continue
            loss, hit = r.losses(suffix, cands, pos, base)
            evaluated += len(cands)
            j = int(loss.argmin())
            suffix = cands[j].clone()
            losses.append(float(loss[j]))
            history.append(tok.decode(suffix.tolist()))
            if losses[-1] < best_loss:
                best_loss, best_suffix = losses[-1], suffix.clone()
            done = step + 1
            if progress is not None:
                progress(done, losses[-1])
            if bool(hit.any()):
                if not bool(hit[j]):  # a candidate hit the target with a higher mean loss: take it
                    j = int(torch.nonzero(hit)[0])
                    suffix = cands[j].clone()
                best_suffix, best_loss = suffix.clone(), float(loss[j])
                matched = True
                if early_stop:
                    break
        forward_passes = r.forward_passes
        search_seconds, search_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for p, req in zip(target.model.parameters(), requires):
            p.requires_grad_(req)
    text = tok.decode(best_suffix.tolist())
    out = target.generate([request + text], max_new_tokens=max_new_tokens or len(goal) + 8, chat=chat)[0].text
    return GCGResult(request, target_text, text, best_suffix.tolist(), best_loss, losses, done,
                     _starts_with(out, target_text), matched, out, time.perf_counter() - t0, evaluated,
                     forward_passes, history, search_seconds, search_cpu)


def _init_suffix(tokenizer, n: int) -> torch.Tensor:
    """``n`` copies of one token, " x" as in the paper where the vocabulary has it as one token (else
    the first of a few fallbacks that does), chosen so that the text tokenizes back to ``n`` tokens."""
    for piece in (" x", " !", "x", "!", " ."):
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            row = torch.tensor(ids * n, dtype=torch.long)
            if bool(_retokenizes(tokenizer, row.view(1, -1))[0]):
                return row
    raise InputError("no single-token initial suffix (' x', ' !', ...) survives tokenization; give init")


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``x`` in order of first appearance, and their first indices."""
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(x), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(x), device=x.device), reduce="amin")
    first = first.sort().values
    return x[first], first


def _starts_with(output: str, target_text: str) -> bool:
    return output.lstrip().startswith(target_text.strip())


# ------------------------------------------------------------------ transfer
@dataclass
class Transfer:
    """A found suffix sent to another target: its answer, whether that starts with the GCG target
    string, and whether it reads as a refusal."""

    request: str
    suffix: str
    output: str
    target_hit: bool
    refused: bool


def transfer(
    results: Sequence[GCGResult | tuple[str, str, str]],
    target: LanguageModelTarget,
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    scorer: Callable[[Sequence[str]], list[bool]] | None = None,
) -> list[Transfer]:
    """Send each found prompt (request + suffix, as text) to ``target`` — any language-model target,
    a remote chat API included, within its query and token budgets — in one batched call."""
    from assay.metrics.refusal import detect_refusals

    rows = [(r.request, r.suffix, r.target_text) if isinstance(r, GCGResult) else tuple(r) for r in results]
    if not rows:
        return []
    outs = target.generate([q + s for q, s, _ in rows], max_new_tokens=max_new_tokens, chat=chat)
    texts = [o.text for o in outs]
    refused = list((scorer or detect_refusals)(texts))
    return [Transfer(q, s, o, _starts_with(o, g), bool(f)) for (q, s, g), o, f in zip(rows, texts, refused)]
