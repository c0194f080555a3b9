"""Tests of adaptlib.datasets downloading, against a local HTTP server only (never the internet).

A temporary folder holding copies of real data files (laid out like the data root) is served
with ``http.server`` on 127.0.0.1; the mirror is pointed at it.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from adaptlib.datasets import (
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    download,
    fetch,
    load_office_caltech10_surf,
)
from adaptlib.datasets import _files

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ADAPTLIB_DATA", REPO.parent / "shared" / "data")).absolute()

DSLR = "office_caltech10_surf/dslr_SURF_L10.mat"
DSLR_IMGS = "office_caltech10_surf/dslr_SURF_L10_imgs.mat"
OFFICE = list(_files.BENCHMARK_FILES["office-caltech10-surf"])


class _Server:
    """A quiet threaded HTTP server for one folder; records the paths requested."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA}; set ADAPTLIB_DATA to the data folder")
    return DATA


@pytest.fixture
def served(data_dir, tmp_path, monkeypatch):
    """(server, served folder): copies of the small Office-Caltech10 files, served locally.

    ``ADAPTLIB_MIRROR`` is pointed at an unroutable address so that a test that forgets the
    mirror fails instead of reaching the internet.
    """
    folder = tmp_path / "served"
    for rel in OFFICE + [DSLR_IMGS]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / rel, folder / rel)
    monkeypatch.setenv("ADAPTLIB_MIRROR", "http://127.0.0.1:9/no-internet")
    server = _Server(folder)
    yield server, folder
    server.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_fetch_downloads_and_verifies(served, tmp_path):
    server, _ = served
    root = tmp_path / "root"
    for rel in (DSLR, DSLR_IMGS):
        path = fetch(rel, root=root, download=True, mirror=server.url)
        assert path == root / rel and path.is_file()
        assert _sha(path) == _files.REGISTRY[rel].sha256
    assert server.requests == ["/" + DSLR, "/" + DSLR_IMGS]
    assert _leftovers(root) == ["dslr_SURF_L10.mat", "dslr_SURF_L10_imgs.mat"]  # no temp files
    # present files are not downloaded again, and the loader works on the downloaded copy
    fetch(DSLR, root=root, download=True, mirror=server.url)
    assert len(load_office_caltech10_surf("D", root=root, download=True)) == 157
    assert len(server.requests) == 2


def test_mirror_env_var(served, tmp_path, monkeypatch):
    server, _ = served
    monkeypatch.setenv("ADAPTLIB_MIRROR", server.url + "/")
    assert _files.file_url(DSLR) == f"{server.url}/{DSLR}"
    assert load_office_caltech10_surf("dslr", root=tmp_path / "root", download=True).x.shape == (157, 800)
    assert server.requests == ["/" + DSLR]


def test_download_benchmark(served, tmp_path):
    server, _ = served
    root = tmp_path / "root"
    paths = download("office-caltech10-surf", root=root, mirror=server.url)
    assert paths == [root / rel for rel in OFFICE]
    assert all(_sha(p) == _files.REGISTRY[rel].sha256 for p, rel in zip(paths, OFFICE))
    assert download("office-caltech10-surf", root=root, mirror=server.url) == paths
    assert len(server.requests) == len(OFFICE)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_download_is_rejected_and_leaves_nothing(served, tmp_path, damage):
    server, folder = served
    data = bytearray((folder / DSLR).read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0x10
    else:
        del data[len(data) // 2:]
    (folder / DSLR).write_bytes(bytes(data))
    root = tmp_path / "root"
    with pytest.raises(ChecksumError) as info:
        fetch(DSLR, root=root, download=True, mirror=server.url)
    msg = str(info.value)
    assert DSLR in msg and _files.REGISTRY[DSLR].sha256 in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    assert _leftovers(root) == []
    with pytest.raises(DatasetNotFoundError):  # still missing afterwards
        fetch(DSLR, root=root)


def test_http_error_raises_and_leaves_nothing(served, tmp_path):
    server, folder = served
    (folder / DSLR).unlink()
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="404") as info:
        fetch(DSLR, root=root, download=True, mirror=server.url)
    assert f"{server.url}/{DSLR}" in str(info.value)
    assert _leftovers(root) == []


def test_default_urls_are_pinned_github_raw():
    # No request is made: only the URL construction is checked.
    for rel, spec in _files.REGISTRY.items():
        assert spec.url == f"https://raw.githubusercontent.com/{spec.repo}/{spec.commit}/{spec.source_path}"
    assert _files.file_url(DSLR, mirror="file:///srv/mirror") == f"file:///srv/mirror/{DSLR}"
    with pytest.raises(ValueError, match="mirror"):
        _files.file_url(DSLR, mirror="  ")
