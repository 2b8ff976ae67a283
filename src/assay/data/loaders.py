"""Load evaluation data from files into a :class:`~assay.data.dataset.Dataset`.

=====================  =========================================================================
source                 what is read
=====================  =========================================================================
``*.npz``              ``x`` (or ``X``); optional ``y`` (or the key ``label`` names), ``member`` (or
                       the key ``member`` names), ``x_ood``, ``group_<name>`` or the keys
                       ``sensitive`` names (sensitive attributes), ``feature_names``,
                       ``class_names``; any other key is reported as unused
``*.npy``              inputs only; labels from another ``.npy`` (``labels=``)
``*.csv``/``.parquet`` a table with a column spec: ``label``, ``features``, ``sensitive``, ``member``
text tables            ``.csv``/``.parquet``/``.jsonl`` with ``text=`` naming the text column (JSON Lines
                       default to a column ``text``); ``label``, ``sensitive``, ``member`` as above
``*.txt``              texts, one per line, no labels (e.g. an OOD set for a text model)
a directory            an image folder ``root/<class_name>/*.png|jpg``: classes in sorted order
=====================  =========================================================================

Files are never unpickled (``np.load(..., allow_pickle=False)``). Every failure is a one-line
:class:`~assay.errors.InputError` that names the fix.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from assay.data.dataset import Dataset
from assay.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".txt")
SUPPORTED = ".npz, .npy, .csv, .parquet, .jsonl, .txt, or an image folder root/<class>/*.png"


def load_dataset(
    path: str | os.PathLike,
    *,
    label: str | None = None,
    features: Sequence[str] | str | None = None,
    sensitive: Sequence[str] | str | None = None,
    member: str | None = None,
    image_size: int | Sequence[int] | None = None,
    ood: str | os.PathLike | None = None,
    name: str | None = None,
    labels: str | os.PathLike | None = None,
    population: str | os.PathLike | None = None,
    text: str | None = None,
) -> Dataset:
    """Load a dataset from ``path`` (see the module doc for the formats).

    Parameters
    ----------
    path : a ``.npz``, ``.npy``, ``.csv`` or ``.parquet`` file, or an image folder.
    label : tables: the label column (default: a column named ``label`` if there is one, else no
        labels); ``.npz``: the key holding labels (default ``y`` / ``Y``).
    features : tables: feature columns (a list or a comma-separated string); default every other
        numeric column except the label, sensitive and member columns.
    sensitive : tables: sensitive-attribute columns, kept as ``groups`` (never features).
    member : tables: a boolean / 0-1 column, True for rows in the model's training set.
    image_size : image folders: resize every image to ``(H, W)`` (an int means square).
    ood : another data file whose inputs become the out-of-distribution set ``x_ood``.
    name : dataset name in reports; default the file name without extension.
    labels : ``.npy`` inputs: a ``.npy`` file of labels.
    population : another labelled data file of records from the same distribution that were not
        used in training (membership attacks train their reference models and draw RMIA's
        population from them as well).
    text : text tables (``.csv``, ``.parquet``, ``.jsonl``): the column holding the text; the data
        is then text (``Dataset.kind == "text"``) for a text classifier. JSON Lines default to ``text``.

    Returns
    -------
    Dataset

    Example
    -------
    >>> data = load_dataset("adult.csv", label="income", sensitive="sex")   # doctest: +SKIP
    >>> data.groups["sex"][:3]                                               # doctest: +SKIP
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"data file {p} does not exist; check the path")
    suffix = p.suffix.lower()
    dataset_name = name or (p.stem if p.is_file() else p.name)
    if labels is not None and (p.is_dir() or suffix != ".npy"):
        raise InputError("labels= is for .npy inputs only; other formats carry their labels (use label= for a column or key)")
    if p.is_dir():
        data = _load_image_folder(p, image_size, dataset_name)
    elif suffix == ".npz":
        data = _load_npz(p, label, dataset_name, _columns(sensitive), member, features)
    elif suffix == ".npy":
        data = _load_npy(p, labels, dataset_name)
    elif text is not None or suffix in TEXT_SUFFIXES:
        if features is not None:
            raise InputError("features= is for numeric tables; a text table has one text column (text=) and no features")
        data = _load_text_table(p, text, label, sensitive, member, dataset_name)
    elif suffix in TABLE_SUFFIXES:
        data = _load_table(p, label, features, sensitive, member, dataset_name)
    else:
        raise InputError(f"{p} has an unknown data format {suffix or '(no extension)'!r}; use {SUPPORTED}")
    if len(data) == 0:
        raise InputError(f"{p} holds no samples; give a non-empty dataset")
    if suffix not in (".npz", ".jsonl", ".ndjson", *TABLE_SUFFIXES) and not p.is_dir() and (sensitive or member):
        raise InputError(f"--sensitive / --member need a table or an .npz file; {p.name} carries inputs only")
    if ood is not None and data.kind == "text":
        data = replace(data, x_ood=load_dataset(ood, text=text if Path(ood).suffix.lower() != ".txt" else None).x)
    elif ood is not None:
        data = replace(data, x_ood=load_dataset(ood, image_size=image_size, features=features).x)
    if population is not None:
        pop = load_dataset(population, label=label, features=features, image_size=image_size, text=text)
        if pop.y is None:
            raise InputError(f"population file {population} has no labels; membership attacks need the label of "
                             "every population record (a label column / y array)")
        data = replace(data, population=pop)
    return data


