"""Fetching the authors' datasets (pooch, against a real HTTP server on 127.0.0.1) and converting them.

The fixture files are made here with our own solver and written in the authors' two layouts with their
unit conventions (speckle energies in hbar^2/(2 m a0^2); the 3D raw layout in a box of length 2), so the
expected values after conversion are known exactly.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vaedft.cli import main
from vaedft.data.convert import ConversionError, convert_npz, detect_conventions, read_authors_npz
from vaedft.data.generate import generate_dataset
from vaedft.data.store import read_arrays, read_attrs, resolve_check, validate_dataset
from vaedft.data.zenodo import RECORDS, FetchError, data_dir, fetch, load_registry
from vaedft.physics import get_testbed

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """A few exact instances per testbed in our conventions: ``{testbed: arrays}``."""
    tmp = tmp_path_factory.mktemp("exact")
    out = {}
    for tb, n in (("speckle1d", 5), ("gaussian3d", 3)):
        path = generate_dataset(get_testbed(tb), tmp / f"{tb}.h5", n=n, seed=3, progress=False)
        out[tb] = read_arrays(path, ("potential", "density", "energy", "F"))
    return out


def speckle_npz(path: Path, a: dict, *, energy_factor: float = 2.0, flat: bool = True) -> Path:
    """The authors' speckle layout: density, potential, energy, F; energies in hbar^2/(2 m a0^2) (x 2)."""
    n = len(a["energy"])
    d = a["density"].reshape(n, -1) if flat else a["density"]
    v = a["potential"].reshape(n, -1) if flat else a["potential"]
    np.savez(path, density=d, potential=v * energy_factor, energy=a["energy"] * energy_factor,
             F=a["F"] * energy_factor)
    return path


def raw3d_npz(path: Path, a: dict) -> Path:
    """The authors' raw 3D layout (dens, speckle, ene) in a box of length 2: n / 8, energies / 4."""
    np.savez(path, dens=a["density"] / 8.0, speckle=a["potential"] / 4.0, ene=a["energy"] / 4.0)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Server:
    """A static file server on 127.0.0.1 that counts GET requests and can be told to truncate files."""

    def __init__(self, root: Path) -> None:
        self.root, self.gets, self.truncate = root, [], set()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kw):
                super().__init__(*args, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802 - http.server's name
                server.gets.append(self.path)
                name = self.path.lstrip("/")
                if name in server.truncate:
                    body = (root / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) // 2))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, exact, monkeypatch):
    """A mirror with the speckle record (train/test files) and a registry pinning their sha256."""
    root = tmp_path / "mirror"
    (root / "speckle1d").mkdir(parents=True)
    train = speckle_npz(root / "speckle1d" / "data_train.npz", exact["speckle1d"])
    test = speckle_npz(root / "speckle1d" / "data_test.npz", {k: v[:2] for k, v in exact["speckle1d"].items()})
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[speckle1d]\ndoi = "{RECORDS["speckle1d"][0]}"\ntrain = "data_train.npz"\n'
                        f'test = "data_test.npz"\n[speckle1d.files]\n"data_train.npz" = "sha256:{sha256(train)}"\n'
                        f'"data_test.npz" = "sha256:{sha256(test)}"\n')
    server = _Server(root)
    monkeypatch.setenv("VAEDFT_DATA_URL", server.url)
    monkeypatch.setenv("VAEDFT_DATA_REGISTRY", str(registry))
    monkeypatch.setenv("VAEDFT_DATA_DIR", str(tmp_path / "cache"))
    yield server, registry
    server.close()


# ----------------------------------------------------------------------------- conversion


def test_speckle_layout_in_half_hartree_units_converts_to_our_values(tmp_path, exact):
    a = exact["speckle1d"]
    src = speckle_npz(tmp_path / "data_train.npz", a)
    out = convert_npz(src, "speckle1d", tmp_path / "sp.h5")
    got = read_arrays(out, ("potential", "density", "energy", "F"))
    for name in got:
        np.testing.assert_allclose(got[name], a[name], rtol=1e-12, atol=1e-14, err_msg=name)
    attrs = read_attrs(out)
    assert attrs["energy_divisor"] == 2.0 and attrs["length_scale"] == pytest.approx(1.0, rel=1e-12)
    assert attrs["origin"] == "converted" and attrs["source_sha256"] == sha256(src)
    assert attrs["source_layout"] == "dft" and attrs["seed"] == -1
    validate_dataset(out)
    assert resolve_check(out, 2)["max_abs_diff"] < 1e-6
    assert read_arrays(out, ("residual",))["residual"].max() < 1e-6  # our operator, our ground states


