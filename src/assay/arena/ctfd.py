"""Export a challenge pack in CTFd's import format (a zip of ``db/<table>.json`` plus ``uploads/``).

CTFd (3.x) backups hold one JSON file per table, each ``{"count": n, "results": [rows], "meta": {}}``,
``db/alembic_version.json`` naming the schema revision the rows follow, and uploaded files under
``uploads/<folder>/<name>`` referenced by ``files.location = "<folder>/<name>"``. We write the
tables a challenge pack needs: challenges, files, flags, tags, hints (empty), dynamic_challenge
(when dynamic scoring is chosen), with exactly the columns of the schema revision named.

CTFd's importer (``CTFd.utils.exports.import_ctf``) creates the schema at the backup's revision,
inserts the rows, then runs the migrations up to its own head. So the revision decides which CTFd
releases can import a backup: it must be one of theirs, and every later migration must accept the
rows. CTFd 3.8.0's migration ``f73a96c97449`` adds ``challenges.logic`` as NOT NULL with no server
default, which PostgreSQL refuses on a table that already holds rows: a backup at an older revision
fails there with ``NotNullViolation``. Hence one target per release line (:data:`CTFD_TARGETS`):
``3.8`` writes revision ``f73a96c97449`` with ``logic = "any"`` (CTFd's default: any one flag
solves), ``3.7`` writes revision ``9e6f6578ca84`` (present from CTFd 3.6.0 on; the migrations
after it up to 3.7.7 add nullable columns and new tables only).

Per-player flags: CTFd's built-in flag types are static strings or regexes shared by all accounts,
so they cannot hold assay's per-player flags (a regex such as ``assay\\{[0-9a-f]{32}\\}`` would
accept anyone's flag, or a made-up one). Each challenge therefore gets one flag row of the type
``assay`` (content: the assay challenge id), and the export writes, beside the zip, a CTFd plugin
(``assay_arena/``, from ``assay.arena.ctfd_plugin``) that registers that type: a submission in CTFd
is checked by the assay server's operator-only ``POST /api/verify`` for the submitting user, with
assay's rule, rate limit and sharing log. The models and query budgets stay on the assay server.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from assay.arena.challenge import ChallengeSpec
from assay.arena.scoring import dynamic_value
from assay.errors import InputError

# CTFd release line -> the alembic revision the exported rows follow (see the module docstring).
CTFD_TARGETS = {"3.7": "9e6f6578ca84", "3.8": "f73a96c97449"}
DEFAULT_CTFD = "3.8"
CTFD_ALEMBIC_REVISION = CTFD_TARGETS[DEFAULT_CTFD]
PER_PLAYER_NOTE = (
    "\n\n---\nThis is an assay arena challenge with per-player flags: query the model on the assay arena server "
    "({url}) under the same player name as here; your flag is yours alone and is checked by that server."
)
FLAG_TYPE = "assay"  # registered in CTFd by the exported plugin (assay.arena.ctfd_plugin)
PLUGIN_NAME = "assay_arena"


def _table(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"count": len(rows), "results": rows, "meta": {}}, separators=(",", ":")).encode()


def export_ctfd(challenges: dict[str, ChallengeSpec], out: Path, *, server_url: str = "<arena url>",
                dynamic: bool = False, decay: int = 50, min_fraction: float = 0.2,
                artifacts: dict[str, dict[str, bytes]] | None = None, plugin_dir: Path | None = None,
                ctfd_version: str = DEFAULT_CTFD) -> Path:
    """Write ``out`` (a .zip; ``.zip`` is appended to a directory-like name) for CTFd's
    Admin > Config > Backup > Import.

    Parameters
    ----------
    challenges: ``discover()``'s result (built and loaded, if ``artifacts`` is not given).
    out: the zip path (or a directory, in which ``assay-arena-ctfd.zip`` is written).
    server_url: the assay server players use, named in each description.
    dynamic: export CTFd "dynamic" challenges with CTFd's quadratic decay (initial = points,
        minimum = ceil(min_fraction * points), decay = ``decay``).
    artifacts: challenge id -> {name: bytes}; default each challenge's ``artifacts()``.
    plugin_dir: where to write the CTFd plugin package (copy it to ``CTFd/plugins/``); default
        ``<zip folder>/assay_arena``.
    ctfd_version: the CTFd release line to import into, a key of :data:`CTFD_TARGETS` ("3.8":
        CTFd 3.8.0-3.8.7; "3.7": CTFd 3.7.0-3.7.7).

    Returns
    -------
    The path of the written zip.
    """
    if ctfd_version not in CTFD_TARGETS:
        raise InputError(f"unknown CTFd version {ctfd_version!r}; choose one of {', '.join(CTFD_TARGETS)}")
    revision = CTFD_TARGETS[ctfd_version]
    # columns at f73a96c97449 (3.8) but not at 9e6f6578ca84: challenges.logic (NOT NULL), files.sha1sum
    since_38 = ctfd_version == "3.8"
    out = Path(out)
    if out.suffix != ".zip":
        out.mkdir(parents=True, exist_ok=True)
        out = out / "assay-arena-ctfd.zip"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    chal_rows, file_rows, tag_rows, dyn_rows, flag_rows = [], [], [], [], []
    uploads: dict[str, bytes] = {}
    for i, (cid, spec) in enumerate(sorted(challenges.items()), start=1):
        m = spec.manifest
        chal_rows.append({
            "id": i, "name": m.name[:80], "description": m.description + PER_PLAYER_NOTE.format(url=server_url),
            "connection_info": f"{server_url}/api/challenges/{cid}/score", "next_id": None,
            "max_attempts": m.submission_limit, "value": m.points, "category": m.category[:80],
            "type": "dynamic" if dynamic else "standard", "state": "visible", "requirements": None,
            **({"logic": "any"} if since_38 else {}),
        })
        if dynamic:
            # The decay function column is added by CTFd's dynamic_challenges plugin migration
            # (eb68f277ab61), which fills it with "logarithmic" (CTFd's name for this quadratic decay):
            # not a column at the exported revision, so not a key here.
            minimum = dynamic_value(m.points, 10**9, decay, min_fraction)
            dyn_rows.append({"id": i, "initial": m.points, "minimum": minimum, "decay": decay})
        flag_rows.append({"id": i, "challenge_id": i, "type": FLAG_TYPE, "content": cid, "data": None})
        tag_rows += [{"id": len(tag_rows) + 1, "challenge_id": i, "value": m.difficulty},
                     {"id": len(tag_rows) + 2, "challenge_id": i, "value": f"assay:{cid}"}]
        arts = (artifacts or {}).get(cid)
        if arts is None:
            arts = spec.challenge.artifacts()
        for name, content in sorted(arts.items()):
            folder = hashlib.md5(f"{cid}/{name}".encode()).hexdigest()  # noqa: S324 - a folder name, not security
            location = f"{folder}/{Path(name).name}"
            file_rows.append({"id": len(file_rows) + 1, "type": "challenge", "location": location,
                              "challenge_id": i, "page_id": None,
                              **({"sha1sum": hashlib.sha1(content).hexdigest()} if since_38 else {})})  # noqa: S324
            uploads[location] = content
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("db/alembic_version.json", _table([{"version_num": revision}]))
        z.writestr("db/challenges.json", _table(chal_rows))
        z.writestr("db/dynamic_challenge.json", _table(dyn_rows))
        z.writestr("db/flags.json", _table(flag_rows))  # checked by the plugin: see the module docstring
        z.writestr("db/files.json", _table(file_rows))
        z.writestr("db/tags.json", _table(tag_rows))
        z.writestr("db/hints.json", _table([]))
        for location, content in uploads.items():
            z.writestr(f"uploads/{location}", content)
    write_plugin(plugin_dir if plugin_dir is not None else out.parent / PLUGIN_NAME, server_url)
    return out


def write_plugin(folder: Path, server_url: str) -> Path:
    """Write the CTFd plugin package (``__init__.py``) into ``folder``, defaulting its URL to ``server_url``."""
    from assay.arena import ctfd_plugin

    source = Path(ctfd_plugin.__file__).read_text()
    if server_url.startswith(("http://", "https://")):
        line = f'DEFAULT_URL = "{ctfd_plugin.DEFAULT_URL}"'
        if line not in source:
            raise RuntimeError("assay.arena.ctfd_plugin lost its DEFAULT_URL line; the exporter cannot set the URL")
        source = source.replace(line, f"DEFAULT_URL = {server_url!r}", 1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(source)
    return folder
