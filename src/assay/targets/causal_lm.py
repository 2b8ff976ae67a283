"""A local causal language model: a Hugging Face directory, or one ``.gguf`` file.

Both load offline only. A GGUF file is dequantized by ``transformers`` (with the ``gguf`` and
``accelerate`` packages) once; the float weights, config, tokenizer and chat template are then kept
as a Hugging Face directory (safetensors) in the user's cache directory, keyed by the file's
SHA-256, so later loads take a second instead of minutes. ``save_pretrained`` refuses a
GGUF-loaded model, so the state dict is copied into a model built from its config first.

Generation and scoring run in :class:`~assay.generation.GenerationEngine` (batched, KV-cached).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from assay.errors import InputError, TargetError
from assay.generation import GenerationEngine
from assay.targets.base import GENERATE
from assay.targets.llm import LOGPROBS, Completion, LanguageModelTarget, Prompt, TokenLogprobs

GGUF_MAGIC = b"GGUF"
_DONE = "assay-converted.json"


def _transformers():
    from assay.targets.huggingface import _transformers as load  # offline settings live there

    return load()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted models are kept: ``cache_dir``, else ``$ASSAY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/assay`` (``~/.cache/assay``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("ASSAY_CACHE_DIR"):
        return Path(os.environ["ASSAY_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "assay"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_gguf(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize the GGUF file at ``path`` into a Hugging Face directory in the cache and return it
    (immediately, when this file's hash was converted before).

    Raises
    ------
    InputError : the file is missing or not GGUF.
    TargetError : ``gguf`` / ``accelerate`` are missing, or transformers cannot read this model.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"GGUF file {path} does not exist; check the path")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InputError(f"{path} is not a GGUF file (no GGUF header); give a .gguf model file")
    digest = file_sha256(path)
    out = cache_root(cache_dir) / "gguf" / digest[:32]
    if (out / _DONE).is_file():
        return out
    for mod in ("gguf", "accelerate"):
        try:
            __import__(mod)
        except ImportError:
            raise TargetError(f"loading a GGUF file needs the {mod!r} package; pip install 'assay[llm]'") from None
    tf = _transformers()
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as e:
        raise TargetError(f"transformers cannot load {path.name} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          "check that its architecture is one transformers dequantizes from GGUF") from e
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain floats
    fresh = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = copy.deepcopy(loaded.generation_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _DONE).write_text(json.dumps({"source": path.name, "sha256": digest}))
        if out.exists():  # a half-written directory from a killed run, or a concurrent conversion
            if (out / _DONE).is_file():
                return out
            shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_causal_lm_dir(path: str | os.PathLike) -> bool:
    """Whether a Hugging Face directory's config names a ``...ForCausalLM`` architecture."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in cfg.get("architectures") or [])