# ----------------------------------------------------------------------------- numpy
def _np_load(p: Path):
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(
                f"{p} holds Python objects (pickled); save plain numeric/string arrays with np.savez"
            ) from None
        raise InputError(f"{p} is not a readable NumPy file ({e}); re-save it with np.save / np.savez") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{p} is not a readable NumPy file ({e}); re-save it with np.save / np.savez") from None


def _numeric(a: np.ndarray, what: str, p: Path) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{what} in {p} have dtype {a.dtype}; store numbers (encode categories first)")
    return a


def _load_npz(p: Path, label: str | None, name: str, sensitive: list[str], member: str | None,
              features) -> Dataset:
    """``x``/``X``, ``y``/``Y`` (or ``label``), sensitive attributes as ``group_<name>`` or the keys
    named by ``sensitive``, membership as ``member`` or the key named by ``member``; every other
    key is reported as unused rather than silently dropped."""
    z = _np_load(p)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"{p} is a single array, not an .npz archive; rename it to .npy or save with np.savez(x=..., y=...)")
    with z:
        keys = set(z.files)
        arrays = {k: _read(z, k, p) for k in keys}
    listing = ", ".join(sorted(keys)) or "none"
    if features:
        raise InputError(f"--features selects table columns; {p.name} is an .npz archive whose inputs are the "
                         f"'x' array (keys: {listing})")
    x_key = next((k for k in ("x", "X") if k in keys), None)
    if x_key is None:
        raise InputError(f"{p} has no 'x' array (keys: {listing}); save inputs under 'x'")
    if label is not None and label not in keys:
        raise InputError(f"{p} has no {label!r} array (keys: {listing}); check --label")
    y_key = label or next((k for k in ("y", "Y") if k in keys), None)
    x = _numeric(arrays[x_key], "inputs", p)
    y = None if y_key is None else _labels_array(arrays[y_key], p, y_key)
    group_keys = {k[len("group_"):]: k for k in sorted(keys) if k.startswith("group_")}
    for name_ in sensitive:  # --sensitive sex reads 'sex' or 'group_sex'
        key = name_ if name_ in keys else f"group_{name_}" if f"group_{name_}" in keys else None
        if key is None:
            raise InputError(f"{p} has no sensitive attribute {name_!r} (neither '{name_}' nor 'group_{name_}'; "
                             f"keys: {listing}); check --sensitive")
        group_keys[name_] = key
    if sensitive:  # the named attributes only, as for tables
        group_keys = {k: v for k, v in group_keys.items() if k in sensitive}
    groups = {g: arrays[k] for g, k in group_keys.items()}
    member_key = member or ("member" if "member" in keys else None)
    if member_key is not None and member_key not in keys:
        raise InputError(f"{p} has no membership array {member_key!r} (keys: {listing}); check --member")
    member_mask = None if member_key is None else _as_bool(arrays[member_key], f"{p}:{member_key}")
    used = {x_key, y_key, member_key, "x_ood", "feature_names", "class_names", *group_keys.values()}
    unused = sorted(k for k in keys if k not in used and not k.startswith("group_"))
    data = Dataset(x=x, y=y, name=name, groups=groups, member=member_mask, x_ood=arrays.get("x_ood"),
                   feature_names=_names(arrays.get("feature_names")), class_names=_names(arrays.get("class_names")))
    if unused:
        data.warnings.append(f"{p.name}: array(s) {', '.join(unused)} are not used (inputs '{x_key}', labels "
                             f"'{y_key}'); name them with --label / --sensitive / --member if they should be")
    return data


