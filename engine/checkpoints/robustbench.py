"""RobustBench's model zoo, loaded by name: its cache layout, its downloads, our architectures.

RobustBench (``robustbench.utils.load_model``) keeps checkpoints as
``<model_dir>/<dataset>/<threat>/<name>.pt`` (default ``model_dir`` ``./models``) and downloads
missing ones from Google Drive. :func:`load_robustbench` reads the same files, the same way
(``ckpt['state_dict']`` when present, ``ckpt['last']`` for the entries RobustBench reads so,
``module.``/``model.`` prefixes removed), with ``torch.load(weights_only=True)`` only (nothing in
the file runs), into the RobustScope architecture our table names for the entry.

The table (``robustbench_zoo.json`` beside this module) holds facts about every entry of
RobustBench 1.1.1's zoo (``robustbench/model_zoo/{cifar10,cifar100,imagenet}.py``): the
architecture and options that reproduce its network, the input normalisation that network applies
(``null``: none, it takes [0, 1] images), the preprocessing RobustBench evaluates ImageNet with,
where its file is downloaded from, and the leaderboard's reported clean / AutoAttack accuracy from
the RobustBench repository's ``model_info/`` JSON. Entries whose network RobustScope cannot build
(ensembles, custom layers, transformers with modified stems, ...) say why under ``unsupported``.

Downloads (:func:`download_file`) resume from a ``.part`` file with an HTTP Range request, check
the size the server announced (and a checksum when the table knows one), and refuse an HTML page
(Google Drive answers quota or virus-scan warnings with one, which RobustBench has saved as
``.pt`` before: robustbench#177, #81).
"""
from __future__ import annotations

import difflib
import functools
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engine.catalogue import ROBUSTBENCH_DATASETS
from engine.checkpoints.importers import (
    ImportedState,
    Normalization,
    _tensors_only,
    assemble_model,
    parse_normalization,
    save_imported,
)
from engine.checkpoints.making import make_card
from engine.checkpoints.safe_io import SNIFF_BYTES, read_weights, sha256_file, sniff
from engine.checkpoints.store import LoadedCheckpoint
from engine.errors import CheckpointError, InvalidParameterError

ZOO_PATH = Path(__file__).with_name("robustbench_zoo.json")
DATASETS = ROBUSTBENCH_DATASETS
THREATS = ("Linf", "L2", "corruptions")
#: RobustBench's default ``model_dir``.
DEFAULT_MODEL_DIR = Path("models")
#: Google Drive's direct-download address for a file id (``confirm=t`` skips the "cannot scan
#: for viruses" page that large files otherwise get).
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
PART_SUFFIX = ".part"
_CHUNK = 1 << 20
_INPUT_CHANNELS = 3

ProgressFn = Callable[[int, int | None], None]


class DownloadError(CheckpointError):
    """A checkpoint could not be downloaded (offline, refused, wrong size, an HTML page, ...)."""


