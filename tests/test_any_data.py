"""Any image dataset: the user's own .npz, image folder or IDX folder; shapes, channels and classes
come from the data, all the way from search to the exported module, verify and the report."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from budgetnas.search.cli import main
from budgetnas.search.engine import data as D
from budgetnas.space import BadInput
from tests.conftest import assert_one_line_error, idx_bytes, run_drill, write_idx_folder, write_image_folder, write_npz

WRITERS = {"npz": lambda root, **kw: write_npz(root / "data.npz", **kw),
           "folder": lambda root, **kw: write_image_folder(root / "images", **kw),
           "idx": lambda root, **kw: write_idx_folder(root / "idx", **kw)}


@pytest.mark.parametrize("fmt", WRITERS)
def test_each_format_reads_as_the_same_tensors_with_per_channel_statistics(fmt, tmp_path):
    path = WRITERS[fmt](tmp_path)
    d = D.load(str(path), val_size=100)
    assert d.train.images.shape == (1100, 3, 32, 32) and len(d.test) == 300 and d.classes == 12
    assert (d.channels, d.image_size) == (3, (32, 32))
    pixels = d.train.images.double() / 255
    assert torch.allclose(d.mean.view(-1).double(), pixels.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(d.std.view(-1).double(), pixels.transpose(0, 1).reshape(3, -1).std(1), atol=1e-6)
    def pairs(split):  # an image folder lists by class: compare what is there, not the order
        return sorted((y, x.numpy().tobytes()) for x, y in zip(split.images, split.labels.tolist(), strict=True))

    ours, reference = (D.load(str(p), val_size=0) for p in (path, write_npz(tmp_path / "r.npz")))
    assert pairs(ours.train) == pairs(reference.train) and pairs(ours.test) == pairs(reference.test)


def test_labels_are_numbered_by_their_values_in_train_and_test_alike(tmp_path):
    path = write_npz(tmp_path / "d.npz", classes=5)
    arrays = dict(np.load(path))
    raw = {k: arrays[k].copy() for k in ("y_train", "y_test")}
    arrays["y_train"], arrays["y_test"] = raw["y_train"] * 2 + 1, raw["y_test"] * 2 + 1  # labels 1, 3, 5, 7, 9
    np.savez(path, **arrays)
    d = D.load(str(path), val_size=0)
    assert d.classes == 5 and torch.equal(d.train.labels, torch.from_numpy(raw["y_train"]).long())
    assert torch.equal(d.test.labels, torch.from_numpy(raw["y_test"]).long())


def test_a_non_square_grey_dataset_keeps_its_shape(tmp_path):
    d = D.load(str(write_npz(tmp_path / "wide.npz", size=(24, 36), channels=0, classes=5)), val_size=100)
    assert d.train.images.shape == (1100, 1, 24, 36) and d.image_size == (24, 36) and d.classes == 5


@pytest.mark.parametrize("fmt,shape", [("npz", {}), ("folder", {}), ("idx", {}),
                                       ("npz", {"size": (20, 30), "channels": 0, "classes": 7})],
                         ids=["npz-rgb", "folder-rgb", "idx-rgb", "npz-non-square"])
def test_the_whole_path_on_the_users_own_data(fmt, shape, tmp_path, capsys):
    """search -> export -> verify -> report on synthetic data: 32x32 RGB with 12 classes in each
    format, and a non-square grey one."""
    path = str(WRITERS[fmt](tmp_path, **shape))
    size, channels, classes = shape.get("size", (32, 32)), shape.get("channels", 3) or 1, shape.get("classes", 12)
    main(["search", "--study", "own", "--dataset", path, "--budget", "20000", "--trials", "2", "--epochs", "1",
          "--val-size", "200", "--storage", "sqlite:///studies/own.db", "--threads", "1", "--device", "cpu"])
    main(["export", "--study", "own", "-o", "studies/own/best.py"])
    source = (tmp_path / "studies/own/best.py").read_text()
    assert f"INPUT = {(channels, *size)}" in source and f"CLASSES = {classes}" in source
    main(["verify", "studies/own/best.py", "--dataset", path, "--seeds", "1", "--epochs", "1", "--threads", "1",
          "--device", "cpu", "--json", "studies/own/verify.json"])  # no bar for the user's data: no verdict, exit 0
    out = capsys.readouterr().out
    assert "NO BAR params=" in out
    verify = json.loads((tmp_path / "studies/own/verify.json").read_text())
    assert verify["verdict"]["passed"] is None and len(verify["runs"][0]["history"]) == 1
    main(["report", "--study", "own"])
    report = (tmp_path / "studies/own/REPORT.md").read_text()
    assert "## Verification: studies/own/best.py" in report and "## exp4" not in report  # no MNIST baselines here
    assert (tmp_path / "studies/own/verify.png").stat().st_size > 1000


@pytest.mark.parametrize("shape", [{}, {"size": (20, 30), "channels": 0, "classes": 7}], ids=["rgb", "non-square"])
def test_a_small_model_learns_colour_and_non_square_images(shape, tmp_path):
    from functools import partial

    from budgetnas.search.engine.train import Engine, train
    from budgetnas.space import build
    from tests.conftest import TINY

    data = D.load(str(write_npz(tmp_path / "d.npz", **shape)), val_size=200)
    arch = data.shaped(TINY)
    history = train(partial(build, arch), arch.recipe, data, engine=Engine("cpu"), progress=False)
    assert history[-1]["val_acc"] > 3 * 100 / data.classes  # chance is 1/classes


def test_baselines_adapt_to_the_datas_shape_or_are_left_out_with_a_line(tmp_path):
    from budgetnas.search.engine.render import render
    from budgetnas.search.engine.verify import fit_to, load_candidate

    rgb = D.load(str(write_npz(tmp_path / "rgb.npz")), val_size=0)
    exp4 = fit_to(load_candidate("exp4"), rgb)
    assert exp4.make_model()(torch.zeros(2, 3, 32, 32)).shape == (2, 12)
    tiny = D.load(str(write_npz(tmp_path / "tiny.npz", size=(13, 13), channels=0)), val_size=0)
    with pytest.raises(BadInput, match="baseline exp1 does not fit this data .* left out"):
        fit_to(load_candidate("exp1"), tiny)
    (tmp_path / "m.py").write_text(render(exp4.arch, {}))  # a module for the RGB data refuses the grey data
    with pytest.raises(BadInput, match=r"takes images \(3, 32, 32\) .* with 12 classes, but the data has \(1, 13, 13\)"):
        fit_to(load_candidate(str(tmp_path / "m.py")), tiny)


# ----------------------------------------------------------------------------- bad data: one line, exit 2, nothing written
def bad_folder(root):
    write_image_folder(root / "d", n_train=60, n_test=15, classes=3)
    return root / "d"


def mixed_sizes(root):
    from PIL import Image

    d = bad_folder(root)
    Image.new("RGB", (31, 32)).save(d / "train" / "class00" / "zz-odd.png")
    return d, "zz-odd.png: 31x32 pixels"


def unreadable_image(root):
    d = bad_folder(root)
    (d / "train" / "class00" / "zz-broken.png").write_bytes(b"not a png at all")
    return d, "zz-broken.png: not a readable image"


def float_pixel_images(root):
    from PIL import Image

    d = bad_folder(root)
    Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(d / "train" / "class00" / "zz-float.tif")
    return d, "zz-float.tif: 32-bit float pixels have no fixed range"


def class_missing_from_train(root):
    from PIL import Image

    d = bad_folder(root)
    (d / "test" / "class99").mkdir()
    Image.new("RGB", (32, 32)).save(d / "test" / "class99" / "a.png")
    return d, "class 'class99' is in test/ but not in train/"


def labels_out_of_range(root):
    path = write_npz(root / "d.npz", n_train=50, n_test=20)
    arrays = dict(np.load(path))
    arrays["y_train"][:3] = -1  # an "unlabelled" marker
    np.savez(path, **arrays)
    return path, "labels must be class numbers >= 0, but some are -1"


def labels_unseen_in_train(root):
    path = write_npz(root / "d.npz", n_train=50, n_test=20, classes=3)
    arrays = dict(np.load(path))
    arrays["y_test"][0] = 7  # no class 7 in train
    np.savez(path, **arrays)
    return path, "test labels [7] never occur in train"


def empty_split(root):
    path = write_npz(root / "d.npz", n_train=50, n_test=20)
    arrays = dict(np.load(path))
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:0], arrays["y_test"][:0]
    np.savez(path, **arrays)
    return path, "the test split is empty"


def too_large_for_memory(root):
    folder = write_idx_folder(root / "idx", n_train=50, n_test=20)
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (10**7, 1000, 1000))
    (folder / "train-images-idx3-ubyte").write_bytes(header + b"\0" * 100)  # claims 10 TB of images
    return folder, "of memory is free"


def truncated_idx(root):
    folder = write_idx_folder(root / "idx", n_train=50, n_test=20)
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    return folder, "truncated"


def not_a_dataset(root):
    (root / "stuff").mkdir()
    (root / "stuff" / "notes.txt").write_text("hello")
    return root / "stuff", "not a dataset"


def float_images(root):
    path = root / "d.npz"
    x = np.zeros((10, 8, 8), np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(10, int), x_test=x, y_test=np.zeros(10, int))
    return path, "expected uint8 images"


def gz_idx_corrupt(root):
    folder = write_idx_folder(root / "idx", n_train=50, n_test=20)
    (folder / "train-images-idx3-ubyte").unlink()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((5, 4, 4))))[:-9])
    return folder, "train-images-idx3-ubyte.gz"


def channels_first(root):
    """PyTorch's (N, C, H, W) order read as Keras' (N, H, W, C) would train on C rows of W channels."""
    path = root / "d.npz"
    x = np.zeros((10, 3, 8, 8), np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(10) % 2, x_test=x, y_test=np.arange(10) % 2)
    return path, "looks like (N, C, H, W)"


def channels_first_idx(root):
    folder = write_idx_folder(root / "idx", n_train=50, n_test=20)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((50, 1, 32, 32))))
    return folder, "looks like (N, C, H, W)"


BAD = [mixed_sizes, unreadable_image, labels_out_of_range, too_large_for_memory, truncated_idx, not_a_dataset,
       float_images, float_pixel_images, gz_idx_corrupt, channels_first, channels_first_idx]  # found in the training split
BAD_TEST_SPLIT = [class_missing_from_train, labels_unseen_in_train, empty_split]  # only verify reads the test split


@pytest.mark.parametrize("make", BAD + BAD_TEST_SPLIT, ids=lambda f: f.__name__)
def test_bad_data_is_one_line_naming_the_file_exit_2_and_nothing_written(make, tmp_path, cli):
    path, match = make(tmp_path)
    commands = [["verify", "exp4", "--seeds", "1", "--json", "out/v.json"]]  # verify reads both splits
    if make is mixed_sizes:  # and search refuses before its study exists (one case: the reader is the same)
        commands.append(["search", "--study", "x", "--trials", "1", "--val-size", "5"])
    (tmp_path / "out").mkdir()
    for command in commands:
        result = cli(*command, "--dataset", str(path), cwd=tmp_path)
        assert_one_line_error(result, match)
        assert str(path.name) in result.stderr and "DataError" not in result.stderr  # ours, not passed off as Pillow's
        assert not (tmp_path / "studies").exists() and not any((tmp_path / "out").iterdir())


def test_sixteen_bit_grey_images_are_scaled_by_their_depth_not_clipped(tmp_path):
    """Pillow's convert("L") clips 16-bit pixels at 255 (a scan would read nearly white); they map
    by their depth instead, to one grey channel."""
    from PIL import Image

    pixels = np.array([[0, 257, 32896, 65535]], np.uint16)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / split / c / "0.png")
    d = D.load(str(tmp_path), val_size=0)
    assert d.train.images.shape == (2, 1, 1, 4) and d.train.images[0].flatten().tolist() == [0, 1, 128, 255]


def test_a_drill_on_the_users_colour_data_verifies_a_module_for_it(tmp_path):
    from budgetnas.search.drill.run import DrillConfig
    from budgetnas.search.report.notebook import write_drill_report

    path = write_npz(tmp_path / "rgb.npz", n_train=900, n_test=200)
    # 29 s: about four times the least a drill takes here (room for a loaded CI machine) (drill/plan.py `least_s`, the timing included), so each
    # stage gets about its minimum; what this tests is the data, not the plan
    cfg = DrillConfig(name="rgb", dataset=str(path), budget=6000, hours=0.008, epochs=2, val_size=200, seeds=1,
                      workers=1)
    drill, out = run_drill(cfg)
    write_drill_report(drill.study, cfg.folder)  # as `budgetnas drill` does
    assert out.verdict["passed"] is None  # a drill without a bar verifies without a verdict (none by default)
    source = (cfg.folder / "best.py").read_text()
    assert "INPUT = (3, 32, 32)" in source and "CLASSES = 12" in source
    assert "## 4. Verify" in (cfg.folder / "REPORT.md").read_text()


def test_an_image_pillow_refuses_for_its_own_reasons_is_named(tmp_path, monkeypatch):
    """Pillow refuses some files with errors other than OSError (a decompression bomb, a plugin's
    SyntaxError): each refusal names the file, as a unreadable one does."""
    from PIL import Image

    root = write_image_folder(tmp_path / "d", n_train=30, n_test=6, classes=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 32x32 image is now more than twice the limit: a bomb
    with pytest.raises(D.DataError, match=r"\.png: not a readable image \(DecompressionBombError"):
        D.load(str(root), val_size=5)


def test_one_class_data_is_refused_by_its_file():
    """A classifier needs two classes: one-class data is bad input naming the file, before any study."""
    path = write_npz(Path("one.npz"), classes=3, n_train=100, n_test=20)
    arrays = dict(np.load(path))
    arrays["y_train"][:], arrays["y_test"][:] = 2, 2
    np.savez(path, **arrays)
    with pytest.raises(D.DataError, match="one.npz: every training image has label 2; a classifier needs two"):
        D.load(str(path), val_size=10)


def test_a_small_dataset_gets_a_validation_split_it_can_hold(tmp_path, capsys):
    """No --val-size on 600 training images: a twelfth is held out (not MNIST's 5,000, which the
    data cannot hold), and the run says how many."""
    path = write_npz(tmp_path / "small.npz", size=(16, 16), classes=3, n_train=600, n_test=100)
    main(["search", "--study", "small", "--dataset", str(path), "--budget", "3000", "--trials", "1", "--epochs", "1",
          "--no-warm-start", "--storage", "journal:studies/small.journal"])
    assert "data: " + str(path) + ", 550 training and 50 validation images" in capsys.readouterr().out


def test_the_default_space_trains_on_8x8_images(tmp_path):
    """On 8x8 images the default space samples models the image can hold: three trials train three."""
    from optuna.trial import TrialState

    from budgetnas.search.study.config import StudyConfig
    from budgetnas.search.study.workers import run

    rng = np.random.default_rng(0)
    y, yt = rng.integers(0, 4, 400), rng.integers(0, 4, 80)
    x, xt = ((rng.integers(0, 60, (len(labels), 8, 8)) + 150 * (labels[:, None, None] == np.arange(8)[None, None, :] // 2))
             .astype(np.uint8) for labels in (y, yt))  # class c lights columns 2c, 2c+1
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    cfg = StudyConfig(name="tiny", dataset=str(tmp_path / "tiny.npz"), budget=3000, trials=3, epochs=1,
                      warm_start=False, storage="journal:studies/tiny.journal")
    study = run(cfg)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3, [t.user_attrs.get("pruned_reason") for t in study.trials]
