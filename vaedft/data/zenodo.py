"""The authors' datasets on Zenodo, fetched and hash-checked with pooch.

Records (``RECORDS``; the paper's references):

* ``speckle1d``: 1D speckle, about 120 000 instances, DOI 10.5281/zenodo.6504566 (ref. [38]);
* ``gaussian3d``: 3D Gaussian scatterers, DOI 10.5281/zenodo.10814856 (ref. [20]).

``gaussian1d`` has no record: it is regenerated (``vaedft generate``), as is everything when offline.

The file names and checksums of a record live in the pinned registry ``datasets/zenodo_registry.toml``
(``$VAEDFT_DATA_REGISTRY`` or ``registry=`` point elsewhere).  A record whose files are not pinned yet
is asked for them at fetch time (pooch's ``load_registry_from_doi``, which needs the Zenodo API);
every download is checked against a checksum either way.  ``vaedft fetch TESTBED --print-registry``
prints the lines a maintainer pins.

Where files go: ``cache=``, else ``$VAEDFT_DATA_DIR``, else the OS cache (``pooch.os_cache("vaedft")``,
``~/.cache/vaedft`` on Linux), in ``zenodo/<testbed>/``.  ``$VAEDFT_DATA_URL`` (or ``base_url=``)
replaces Zenodo by a mirror that serves ``<base>/<testbed>/<file>``: for mirrors and for the tests;
a mirror needs the record's files pinned in the registry.

Failures are one-line :class:`FetchError` messages: the record cannot be reached (with the command
that regenerates the data instead), a checksum mismatch (file, both hashes; nothing corrupted is
left in the cache), a record or file the registry does not know.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RECORDS", "FetchError", "Record", "load_registry", "default_registry_path", "data_dir", "fetch",
           "registry_lines"]

#: testbed -> (DOI, the paper's reference)
RECORDS = {"speckle1d": ("10.5281/zenodo.6504566", "[38]"), "gaussian3d": ("10.5281/zenodo.10814856", "[20]")}

#: How to make the data without the record (shown when a fetch fails).
REGENERATE = {
    "speckle1d": "vaedft generate speckle1d --n 120000 --seed 0 --out speckle1d_train.h5",
    "gaussian3d": "vaedft generate gaussian3d --n 36000 --seed 0 --out gaussian3d_train.h5",
}

_HASH = re.compile(r"^(md5|sha1|sha256|sha512):[0-9a-f]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FetchError(RuntimeError):
    """A record that cannot be fetched, or a download that failed its checksum (one line, says what to do)."""


@dataclass(frozen=True)
class Record:
    """One testbed's entry of the registry.

    Attributes:
        testbed, doi: which record.
        files: pinned ``{file name: "alg:hex"}`` (empty: not pinned yet).
        train, test: names of the training and test files among ``files`` ("" if not known).
    """

    testbed: str
    doi: str
    files: dict[str, str] = field(default_factory=dict)
    train: str = ""
    test: str = ""


def default_registry_path() -> Path:
    """``$VAEDFT_DATA_REGISTRY``, else ``datasets/zenodo_registry.toml`` of the source checkout."""
    env = os.environ.get("VAEDFT_DATA_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets" / "zenodo_registry.toml"


def load_registry(path: str | os.PathLike | None = None) -> dict[str, Record]:
    """Read and validate the registry; without a file, the records with nothing pinned."""
    path = Path(path) if path is not None else default_registry_path()
    records = {tb: Record(tb, doi) for tb, (doi, _) in RECORDS.items()}
    if not path.is_file():
        if "VAEDFT_DATA_REGISTRY" in os.environ or path != default_registry_path():
            raise FetchError(f"registry {path} not found")
        return records
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FetchError(f"registry {path}: not valid TOML ({exc})") from None
    for tb, entry in raw.items():
        if tb not in RECORDS:
            raise FetchError(f"registry {path}: [{tb}] is not a testbed with a Zenodo record ({sorted(RECORDS)})")
        if not isinstance(entry, dict) or set(entry) - {"doi", "files", "train", "test"}:
            raise FetchError(f"registry {path}: [{tb}] may hold doi, train, test and [{tb}.files] only")
        doi = entry.get("doi", RECORDS[tb][0])
        if doi != RECORDS[tb][0]:
            raise FetchError(f"registry {path}: [{tb}] doi {doi!r} is not the paper's record {RECORDS[tb][0]}")
        files = entry.get("files", {})
        for name, h in files.items():
            if not (isinstance(h, str) and _NAME.match(name) and _HASH.match(h.lower())):
                raise FetchError(f"registry {path}: [{tb}.files] {name!r} = {h!r}: need a plain file name and "
                                 "'alg:hexdigest' (md5, sha1, sha256 or sha512)")
        for role in ("train", "test"):
            name = entry.get(role, "")
            if not isinstance(name, str) or (name and name not in files):
                raise FetchError(f"registry {path}: [{tb}] {role} = {name!r} is not one of its pinned files")
        records[tb] = Record(tb, doi, dict(files), entry.get("train", ""), entry.get("test", ""))
    return records


def data_dir(testbed: str, cache: str | os.PathLike | None = None) -> Path:
    """Where a record's files are kept: ``cache``, ``$VAEDFT_DATA_DIR`` or the OS cache, + ``zenodo/<testbed>``."""
    import pooch

    root = cache or os.environ.get("VAEDFT_DATA_DIR") or pooch.os_cache("vaedft")
    return Path(root) / "zenodo" / testbed