def _read(z, key: str, p: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        raise InputError(f"array {key!r} in {p} holds Python objects (pickled); save it as a plain numeric/string array") from e


def _names(a) -> list[str] | None:
    return None if a is None else [str(v) for v in np.asarray(a).reshape(-1)]


def _labels_array(a: np.ndarray, p: Path | str, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[1] == 1:  # a column vector
        a = a.reshape(-1)
    if a.ndim != 1:
        raise InputError(f"labels {what!r} in {p} have shape {a.shape}; give one integer class index per sample")
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"labels {what!r} in {p} have dtype {a.dtype}; give integer class indices (map names to 0..K-1)")
    if np.issubdtype(a.dtype, np.floating) and not (np.isfinite(a).all() and np.array_equal(a, np.round(a))):
        raise InputError(f"labels {what!r} in {p} are not whole numbers; give integer class indices")
    if len(a) and a.min() < 0:
        raise InputError(f"labels {what!r} in {p} are negative; give class indices 0..K-1")
    return a.astype(np.int64)


def _as_bool(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if a.dtype.kind in "OUS":
        low = np.char.lower(a.astype(str))
        ok = np.isin(low, ["true", "false", "1", "0", "yes", "no"])
        if not ok.all():
            raise InputError(f"membership {what} has values other than true/false/1/0; mark members 1 and others 0")
        return np.isin(low, ["true", "1", "yes"])
    if not np.isin(a, [0, 1]).all():
        raise InputError(f"membership {what} has values other than 0/1; mark members 1 and others 0")
    return a.astype(bool)


def _load_npy(p: Path, labels: str | os.PathLike | None, name: str) -> Dataset:
    x = _numeric(_np_load(p), "inputs", p)
    y = None
    if labels is not None:
        lp = Path(labels).expanduser()
        if not lp.exists():
            raise InputError(f"labels file {lp} does not exist; check the path")
        if lp.suffix.lower() != ".npy":
            raise InputError(f"labels file {lp} must be a .npy array of class indices")
        y = _labels_array(_np_load(lp), lp, "labels")
        if len(y) != len(x):
            raise InputError(f"{p} has {len(x)} inputs but {lp} has {len(y)} labels; give one label per input")
    return Dataset(x=x, y=y, name=name)


# ----------------------------------------------------------------------------- tables
def _columns(spec: Sequence[str] | str | None) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [c.strip() for c in spec.split(",") if c.strip()]
    return [str(c) for c in spec]


def _load_table(p: Path, label, features, sensitive, member, name: str) -> Dataset:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading tables needs pandas; pip install 'assay[tabular]'") from e
    try:
        df = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except ImportError as e:  # pragma: no cover
        raise InputError("reading Parquet needs pyarrow; pip install 'assay[tabular]'") from e
    except pd.errors.EmptyDataError:
        raise InputError(f"{p} is empty; give a table with a header row and data rows") from None
    except Exception as e:
        raise InputError(f"cannot read {p} as a table ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the file") from None
    df.columns = [str(c) for c in df.columns]
    if len(df) == 0:
        raise InputError(f"{p} has a header but no rows; give a non-empty table")
    available = list(df.columns)
    sensitive_cols = _columns(sensitive)
    feature_cols = _columns(features)
    if label is None and "label" in df.columns:
        label = "label"
    named = ([label] if label else []) + sensitive_cols + ([member] if member else []) + feature_cols
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise InputError(
            f"{p} has no column(s) {', '.join(map(repr, missing))}; its columns are {', '.join(available[:20])}"
            + (" ..." if len(available) > 20 else "")
        )
    taken = {label, member, *sensitive_cols} - {None}
    overlap = taken & set(feature_cols)
    if overlap:
        raise InputError(f"column(s) {', '.join(sorted(overlap))} are both features and label/sensitive/member; use each once")
    if not feature_cols:
        feature_cols = [c for c in df.columns if c not in taken]
    if not feature_cols:
        raise InputError(f"{p} has no feature columns left after the label/sensitive/member columns; add features")
    non_numeric = [c for c in feature_cols if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    if non_numeric:
        raise InputError(
            f"feature column(s) {', '.join(non_numeric[:10])} are not numeric; encode them (e.g. one-hot) "
            "or mark them --sensitive / leave them out with --features (for a text model, name the text "
            "column with --text-column)"
        )
    x = df[feature_cols].to_numpy(dtype=np.float32, copy=True)
    nan_cols = [c for c, bad in zip(feature_cols, np.isnan(x).any(axis=0)) if bad]
    if nan_cols:
        raise InputError(f"feature column(s) {', '.join(nan_cols[:10])} have missing values; impute or drop those rows first")
    y, class_names = _table_labels(df, label, p)
    groups = {c: df[c].to_numpy() for c in sensitive_cols}
    member_mask = None if member is None else _as_bool(df[member].to_numpy(), f"column {member!r}")
    return Dataset(x=x, y=y, name=name, groups=groups, member=member_mask, feature_names=feature_cols,
                   class_names=class_names, kind="tabular")


def _table_labels(df, label: str | None, p: Path) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels from a table column: integer class indices as they are, names numbered in sorted order."""
    import pandas as pd

    if not label:
        return None, None
    col = df[label]
    if col.isna().any():
        raise InputError(f"label column {label!r} has missing values; drop the unlabeled rows")
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return _labels_array(col.to_numpy(), p, label), None
    class_names = sorted(col.astype(str).unique())  # sorted, so label i is the i-th name
    return np.searchsorted(np.asarray(class_names), col.astype(str).to_numpy()).astype(np.int64), class_names


def _read_text_file(p: Path):
    """A text table as a DataFrame: CSV, Parquet, JSON Lines, or ``.txt`` (one text per line, column ``text``)."""
    import pandas as pd

    suffix = p.suffix.lower()
    if suffix == ".txt":
        lines = p.read_text(encoding="utf-8", errors="strict").splitlines()
        return pd.DataFrame({"text": [t for t in lines if t.strip()]})
    if suffix in (".jsonl", ".ndjson"):
        return pd.DataFrame([row for _, row in read_jsonl(p)])
    if suffix in TABLE_SUFFIXES:
        return pd.read_csv(p, keep_default_na=False, na_values=[""]) if suffix == ".csv" else pd.read_parquet(p)
    raise InputError(f"{p} is not a text table; give .csv, .parquet, .jsonl or .txt for text data")


def _load_text_table(p: Path, text, label, sensitive, member, name: str) -> Dataset:
    """A table with one text column (see :func:`load_dataset`)."""
    try:
        import pandas as pd  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading text tables needs pandas; pip install 'assay[tabular]'") from e
    try:
        df = _read_text_file(p)
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read {p} as a text table ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the file") from None
    df.columns = [str(c) for c in df.columns]
    if len(df) == 0:
        raise InputError(f"{p} has no rows; give a non-empty text file")
    if text is None:
        if "text" not in df.columns:
            raise InputError(f"{p} has no column 'text' (columns: {', '.join(list(df.columns)[:20])}); name the text column with --text-column")
        text = "text"
    if label is None and "label" in df.columns:
        label = "label"
    sensitive_cols = _columns(sensitive)
    named = [text] + ([label] if label else []) + sensitive_cols + ([member] if member else [])
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise InputError(f"{p} has no column(s) {', '.join(map(repr, missing))}; its columns are {', '.join(list(df.columns)[:20])}")
    if len(set(named)) != len(named):
        raise InputError("the text, label, sensitive and member columns must be different columns; use each once")
    col = df[text]
    empty = col.isna().to_numpy()
    if empty.any():
        raise InputError(f"text column {text!r} is missing in rows {np.flatnonzero(empty)[:5].tolist()}; fill or drop those rows")
    not_str = [i for i, v in enumerate(col) if not isinstance(v, str)]
    if not_str:
        raise InputError(f"text column {text!r} holds {type(col.iloc[not_str[0]]).__name__} values (rows {not_str[:5]}), "
                         "not text; check --text-column")
    y, class_names = _table_labels(df, label, p)
    groups = {c: df[c].astype(str).to_numpy() if df[c].dtype == object else df[c].to_numpy() for c in sensitive_cols}
    member_mask = None if member is None else _as_bool(df[member].to_numpy(), f"column {member!r}")
    return Dataset(x=col.to_numpy(dtype=object), y=y, name=name, groups=groups, member=member_mask,
                   class_names=class_names, kind="text")


# ----------------------------------------------------------------------------- images
def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise InputError(f"image_size {image_size!r} must be a positive int or (height, width)")
    return size  # type: ignore[return-value]


def _load_image_folder(root: Path, image_size, name: str) -> Dataset:
    """``root/<class>/*.png``: classes sorted by name; images as float CHW in [0, 1].

    Mixed grayscale and colour images are all converted to the majority mode (``L`` or ``RGB``;
    ties go to RGB, which loses nothing); alpha is dropped.
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("reading image folders needs Pillow; pip install 'assay[images]'") from e
    size = _size(image_size)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders; arrange images as {root}/<class_name>/*.png")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        files += [(f, label) for f in sorted((root / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/; add images or check the folder")
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except Exception as e:
            raise InputError(f"cannot read image {f} ({type(e).__name__}); remove or re-save it") from None
    gray = sum(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
    mode = "L" if gray > len(images) - gray else "RGB"
    arrays = []
    for im in images:
        im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.uint8))
    common = Counter(a.shape for a in arrays).most_common(1)[0][0]
    odd = next(((f, a.shape) for (f, _), a in zip(files, arrays) if a.shape != common), None)
    if odd is not None:
        raise InputError(
            f"images have different sizes (e.g. {odd[0]} is {odd[1][:2]}, most are {common[:2]}); "
            "pass --image-size H,W to resize them"
        )
    x = np.stack(arrays).astype(np.float32) / 255.0
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    y = np.array([lab for _, lab in files], dtype=np.int64)
    return Dataset(x=torch.from_numpy(np.ascontiguousarray(x)), y=y, name=name, class_names=classes, kind="image")


def read_jsonl(p: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-empty line of a JSON Lines file; a line that is not a
    JSON object is a one-line error naming the line."""
    import json

    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p}:{i} is not JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(row, dict):
                raise InputError(f"{p}:{i} is a JSON {type(row).__name__}, not an object; write one JSON object per line")
            yield i, row