# ---------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class ZooEntry:
    """One RobustBench zoo entry, as our table records it.

    Attributes:
        name, dataset, threat: RobustBench's keys (``"Carmon2019Unlabeled"``, ``"cifar10"``, ``"Linf"``).
        arch, arch_kwargs: the RobustScope architecture reproducing RobustBench's network (None
            when there is none; ``unsupported`` says why).
        num_classes: logits.
        normalization: (mean, std) the network applies to its [0, 1] input; None: none.
        input_size: image side the network is evaluated at (32 on CIFAR; 224 or 288 on ImageNet).
        preprocessing: RobustBench's ImageNet preprocessing (name, resize, crop, interpolation).
        files: where the checkpoint is downloaded from: ``{"gdrive_id": ...}`` or ``{"url": ...}``
            (several for ensembles); None when RobustBench loads it through timm's hub.
        checkpoint_key: the key RobustBench reads the weights from (``"last"``) besides ``state_dict``.
        key_filter: a known key conversion (``"timm_swin"``: timm's Swin checkpoint filter).
        robustbench_model: RobustBench's constructor, in words.
        leaderboard: the leaderboard's figures (fractions), paper, venue, ε, norm and source.
        unsupported: why RobustScope cannot load it, or None.
    """

    name: str
    dataset: str
    threat: str
    arch: str | None
    arch_kwargs: dict = field(default_factory=dict)
    num_classes: int = 10
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    input_size: int = 32
    preprocessing: dict | None = None
    files: tuple[dict, ...] | None = None
    checkpoint_key: str | None = None
    key_filter: str | None = None
    robustbench_model: str = ""
    leaderboard: dict | None = None
    unsupported: str | None = None

    @property
    def supported(self) -> bool:
        """True when RobustScope can build its network and load its single checkpoint file."""
        return self.unsupported is None and self.arch is not None and bool(self.files) and len(self.files) == 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the network takes."""
        return (_INPUT_CHANNELS, self.input_size, self.input_size)

    def table_normalization(self) -> Normalization:
        """The normalisation RobustBench's network applies ("none" when it takes [0, 1] as is)."""
        if self.normalization is None:
            return Normalization(source="RobustBench table")
        return Normalization(tuple(self.normalization[0]), tuple(self.normalization[1]), "RobustBench table")


def _entry(raw: Mapping[str, Any]) -> ZooEntry:
    norm = raw.get("normalization")
    files = raw.get("files")
    return ZooEntry(
        name=raw["name"], dataset=raw["dataset"], threat=raw["threat"], arch=raw.get("arch"),
        arch_kwargs=dict(raw.get("arch_kwargs") or {}), num_classes=int(raw["num_classes"]),
        normalization=(tuple(norm["mean"]), tuple(norm["std"])) if norm else None,
        input_size=int(raw.get("input_size") or 32), preprocessing=raw.get("preprocessing"),
        files=tuple(dict(f) for f in files) if files else None,
        checkpoint_key=raw.get("checkpoint_key"), key_filter=raw.get("key_filter"),
        robustbench_model=raw.get("robustbench_model") or "", leaderboard=raw.get("leaderboard"),
        unsupported=raw.get("unsupported"),
    )


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict, tuple[ZooEntry, ...]]:
    raw = json.loads(ZOO_PATH.read_text(encoding="utf-8"))
    return raw.get("source", {}), tuple(_entry(e) for e in raw["entries"])


def table_source() -> dict:
    """Where the table's facts come from (RobustBench version and repository commit)."""
    return dict(_table()[0])


def zoo_entries(dataset: str | None = None, threat: str | None = None, supported_only: bool = False) -> list[ZooEntry]:
    """Entries of the table, optionally of one dataset / threat model, optionally only loadable ones."""
    return [
        e for e in _table()[1]
        if (dataset is None or e.dataset == dataset) and (threat is None or e.threat == threat)
        and (not supported_only or e.supported)
    ]