def _record(testbed: str, registry) -> Record:
    records = registry if isinstance(registry, dict) else load_registry(registry)
    if testbed not in records:
        how = REGENERATE.get(testbed, f"vaedft generate {testbed} --n N --seed 0 --out FILE.h5")
        raise FetchError(f"{testbed} has no Zenodo record (records: {sorted(RECORDS)}); regenerate it: {how}")
    return records[testbed]


def _offline(testbed: str, where: str, exc: BaseException) -> FetchError:
    return FetchError(f"could not reach {where} ({type(exc).__name__}); to work offline, regenerate the data "
                      f"instead: {REGENERATE[testbed]}")


def _registry_from_doi(pup, testbed: str) -> None:
    """Fill ``pup``'s registry from its Zenodo record (names and checksums), or a one-line offline error."""
    import requests

    try:
        pup.load_registry_from_doi()
    except (requests.exceptions.RequestException, OSError, ValueError) as exc:
        raise _offline(testbed, f"the Zenodo record {pup.base_url.rstrip('/')}", exc) from None


def fetch(testbed: str, *, files: list[str] | None = None, cache: str | os.PathLike | None = None,
          base_url: str | None = None, registry=None, progress: bool = False) -> dict[str, Path]:
    """Download (or find in the cache) the files of a testbed's record, each checked against its checksum.

    Args:
        testbed: ``"speckle1d"`` or ``"gaussian3d"``.
        files: names to fetch (default: every file of the record).
        cache: directory (default :func:`data_dir`'s root).
        base_url: a mirror serving ``<base_url>/<testbed>/<file>`` (default ``$VAEDFT_DATA_URL``, else Zenodo by DOI).
        registry: registry file path, or a loaded ``{testbed: Record}`` (default :func:`load_registry`).
        progress: a download progress bar.

    Returns:
        ``{name: local path}``.  A second call finds the files in the cache and downloads nothing.
    """
    import pooch
    import requests

    record = _record(testbed, registry)
    pooch.get_logger().setLevel("WARNING")  # its per-file "Downloading ..." lines; the caller reports the files
    base_url = base_url or os.environ.get("VAEDFT_DATA_URL")
    base = f"{base_url.rstrip('/')}/{testbed}/" if base_url else f"doi:{record.doi}/"
    where = base_url or f"the Zenodo record doi:{record.doi}"
    folder = data_dir(testbed, cache)
    pup = pooch.create(path=folder, base_url=base, registry=dict(record.files) or None, retry_if_failed=0)
    if not record.files:
        if base_url:
            raise FetchError(f"the registry pins no files for {testbed}: a mirror ({base_url}) needs them pinned in "
                             f"{default_registry_path()} (vaedft fetch {testbed} --print-registry, once online)")
        _registry_from_doi(pup, testbed)
    names = list(files) if files else sorted(pup.registry)
    unknown = [n for n in names if n not in pup.registry]
    if unknown:
        raise FetchError(f"{testbed}: no file {unknown[0]!r} in the record (files: {sorted(pup.registry)})")
    out = {}
    for name in names:
        try:
            out[name] = Path(pup.fetch(name, progressbar=progress))
        except ValueError as exc:  # pooch: checksum mismatch; its download is already deleted
            (folder / name).unlink(missing_ok=True)  # and no stale or corrupted copy stays in the cache
            m = re.search(r"expected (\S+) but got (\S+?)\.", str(exc))
            got = f"expected {m.group(1)}, got {m.group(2)}" if m else str(exc)
            raise FetchError(f"{testbed}/{name}: checksum mismatch ({got}); refused, nothing kept in "
                             f"{folder}") from None
        except (requests.exceptions.RequestException, OSError) as exc:  # pooch wrote to a temporary file only
            raise _offline(testbed, where, exc) from None
    return out


def registry_lines(testbed: str, *, registry=None) -> str:
    """The registry entry of a record as pooch learns it from Zenodo (for a maintainer to pin)."""
    import pooch

    record = _record(testbed, registry)
    pup = pooch.create(path=data_dir(testbed), base_url=f"doi:{record.doi}/", registry=None)
    _registry_from_doi(pup, testbed)
    lines = [f"[{testbed}]", f'doi = "{record.doi}"', 'train = ""', 'test = ""', "", f"[{testbed}.files]"]
    lines += [f'"{name}" = "{h}"' for name, h in sorted(pup.registry.items())]
    return "\n".join(lines)