class CausalLMTarget(LanguageModelTarget):
    """A local causal LM with its tokenizer; white-box enough to give every token's log-probability.

    Parameters
    ----------
    model : a ``transformers`` causal LM (``...ForCausalLM``), or any module with the same call.
    tokenizer : its tokenizer; the chat template (if any) comes from it.
    device : ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    system_prompt : a system message put before chat prompts that have none.
    add_bos : start every raw-text prompt with the BOS token (when the tokenizer does not add it
        itself), so that a text is scored and continued as it is seen at the start of a training
        sequence; the empty prompt is the BOS token alone.
    query_budget, token_budget : hard limits (one query per prompt; prompt plus generated tokens).
    max_batch_size, max_batch_tokens : batching limits of the engine (it halves on out-of-memory).

    Example
    -------
    >>> t = CausalLMTarget.from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")          # doctest: +SKIP
    >>> t.generate(["The capital of France is"], max_new_tokens=5)[0].text    # doctest: +SKIP
    """

    kind = "causal-lm"
    token_stats = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        device: str | torch.device | None = "auto",
        system_prompt: str | None = None,
        add_bos: bool = True,
        query_budget: int | None = None,
        token_budget: int | None = None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        source: str | None = None,
        name: str | None = None,
    ):
        from assay.targets.torch import pick_device

        if tokenizer is None:
            raise InputError("a causal-LM target needs the model's tokenizer")
        self._device = pick_device(device)
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.add_bos = bool(add_bos)
        self.source = source
        self.engine = GenerationEngine(self.model, tokenizer, max_batch_size=max_batch_size,
                                       max_batch_tokens=max_batch_tokens)
        self._fingerprint: str | None = None
        super().__init__(capabilities={GENERATE, LOGPROBS}, query_budget=query_budget, token_budget=token_budget,
                         vocab_size=self.engine.vocab_size, batch_size=max_batch_size,
                         name=name or (Path(source).name if source else type(model).__name__))

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kw: Any) -> CausalLMTarget:
        """Load a local Hugging Face causal-LM directory (never the Hub)."""
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a Hugging Face model directory (no config.json)")
        tf = _transformers()
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (ValueError, OSError, KeyError) as e:
            raise TargetError(f"cannot load the causal LM in {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                              "check that the directory holds a complete transformers model and tokenizer") from e
        kw.setdefault("source", str(path))
        return cls(model, tokenizer, **kw)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, **kw: Any) -> CausalLMTarget:
        """Load one ``.gguf`` file (dequantized once, then read from the cache; see the module doc)."""
        converted = convert_gguf(path, cache_dir)
        kw.setdefault("name", Path(path).name)
        target = cls.from_pretrained(converted, **kw)
        target.source = str(path)
        return target

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self._device

    def _bos(self) -> list[int]:
        tok = self.tokenizer
        for i in (tok.bos_token_id, tok.eos_token_id):
            if i is not None:
                return [int(i)]
        raise TargetError(f"{self.name}'s tokenizer has neither a BOS nor an EOS token to start an empty prompt")

    def encode(self, text: str) -> list[int]:
        """Token ids of raw text: the tokenizer's own special tokens, and a BOS first (``add_bos``)."""
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, int(bos))
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, prompt: Prompt, chat: bool) -> list[int]:
        """A prompt's token ids: raw text, or messages through the tokenizer's chat template."""
        if isinstance(prompt, str) and not chat:
            ids = self.encode(prompt)
            return ids if ids else self._bos()
        ids = list(self.tokenizer(self.chat_text(prompt), add_special_tokens=False)["input_ids"])
        return ids if ids else self._bos()

    def chat_text(self, prompt: Prompt) -> str:
        """A prompt (one user message, or messages) rendered by the chat template, with the target's
        system prompt first when it has none, ready for the assistant's answer."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"{self.name}'s tokenizer has no chat template; send raw text prompts (chat=False)")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # ---------------------------------------------------------------- queries
    def _generate(self, prompts: list[Prompt], *, max_new_tokens: int, temperature: float, top_k: int,
                  top_p: float, seed: int, stop: list[str], chat: bool) -> list[Completion]:
        ids = [self.render(p, chat) for p in prompts]
        reserve = sum(map(len, ids)) + max_new_tokens * len(ids)
        self.budget.charge(len(ids))
        self.token_budget.charge(reserve)
        # on an error the reservation stays charged: we cannot tell how much ran
        out = self.engine.generate(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, stop=stop)
        used = sum(g.prompt_tokens + len(g.ids) + (g.finish_reason == "eos") for g in out)
        self.token_budget.refund(max(0, reserve - used))
        return [Completion(g.text, g.finish_reason, g.prompt_tokens, len(g.ids)) for g in out]

    def _logprobs(self, prompts: list[str], continuations: list[str], *, stats: bool) -> list[TokenLogprobs]:
        p_ids = [self.encode(p) or self._bos() for p in prompts]
        c_ids = [self.encode_continuation(c) for c in continuations]
        self.budget.charge(len(p_ids))
        self.token_budget.charge(sum(len(p) + len(c) for p, c in zip(p_ids, c_ids)))
        scored = self.engine.score(p_ids, c_ids, stats=stats)
        out = []
        for c, s in zip(c_ids, scored):
            toks = [self.tokenizer.decode([i]) for i in c]
            out.append(TokenLogprobs(s.logprobs.double().numpy(), toks,
                                     None if s.mean is None else s.mean.double().numpy(),
                                     None if s.std is None else s.std.double().numpy()))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.encode_continuation(t)) for t in texts]

    # ------------------------------------------------------------ description
    def fingerprint(self) -> str:
        """Hash of the weights (a fine-tuned copy never reuses the original's checkpoint)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k, v in self.model.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            h.update(json.dumps(getattr(self.tokenizer, "chat_template", None) or "").encode())
            h.update(f"{self.system_prompt}|{self.add_bos}".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        cfg = getattr(self.model, "config", None)
        d.update(
            source=self.source,
            architecture=(getattr(cfg, "architectures", None) or [type(self.model).__name__])[0],
            parameters=int(sum(p.numel() for p in self.model.parameters())),
            chat_template=bool(getattr(self.tokenizer, "chat_template", None)),
            device=str(self._device),
        )
        return d