def arch_available(arch: str | None) -> bool:
    """True when ``engine.models`` can build ``arch`` (the other libraries it needs installed)."""
    if not arch:
        return False
    try:
        from engine.models import get_arch

        get_arch(arch)
    except (InvalidParameterError, ImportError):
        return False
    return True


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        lowered = {c.lower(): c for c in choices}
        if isinstance(value, str) and value.lower() in lowered:
            return lowered[value.lower()]
        raise InvalidParameterError(f"unknown RobustBench {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def get_entry(name: str, dataset: str = "cifar10", threat: str = "Linf") -> ZooEntry:
    """The table's entry ``name`` for ``dataset``/``threat`` (threat spelled ``Linf``, ``L2`` or
    ``corruptions``, any case).

    Raises:
        InvalidParameterError: unknown dataset or threat, or no such entry (close names suggested,
            and the other datasets/threats that have the name).
    """
    dataset = _check_choice(dataset, DATASETS, "dataset")
    threat = _check_choice(threat, THREATS, "threat model")
    for entry in zoo_entries(dataset, threat):
        if entry.name == name:
            return entry
    names = [e.name for e in zoo_entries(dataset, threat)]
    elsewhere = [f"{e.dataset}/{e.threat}" for e in zoo_entries() if e.name == name]
    hint = f" It exists for {', '.join(elsewhere)}." if elsewhere else ""
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    if close:
        hint += f" Did you mean {', '.join(close)}?"
    if not names:
        raise InvalidParameterError(f"RobustBench has no {dataset} {threat} models.{hint}")
    raise InvalidParameterError(
        f"RobustBench has no {dataset} {threat} model named {name!r}.{hint} "
        f"See `python -m engine zoo --dataset {dataset} --threat {threat}`."
    )


# ---------------------------------------------------------------------------------------------
# paths and URLs


def gdrive_url(file_id: str) -> str:
    """The direct-download address of a Google Drive file id (see :data:`GDRIVE_URL`)."""
    return GDRIVE_URL.format(id=urllib.request.quote(str(file_id), safe=""))


def file_url(spec: Mapping[str, Any]) -> str:
    """The address of one of an entry's files (``{"gdrive_id": ...}`` or ``{"url": ...}``)."""
    if spec.get("url"):
        return str(spec["url"])
    if spec.get("gdrive_id"):
        return gdrive_url(spec["gdrive_id"])
    raise CheckpointError(f"the table gives no download address for {dict(spec)}")


def cache_path(entry: ZooEntry, model_dir: str | os.PathLike | None = None) -> Path:
    """``<model_dir>/<dataset>/<threat>/<name>.pt``, RobustBench's cache layout."""
    from engine.fileio import check_name

    root = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    return root / entry.dataset / entry.threat / (check_name(entry.name, "RobustBench model name") + ".pt")


# ---------------------------------------------------------------------------------------------
# download


def _total_from(response, offset: int) -> int | None:
    if response.status == 206:
        rng = response.headers.get("Content-Range", "")
        try:
            span, total = rng.split(" ", 1)[1].split("/")
            start = int(span.split("-")[0])
        except (IndexError, ValueError):
            raise DownloadError(f"the server sent a partial answer with an unreadable Content-Range {rng!r}") from None
        if start != offset:
            raise DownloadError(f"the server resumed at byte {start} instead of {offset}")
        return int(total) if total.strip().isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.strip().isdigit() else None


def _html_refusal(url: str) -> DownloadError:
    return DownloadError(
        f"{url} answered with an HTML page instead of a checkpoint (Google Drive does this when a "
        "file's download quota is exceeded or it asks for a confirmation); nothing was saved. Try "
        "again later, or download the file in a browser and put it where the error below says."
    )


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: ProgressFn | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming an earlier partial download.

    A ``.part`` file left by an interrupted download is continued with an HTTP ``Range`` request
    (a server that ignores it sends the whole file, which then replaces the part). The file is moved
    to ``dest`` only when complete: its size must equal the size the server announced (and
    ``expected_size``), its sha256 must start with ``sha256`` when given, and it must look like a
    PyTorch file; an HTML page is refused (and the part removed).

    Args:
        url: http(s) address.
        dest: the final path; its folder is created.
        expected_size: bytes the file must have (when known).
        sha256: hex digest, or a prefix of it (torchvision's file names carry 8 hex digits).
        progress: ``progress(done_bytes, total_bytes_or_None)`` after every chunk.
        timeout: seconds to wait for the server at each step.

    Returns:
        ``dest``.

    Raises:
        DownloadError: offline/refused/HTTP error (naming the URL), a truncated transfer (the part
            is kept: run again to resume), wrong size or checksum, or an HTML page.
    """
    from engine.fileio import check_output_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    check_output_file(dest, "checkpoint file")
    part = dest.with_name(dest.name + PART_SUFFIX)
    check_output_file(part, "partial download")
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": "robustscope-checkpoint-download", "Accept": "application/octet-stream, */*"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part may already be complete
            part.unlink()
            raise DownloadError(f"{url} refused to resume a partial download (HTTP 416); the part was removed, run again") from None
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url} ({reason}); are you offline?") from None
    with response:
        if "text/html" in (response.headers.get("Content-Type") or "").lower():
            if offset == 0:
                part.unlink(missing_ok=True)
            raise _html_refusal(url)
        if response.status != 206:
            offset = 0  # the server ignored the range: start over
        total = _total_from(response, offset)
        if total is not None and expected_size is not None and total != expected_size:
            raise DownloadError(f"{url} announces {total} bytes but the checkpoint has {expected_size}; nothing was saved")
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as handle:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, socket.timeout, TimeoutError, ValueError) as exc:
            raise DownloadError(
                f"the download of {url} broke off after {done} bytes ({exc}); the part is kept in "
                f"{part}: run the command again to resume"
            ) from None
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise DownloadError(
                f"the download of {url} broke off after {done} bytes ({type(exc).__name__}); the part is "
                f"kept in {part}: run the command again to resume"
            ) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"the download of {url} is incomplete: {size} of {total} bytes; the part is kept in {part}: "
            "run the command again to resume"
        )
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"{url} gave {size} bytes but the checkpoint has {expected_size}; the download was removed")
    with open(part, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind == "html":
        part.unlink()
        raise _html_refusal(url)
    if kind not in ("zip", "pickle"):
        part.unlink()
        raise DownloadError(f"{url} did not send a PyTorch checkpoint (the file starts with {head[:16]!r}); the download was removed")
    if sha256:
        digest = sha256_file(part)
        if not digest.startswith(sha256.lower()):
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest[:16]}... does not match the expected {sha256}; the download was removed")
    os.replace(part, dest)
    return dest


def fetch_checkpoint(
    entry: ZooEntry,
    model_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: ProgressFn | None = None,
    url_for: Callable[[Mapping[str, Any]], str] = file_url,
) -> Path:
    """The entry's file in RobustBench's cache, downloaded first when missing and ``download``.

    Raises:
        CheckpointError: the entry cannot be loaded by RobustScope (why), or the file is missing
            and ``download`` is False.
        DownloadError: the download failed; the message names the address and the path to put a
            manually downloaded file at.
    """
    if not entry.supported:
        raise CheckpointError(_unsupported_message(entry))
    path = cache_path(entry, model_dir)
    if path.is_file():
        return path
    spec = entry.files[0]
    url = url_for(spec)
    if not download:
        raise CheckpointError(
            f"RobustBench checkpoint {path} is missing (download switched off). Download it from {url} "
            f"and put it there, or run without --no-download."
        )
    try:
        return download_file(url, path, expected_size=spec.get("size"), sha256=spec.get("sha256_prefix"), progress=progress)
    except DownloadError as exc:
        raise DownloadError(
            f"{exc}\nThe checkpoint of {entry.name} ({entry.dataset}, {entry.threat}) is expected at {path}: "
            f"download {url} yourself (a browser, or `gdown`) and save it there, then run the command again."
        ) from None


def _unsupported_message(entry: ZooEntry) -> str:
    if entry.unsupported:
        why = entry.unsupported
    elif entry.files and len(entry.files) > 1:
        why = f"it is an ensemble of {len(entry.files)} networks"
    elif not entry.files:
        why = "RobustBench gives no checkpoint file for it"
    else:
        why = "no RobustScope architecture reproduces it"
    return f"RobustBench's {entry.dataset} {entry.threat} model {entry.name} cannot be loaded by RobustScope: {why}"


# ---------------------------------------------------------------------------------------------
# load


def robustbench_state_dict(contents: Any, entry: ZooEntry, where: Path) -> dict[str, torch.Tensor]:
    """The weights inside a RobustBench checkpoint, as RobustBench's ``load_model`` finds them:
    ``ckpt[checkpoint_key]`` for the entries read so, ``ckpt['state_dict']`` when present, else the
    file itself; ``module.`` and then ``model.`` removed from every key that starts with them."""
    obj = contents
    if entry.checkpoint_key and isinstance(obj, Mapping) and isinstance(obj.get(entry.checkpoint_key), Mapping):
        obj = obj[entry.checkpoint_key]
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict")
    tensors = _tensors_only(obj)
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    for prefix in ("module.", "model."):
        tensors = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
    return tensors


def _filtered(tensors: dict[str, torch.Tensor], entry: ZooEntry, model_net) -> dict[str, torch.Tensor]:
    """Known key conversions, by the libraries' own code (timm's Swin checkpoint filter)."""
    if entry.key_filter == "timm_swin":
        try:
            from timm.models.swin_transformer import checkpoint_filter_fn
        except ImportError as exc:
            raise CheckpointError(f"{entry.name} needs timm to convert its Swin checkpoint: {exc}") from None
        inner = getattr(model_net, "model", model_net)
        return dict(checkpoint_filter_fn(tensors, inner))
    return tensors


def load_robustbench(
    name: str,
    dataset: str = "cifar10",
    threat: str = "Linf",
    model_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    normalization: Any = None,
    progress: ProgressFn | None = None,
    url_for: Callable[[Mapping[str, Any]], str] = file_url,
    allow_pickle: bool = False,
) -> LoadedCheckpoint:
    """Load RobustBench's ``name`` as a RobustScope model, from RobustBench's cache layout.

    Args:
        name: the zoo name, e.g. ``"Carmon2019Unlabeled"`` (see :func:`zoo_entries`).
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        threat: ``"Linf"``, ``"L2"`` or ``"corruptions"``.
        model_dir: RobustBench's ``model_dir`` (default ``./models``); the file is
            ``<model_dir>/<dataset>/<threat>/<name>.pt``.
        download: download a missing file (resumable; see :func:`download_file`).
        normalization: override the input normalisation (see
            :func:`engine.checkpoints.importers.parse_normalization`); default: the file's own
            (``mu``/``sigma`` buffers), else the network's as RobustBench builds it.
        progress: ``progress(done_bytes, total_bytes)`` during a download.
        url_for: maps a table file spec to its address (tests point it at a local server).
        allow_pickle: DANGEROUS explicit opt-in for a file that needs arbitrary unpickling (see
            ``engine.checkpoints.safe_io``); by default such a file is refused and nothing runs.

    Returns:
        :class:`LoadedCheckpoint`: the model in eval mode on CPU, taking [0, 1] images of
        ``entry.input_shape``; its card's ``source`` holds the file, its sha256, RobustBench's
        entry (constructor, preprocessing, address) and ``source["leaderboard"]``: the
        leaderboard's clean / AutoAttack accuracy (fractions), ε, norm and where they come from.
        ``metrics`` is left for RobustScope's own measurements.

    Raises:
        InvalidParameterError: unknown dataset, threat or name.
        CheckpointError: an entry RobustScope cannot load (why), a file that does not fit (keys and
            shapes named), an HTML page or another non-PyTorch file in the cache (said so: download
            it again), or one that needs unpickling (``UnsafeCheckpointError``).
        DownloadError: the file is missing and could not be downloaded (address and path named).
    """
    entry = get_entry(name, dataset, threat)
    explicit = parse_normalization(normalization)
    path = fetch_checkpoint(entry, model_dir, download=download, progress=progress, url_for=url_for)
    contents, digest = read_weights(path, allow_pickle=allow_pickle)
    tensors = robustbench_state_dict(contents, entry, path)
    model, used = assemble_model(
        entry.arch, entry.num_classes, entry.input_shape, ImportedState(tensors),
        arch_kwargs=entry.arch_kwargs, normalization=explicit,
        fallbacks=(entry.table_normalization(),), where=str(path),
        key_filter=(lambda t, net: _filtered(t, entry, net)) if entry.key_filter else None,
    )
    card = make_card(
        model, entry.dataset, name=entry.name, description=_description(entry),
        training=_training(entry), source=robustbench_source(entry, path, digest, used, url_for),
    )
    return LoadedCheckpoint(model=model, card=card, path=path, sha256=digest)


def _description(entry: ZooEntry) -> str:
    board = entry.leaderboard or {}
    paper = f": {board['paper']}" if board.get("paper") else ""
    venue = f" ({board['venue']})" if board.get("venue") and board.get("venue") != "N/A" else ""
    return f"RobustBench {entry.dataset} {entry.threat} entry {entry.name}{paper}{venue}"


def _training(entry: ZooEntry) -> dict:
    """What the card can say about training: RobustBench records the threat model, not the recipe."""
    board = entry.leaderboard or {}
    if entry.name.startswith("Standard"):
        return {"method": "standard", "note": "RobustBench's standardly trained reference model"}
    if entry.threat in ("Linf", "L2"):
        return {
            "method": "adversarial",
            "norm": "linf" if entry.threat == "Linf" else "l2",
            "eps": board.get("eps"),
            "note": (f"adversarially trained for RobustBench's {entry.threat} ε={board.get('eps_text')} "
                     "leaderboard; the recipe is the paper's (see source.leaderboard)"),
        }
    return {"method": "unknown", "note": "trained for robustness to common corruptions; the recipe is the paper's (see source.leaderboard)"}


def robustbench_source(entry: ZooEntry, path: Path, digest: str, used: Normalization,
                       url_for: Callable[[Mapping[str, Any]], str] = file_url) -> dict:
    """The card's ``source``: the file, RobustBench's entry and the leaderboard's figures."""
    source = {
        "format": "robustbench",
        "file": str(path),
        "sha256": digest,
        "normalization": used.source,
        "robustbench": {
            "name": entry.name, "dataset": entry.dataset, "threat": entry.threat,
            "model": entry.robustbench_model, "preprocessing": entry.preprocessing,
            "input_size": entry.input_size, "url": url_for(entry.files[0]) if entry.files else None,
            "table": table_source().get("zoo"),
        },
    }
    if entry.leaderboard:
        source["leaderboard"] = dict(entry.leaderboard)
    return source


def import_robustbench(
    name: str,
    dataset: str = "cifar10",
    threat: str = "Linf",
    model_dir: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    save_as: str | None = None,
    overwrite: bool = False,
    download: bool = True,
    normalization: Any = None,
    progress: ProgressFn | None = None,
    url_for: Callable[[Mapping[str, Any]], str] = file_url,
    allow_pickle: bool = False,
) -> LoadedCheckpoint:
    """:func:`load_robustbench` and save the model in our format (``NAME.safetensors`` + card).

    Args:
        out_dir: the folder to save in (default: the checkpoints root).
        save_as: the checkpoint's name (default: the zoo name); checked with
            ``engine.fileio.check_name`` (no paths).
        overwrite: replace an existing checkpoint of that name; otherwise a free name
            (``NAME-2``, ...) is chosen; the returned card's ``name`` says which.
        (other arguments: see :func:`load_robustbench`)

    Returns:
        The checkpoint as saved (``path`` = the new ``.safetensors`` file).
    """
    from engine.checkpoints.store import checkpoints_root
    from engine.fileio import check_name, free_stem

    wanted = check_name(save_as if save_as is not None else name, "checkpoint name")
    loaded = load_robustbench(name, dataset, threat, model_dir, download=download, normalization=normalization,
                              progress=progress, url_for=url_for, allow_pickle=allow_pickle)
    folder = Path(out_dir) if out_dir is not None else checkpoints_root()
    folder.mkdir(parents=True, exist_ok=True)
    stem = free_stem(folder, wanted, (".safetensors", ".json"), overwrite=overwrite)
    loaded = LoadedCheckpoint(model=loaded.model, card=loaded.card.replace(name=stem.name), path=loaded.path, sha256=loaded.sha256)
    return save_imported(loaded, stem)