def test_raw_3d_layout_in_a_box_of_length_two_converts_to_our_box(tmp_path, exact, capsys):
    a = exact["gaussian3d"]
    src = raw3d_npz(tmp_path / "Gaussian1stbatch.npz", a)
    layout, arrays = read_authors_npz(src, get_testbed("gaussian3d"))
    conv = detect_conventions(arrays, get_testbed("gaussian3d"))
    assert layout == "raw" and conv.length_scale == pytest.approx(2.0, rel=1e-12) and conv.energy_divisor == 1.0
    out = tmp_path / "g3d.h5"
    assert main(["convert", str(src), "--testbed", "gaussian3d", "--out", str(out)]) == 0
    assert "lengths 2 x ours" in capsys.readouterr().out
    got = read_arrays(out, ("potential", "density", "energy", "F"))
    for name in got:
        np.testing.assert_allclose(got[name], a[name], rtol=1e-10, atol=1e-12, err_msg=name)
    assert main(["validate", str(out), "--resolve", "2"]) == 0
    assert "re-solved with our solver agree" in capsys.readouterr().out


def test_grid_shaped_fields_convert_like_flat_ones(tmp_path, exact):
    a = exact["speckle1d"]
    flat = convert_npz(speckle_npz(tmp_path / "f.npz", a), "speckle1d", tmp_path / "f.h5")
    grid = convert_npz(speckle_npz(tmp_path / "g.npz", a, flat=False), "speckle1d", tmp_path / "g.h5")
    np.testing.assert_array_equal(read_arrays(flat)["density"], read_arrays(grid)["density"])


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, match", [
    ("unit", "not a known energy unit"),
    ("inconsistent", "F \\+ int V n differs"),
    ("grid", "speckle1d needs"),
    ("keys", "not in a known authors' layout"),
    ("truncated", "not a readable .npz"),
    ("foreign", "not a readable .npz"),
    ("negative", "negative density"),
])
def test_files_that_cannot_be_reconciled_are_refused_and_nothing_is_written(tmp_path, exact, case, match):
    a = exact["speckle1d"]
    src = tmp_path / "x.npz"
    if case == "unit":  # energies x 3: neither E0 nor hbar^2/(2 m a0^2)
        speckle_npz(src, a, energy_factor=3.0)
    elif case == "inconsistent":
        _npz(src, density=a["density"], potential=a["potential"], energy=a["energy"] + 0.1, F=a["F"])
    elif case == "grid":
        _npz(src, density=a["density"][:, :128], potential=a["potential"][:, :128], energy=a["energy"], F=a["F"])
    elif case == "keys":
        _npz(src, rho=a["density"], V=a["potential"], E=a["energy"])
    elif case == "truncated":
        speckle_npz(tmp_path / "full.npz", a)
        data = (tmp_path / "full.npz").read_bytes()
        src.write_bytes(data[: len(data) // 2])
    elif case == "foreign":
        src.write_text("<html>not found</html>")
    elif case == "negative":
        d = a["density"].copy()
        d[0, 0] = -1e-3
        _npz(src, density=d, potential=a["potential"], energy=a["energy"], F=a["F"])
    out = tmp_path / "out.h5"
    with pytest.raises(ConversionError, match=match):
        convert_npz(src, "speckle1d", out)
    assert not out.exists() and not list(tmp_path.glob("out.h5*"))


def test_a_zip_that_is_no_npz_and_an_existing_output_are_refused(tmp_path, exact, capsys):
    src = tmp_path / "z.npz"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ConversionError):
        convert_npz(src, "speckle1d", tmp_path / "o.h5")
    good = speckle_npz(tmp_path / "g.npz", exact["speckle1d"])
    convert_npz(good, "speckle1d", tmp_path / "o.h5")
    assert main(["convert", str(good), "--testbed", "speckle1d", "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err


# ----------------------------------------------------------------------------- fetching


def test_fetch_downloads_checks_caches_and_converts(mirror, tmp_path, exact, capsys):
    server, _ = mirror
    got = fetch("speckle1d")
    assert sorted(got) == ["data_test.npz", "data_train.npz"]
    assert got["data_train.npz"].parent == data_dir("speckle1d") == tmp_path / "cache" / "zenodo" / "speckle1d"
    assert sha256(got["data_train.npz"]) == sha256(server.root / "speckle1d" / "data_train.npz")
    n_gets = len(server.gets)
    assert n_gets == 2
    fetch("speckle1d")
    assert len(server.gets) == n_gets  # the second call downloads nothing
    out = tmp_path / "train.h5"
    assert main(["fetch", "speckle1d", "--file", "data_train.npz", "--convert", str(out), "--no-progress"]) == 0
    assert len(server.gets) == n_gets
    assert "hbar^2/(2 m a0^2)" in capsys.readouterr().out
    np.testing.assert_allclose(read_arrays(out)["energy"], exact["speckle1d"]["energy"], rtol=1e-12)
    assert read_attrs(out)["source_doi"] == RECORDS["speckle1d"][0]
    validate_dataset(out)


def test_convert_after_fetch_needs_one_file(mirror, tmp_path, capsys):
    assert main(["fetch", "speckle1d", "--convert", str(tmp_path / "o.h5"), "--no-progress"]) == 2
    assert "--file NAME" in capsys.readouterr().err


def test_checksum_mismatch_is_refused_naming_file_and_hashes_and_leaves_nothing(mirror, tmp_path):
    server, registry = mirror
    wrong = "0" * 64
    text = registry.read_text()
    good = sha256(server.root / "speckle1d" / "data_train.npz")
    registry.write_text(text.replace(good, wrong))
    with pytest.raises(FetchError) as info:
        fetch("speckle1d", files=["data_train.npz"])
    msg = str(info.value)
    assert "data_train.npz" in msg and wrong in msg and good in msg and "\n" not in msg
    assert not list(data_dir("speckle1d").glob("*data_train*"))


def test_a_truncated_download_is_refused(mirror):
    server, _ = mirror
    server.truncate.add("speckle1d/data_train.npz")
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch("speckle1d", files=["data_train.npz"])
    assert not list(data_dir("speckle1d").glob("*data_train*"))


def test_a_corrupted_cached_file_is_replaced_by_a_good_download(mirror):
    got = fetch("speckle1d", files=["data_test.npz"])["data_test.npz"]
    got.write_bytes(b"garbage")
    again = fetch("speckle1d", files=["data_test.npz"])["data_test.npz"]
    assert sha256(again) == sha256(mirror[0].root / "speckle1d" / "data_test.npz")


def test_offline_is_one_line_that_says_how_to_regenerate(mirror, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VAEDFT_DATA_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(FetchError, match="could not reach .* vaedft generate speckle1d"):
        fetch("speckle1d")
    assert main(["fetch", "speckle1d", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vaedft generate speckle1d" in err


def test_unknown_records_and_files_and_unpinned_mirrors_are_refused(mirror, tmp_path):
    with pytest.raises(FetchError, match="gaussian1d has no Zenodo record.*vaedft generate gaussian1d"):
        fetch("gaussian1d")
    with pytest.raises(FetchError, match="no file 'nope.npz'"):
        fetch("speckle1d", files=["nope.npz"])
    with pytest.raises(FetchError, match="pins no files for gaussian3d"):
        fetch("gaussian3d")


def _unpinned(tmp_path, monkeypatch, load_registry_from_doi):
    """Zenodo by DOI (no mirror, the committed registry: nothing pinned), pooch's record lookup replaced."""
    import pooch

    monkeypatch.delenv("VAEDFT_DATA_URL", raising=False)
    monkeypatch.setenv("VAEDFT_DATA_REGISTRY", str(ROOT / "datasets" / "zenodo_registry.toml"))
    monkeypatch.setenv("VAEDFT_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pooch.Pooch, "load_registry_from_doi", load_registry_from_doi)


def test_an_unpinned_record_is_asked_of_zenodo_by_doi_and_offline_is_one_line(tmp_path, monkeypatch, capsys):
    import requests

    asked = []

    def offline(self):
        asked.append(self.base_url)
        raise requests.exceptions.ConnectionError("no route to zenodo.org")

    _unpinned(tmp_path, monkeypatch, offline)
    with pytest.raises(FetchError, match=r"could not reach the Zenodo record doi:10\.5281/zenodo\.6504566 "
                                         r"\(ConnectionError\).*vaedft generate speckle1d"):
        fetch("speckle1d")
    assert asked == ["doi:10.5281/zenodo.6504566/"]
    assert main(["fetch", "gaussian3d", "--print-registry"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "doi:10.5281/zenodo.10814856" in err and "vaedft generate gaussian3d" in err
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_print_registry_gives_the_lines_a_maintainer_pins(tmp_path, monkeypatch, capsys):
    files = {"data_test.npz": "md5:" + "b" * 32, "data_train.npz": "md5:" + "a" * 32}

    def learned(self):  # what pooch learns from the record: names and Zenodo's md5 checksums
        self.registry.update(files)

    _unpinned(tmp_path, monkeypatch, learned)
    assert main(["fetch", "speckle1d", "--print-registry"]) == 0
    text = capsys.readouterr().out
    pinned = tmp_path / "registry.toml"  # pasted, with the training and test files named
    pinned.write_text(text.replace('train = ""', 'train = "data_train.npz"').replace('test = ""',
                                                                                      'test = "data_test.npz"'))
    record = load_registry(pinned)["speckle1d"]
    assert record.files == files and (record.train, record.test) == ("data_train.npz", "data_test.npz")


# ----------------------------------------------------------------------------- the registry


def test_the_committed_registry_names_the_papers_records_and_is_well_formed():
    records = load_registry(ROOT / "datasets" / "zenodo_registry.toml")
    assert records["speckle1d"].doi == "10.5281/zenodo.6504566"
    assert records["gaussian3d"].doi == "10.5281/zenodo.10814856"
    for r in records.values():
        assert all(h.split(":")[0] in ("md5", "sha1", "sha256", "sha512") for h in r.files.values())
        assert r.train in ("", *r.files) and r.test in ("", *r.files)


@pytest.mark.parametrize("text, match", [
    ('[gaussian1d]\ndoi = "x"\n', "not a testbed with a Zenodo record"),
    ('[speckle1d]\ndoi = "10.5281/zenodo.1"\n', "not the paper's record"),
    ('[speckle1d]\n[speckle1d.files]\n"a.npz" = "abc"\n', "alg:hexdigest"),
    ('[speckle1d]\ntrain = "a.npz"\n', "not one of its pinned files"),
    ('[speckle1d]\nurl = "x"\n', "may hold doi, train, test"),
    ("[speckle1d\n", "not valid TOML"),
])
def test_bad_registries_are_refused(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(FetchError, match=match):
        load_registry(path)


# ----------------------------------------------------------------------------- the harness on the authors' data


def test_bench_runs_on_the_fetched_record_and_says_so(mirror, tmp_path, exact):
    """``--data zenodo``: speckle1d trains and tests on the converted record (cache keyed on its pinned hash),
    gaussian1d stays generated; the report says which data; a rerun downloads nothing."""
    from vaedft.bench.artifacts import ArtifactStore
    from vaedft.bench.cli import main as bench_main
    from vaedft.bench.runner import run_suite

    server, _ = mirror
    tiny = ROOT / "tests" / "data" / "bench_tiny.toml"
    kw = {"experiments": ["E2"], "out": tmp_path / "reports", "cache": tmp_path / "bench-cache",
          "suite_dir": ROOT / "benchmark", "progress": False}
    results = run_suite(tiny, data="zenodo", **kw)
    assert results["data_source"] == "zenodo" and results["experiments"]["E2"]["error"] is None
    labels = results["experiments"]["E2"]["artifacts"]
    zen = [k for k in labels if "from Zenodo" in k]
    assert any("data_train.npz" in k for k in zen) and any("data_test.npz" in k for k in zen)
    assert all(k.startswith("speckle1d") for k in zen) and any(k.startswith("gaussian1d data") for k in labels)
    store = ArtifactStore(tmp_path / "bench-cache")
    (train_dir,) = [p for p in store.root.glob("dataset/*") if "data_train" in (p / "spec.json").read_text()]
    np.testing.assert_allclose(read_arrays(train_dir / "data.h5")["energy"], exact["speckle1d"]["energy"],
                               rtol=1e-12)
    report = (tmp_path / "reports" / "tiny_zenodo" / "report.md").read_text()
    assert "Data: the authors' Zenodo records" in report and "data_train.npz" in report
    n_gets = len(server.gets)
    run_suite(tiny, data="zenodo", **kw)
    assert len(server.gets) == n_gets  # cached artifacts, and the files in the data cache: nothing fetched
    assert bench_main(["run", "--profile", str(tiny), "--experiments", "E2", "--data", "zenodo", "--out",
                       str(tmp_path / "reports"), "--cache", str(tmp_path / "bench-cache"), "--suite",
                       str(ROOT / "benchmark"), "--no-progress"]) == 0


def test_bench_on_zenodo_without_pinned_files_is_refused(tmp_path, monkeypatch):
    from vaedft.bench.runner import run_suite
    from vaedft.bench.suite import SuiteError

    monkeypatch.setenv("VAEDFT_DATA_REGISTRY", str(ROOT / "datasets" / "zenodo_registry.toml"))
    with pytest.raises(SuiteError, match="names no train file for speckle1d"):
        run_suite(ROOT / "tests" / "data" / "bench_tiny.toml", experiments=["E2"], data="zenodo",
                  out=tmp_path / "r", cache=tmp_path / "c", suite_dir=ROOT / "benchmark", progress=False)
