import gzip

import numpy as np
import pytest
import torch

from budgetnas.search.engine import read
from budgetnas.search.engine.data import DataError, load, resolve_root
from budgetnas.space import BadInput
from tests.conftest import idx_bytes, write_idx_dataset


def test_reads_a_good_dataset(data_root):
    d = load("mnist", data_root, val_size=200)
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape == (1000, 1, 28, 28)
    assert len(d.val) == 200 and len(d.test) == 300 and d.classes == 10
    assert d.mean.shape == d.std.shape == (1, 1, 1) and 0 < d.mean.item() < 1 and 0 < d.std.item() < 1
    pixels = d.train.images.double() / 255
    assert d.mean.item() == pytest.approx(pixels.mean().item()) and d.std.item() == pytest.approx(pixels.std().item())


def test_other_idx_datasets_load_by_name(tmp_path):
    write_idx_dataset(tmp_path, "FashionMNIST")
    assert len(load("fashion-mnist", tmp_path, val_size=100).train) == 1100


def test_split_is_deterministic_and_disjoint(data_root):
    a, b = load("mnist", data_root, val_size=200), load("mnist", data_root, val_size=200)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    c = load("mnist", data_root, val_size=200, split_seed=1)
    assert not torch.equal(a.val.images, c.val.images)
    full = load("mnist", data_root, val_size=0)
    assert full.val is None and len(full.train) == len(a.train) + len(a.val)


def test_tail_split_holds_out_the_end_of_the_training_file(data_root):
    (images, _), _, _ = read.read(data_root / "MNIST" / "raw", test=False)
    tail = load("mnist", data_root, val_size=200, val_split="tail")
    assert torch.equal(tail.val.images, images[-200:])  # the last 200, in file order
    assert torch.equal(tail.train.images, images[:-200])
    assert not torch.equal(tail.val.images, load("mnist", data_root, val_size=200).val.images)
    with pytest.raises(BadInput, match="val_split must be one of"):
        load("mnist", data_root, val_size=200, val_split="head")


def test_truncated_file_names_the_file(data_root):
    path = data_root / "MNIST/raw/train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load("mnist", data_root)


def test_short_payload_is_reported(data_root):
    path = data_root / "MNIST/raw/train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))[:-3]))
    with pytest.raises(DataError, match="truncated"):
        load("mnist", data_root)


def test_wrong_magic_is_reported(data_root):
    path = data_root / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(DataError, match="magic"):
        load("mnist", data_root)


def test_missing_dir_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError, match="Offline"):
        load("mnist", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # nothing created when nothing arrived


def test_a_data_root_that_is_a_file_is_refused_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("downloaded into a file"))
    (tmp_path / "root").write_text("not a folder")
    for root in (tmp_path / "root", tmp_path / "root" / "below"):
        with pytest.raises(DataError, match=r"root is a file, not a folder.*data root \(--data-dir"):
            load("mnist", root)


@pytest.mark.parametrize("terminal", [True, False])
def test_a_download_at_a_terminal_says_where_from_before_it_waits(terminal, tmp_path, monkeypatch, capsys):
    """A line on a terminal only: an error that follows stays the one line a log or a script reads."""
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr("sys.stderr.isatty", lambda: terminal)
    with pytest.raises(DataError):
        load("mnist", tmp_path / "nowhere")
    said = capsys.readouterr().err.splitlines()
    assert len(said) == terminal and all(s.startswith("data: downloading train-images-idx3-ubyte.gz, ") for s in said)


def test_unknown_dataset():
    with pytest.raises(DataError, match="not one of mnist"):
        load("cifar")


def test_data_dir_resolution(monkeypatch):
    monkeypatch.setenv("BUDGETNAS_DATA", "/env")
    assert str(resolve_root("/flag")) == "/flag" and str(resolve_root(None)) == "/env"
    monkeypatch.delenv("BUDGETNAS_DATA")
    assert str(resolve_root(None)) == "data"
