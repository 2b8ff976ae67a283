"""Hugging Face ``transformers`` classifiers, loaded only from a local directory (never the Hub).

Image classifiers become white-box :class:`~assay.targets.torch.TorchTarget` s on pixels in [0, 1]
with the image processor's mean/std made explicit, so attacks get gradients and budgets in pixel
units. Text classifiers are targets whose inputs are lists of strings (scores and labels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from assay.errors import InputError, TargetError
from assay.inference import offline_transformers
from assay.targets.base import LABELS, SCORES, Target
from assay.targets.torch import TorchTarget

TASKS = ("image-classification", "text-classification")


def _transformers():
    return offline_transformers()


def _class_names(config) -> list[str] | None:
    id2label = getattr(config, "id2label", None) or {}
    try:
        return [str(id2label[i]) for i in range(len(id2label))]
    except KeyError:
        return None


def infer_task(config) -> str:
    """The task from the config's architecture name (``...ForImageClassification`` etc.)."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForImageClassification"):
            return "image-classification"
        if arch.endswith("ForSequenceClassification"):
            return "text-classification"
    raise InputError(
        f"cannot tell the task from the config (architectures={getattr(config, 'architectures', None)}); "
        f"pass task= one of {', '.join(TASKS)}"
    )


class _Logits(nn.Module):
    """``pixel_values -> logits`` so the model is a plain tensor-in, tensor-out module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


class HuggingFaceImageTarget(TorchTarget):
    """A ``transformers`` image classifier on pixels in [0, 1] (white-box; see the module doc)."""

    kind = "huggingface-image"

    def __init__(self, model: nn.Module, *, class_names: list[str] | None = None, source: str | None = None, **kw):
        super().__init__(_Logits(model), **kw)
        self.class_names = class_names
        self.source = source

    def describe(self):
        d = super().describe()
        d.update(source=self.source, class_names=self.class_names)
        return d


class HuggingFaceTextTarget(Target):
    """A ``transformers`` text classifier whose inputs are strings.

    ``scores(["a review", ...])`` returns ``(N, num_labels)`` logits and charges ``N`` queries;
    ``labels`` and ``probs`` work as for any target. ``input_shape`` is ``()``: one string per
    sample. Texts longer than ``max_length`` tokens are truncated.
    """

    kind = "huggingface-text"
    output = "logits"
    inputs = "text"

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = "cpu",
        query_budget: int | None = None,
        batch_size: int = 32,
        class_names: list[str] | None = None,
        source: str | None = None,
        name: str | None = None,
    ):
        from assay.targets.torch import pick_device

        self._device = pick_device(device)
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer
        limit = getattr(model.config, "max_position_embeddings", None) or 512
        self.max_length = min(max_length or limit, limit)
        self.class_names = class_names
        self.source = source
        super().__init__(
            num_classes=model.config.num_labels,
            input_shape=(),
            bounds=(0.0, 1.0),  # not meaningful for text; kept for the common interface
            capabilities={SCORES, LABELS},
            query_budget=query_budget,
            batch_size=batch_size,
            name=name or type(model).__name__,
        )

    @property
    def device(self) -> torch.device:
        return self._device

    @torch.no_grad()
    def _scores(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items()}
        return self.model(**enc).logits.float().cpu()

    def content_digest(self) -> str:
        from assay.targets.identity import module_digest

        return module_digest(self.model) + "|" + str(getattr(self.tokenizer, "name_or_path", ""))

    def describe(self):
        d = super().describe()
        d.update(source=self.source, class_names=self.class_names, input="text", max_length=self.max_length)
        return d

    def fingerprint(self) -> str:
        """The weights, the config and the tokenizer's vocabulary and rules, not the directory's name: two
        models that differ in any of them never share a checkpoint; the same model moved does."""
        import hashlib
        import json

        h = hashlib.sha256(f"{self.kind}|{self.num_classes}|{self.max_length}".encode())
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        config = {k: v for k, v in self.model.config.to_dict().items() if "name_or_path" not in k}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # a fast tokenizer serialises its whole pipeline
            h.update(backend.to_str().encode())
        else:
            h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
        return h.hexdigest()[:16]


def _image_size(processor, config) -> tuple[int, int]:
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None)
        if size is None:
            continue
        get = size.get if isinstance(size, dict) else (lambda k, s=size: getattr(s, k, None))
        h, w = get("height"), get("width")
        if h and w:
            return int(h), int(w)
        if get("shortest_edge"):
            return int(get("shortest_edge")), int(get("shortest_edge"))
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        return int(image_size[0]), int(image_size[1])
    raise InputError("cannot tell the model's image size from its processor or config; pass input_shape=(C, H, W)")


class HuggingFaceTarget:
    """Entry point: :meth:`from_pretrained` builds the right target for a local model directory."""

    @staticmethod
    def from_pretrained(
        local_dir: str | os.PathLike,
        task: str | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device | None = "auto",
        query_budget: int | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
    ) -> HuggingFaceImageTarget | HuggingFaceTextTarget:
        """Load a classifier saved with ``save_pretrained`` from ``local_dir`` (offline only).

        Parameters
        ----------
        local_dir : directory holding ``config.json`` and the weights (safetensors preferred;
            ``transformers`` refuses pickled ``.bin`` weights unless it judges them safe).
        task : ``"image-classification"`` or ``"text-classification"``; default from the config.
        input_shape : image models: ``(C, H, W)``; default from the processor / config.
        mean, std : image models: per-channel normalization in [0, 1] pixel units; default the
            image processor's ``image_mean`` / ``image_std`` (when it normalizes).
        device, query_budget, batch_size : as for :class:`~assay.targets.torch.TorchTarget`.
        max_length : text models: truncation length in tokens.

        Returns
        -------
        :class:`HuggingFaceImageTarget` (white-box, inputs in [0, 1]) or
        :class:`HuggingFaceTextTarget` (inputs are strings).

        Example
        -------
        >>> t = HuggingFaceTarget.from_pretrained("./my-vit")        # doctest: +SKIP
        >>> t.scores(torch.rand(2, *t.input_shape)).shape            # doctest: +SKIP
        """
        path = Path(local_dir)
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a Hugging Face model directory (no config.json); save the model with save_pretrained")
        tf = _transformers()
        try:
            config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as e:
            raise TargetError(f"cannot read {path / 'config.json'} ({_first_line(e)}); check the model directory") from e
        task = task or infer_task(config)
        if task not in TASKS:
            raise InputError(f"task {task!r} is not supported; use one of {', '.join(TASKS)}")
        names = _class_names(config)
        extra = {} if batch_size is None else {"batch_size": batch_size}
        if task == "image-classification":
            model = _load(tf.AutoModelForImageClassification, path)
            processor = _optional(lambda: tf.AutoImageProcessor.from_pretrained(path, local_files_only=True))
            if mean is None and std is None and processor is not None and getattr(processor, "do_normalize", False):
                mean, std = list(processor.image_mean), list(processor.image_std)
            if input_shape is None:
                channels = int(getattr(config, "num_channels", 3))
                input_shape = (channels, *_image_size(processor, config))
            if mean is not None and len(mean) == 1 and input_shape[0] > 1:
                mean, std = list(mean) * input_shape[0], list(std) * input_shape[0]
            return HuggingFaceImageTarget(
                model, input_shape=tuple(input_shape), num_classes=config.num_labels, bounds=(0.0, 1.0),
                mean=mean, std=std, device=device, query_budget=query_budget, class_names=names,
                source=str(path), name=type(model).__name__, **extra,
            )
        model = _load(tf.AutoModelForSequenceClassification, path)
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:
            raise TargetError(f"cannot load the tokenizer from {path} ({_first_line(e)}); save it with tokenizer.save_pretrained") from e
        return HuggingFaceTextTarget(
            model, tokenizer, max_length=max_length, device=device,
            query_budget=query_budget, class_names=names, source=str(path), **extra,
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _optional(fn):
    try:
        return fn()
    except Exception:
        return None


def _load(auto_cls, path: Path) -> nn.Module:
    try:
        return auto_cls.from_pretrained(path, local_files_only=True).eval()
    except Exception as e:
        raise TargetError(f"cannot load the model from {path} ({_first_line(e)}); check the directory's weights and config") from e
