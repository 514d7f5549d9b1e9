"""Datasets as whole uint8 tensors, with a fixed train/validation split.

`--dataset` is a named dataset (DATASETS: MNIST and friends, IDX files under the data root,
torchvision's layout `<root>/<Folder>/raw/`, downloaded when missing) or the user's own data:
a .npz, an image folder or a folder of IDX files (search/engine/read.py reads and checks them). The
data fixes the input shape and the number of classes; nothing else here knows a dataset.

The validation split is either a seeded random sample of the training file (`random`) or
its last `val_size` images (`tail`). MNIST's test writers are disjoint from its training
writers, and its training file is ordered by writer: the slant of an image correlates with
the slant of the image two places on, 0.48, and of the one 1,000 places on, 0.18
(`python studies/val_split/order.py`). A random split therefore scores a model on writers it
trained on; a tail split keeps most of its writers out of training, as the
test split does. Root resolution: `--data-dir` > `$BUDGETNAS_DATA` > `./data`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...space import Arch
from ...space.errors import BadInput
from . import read
from .loop import channel_stats

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VAL_SPLITS = ("random", "tail")  # how the validation images are taken from the training file


def split_words(val_split: str) -> str:
    return "the last ones of the training file" if val_split == "tail" else "a seeded random sample"


@dataclass(frozen=True)
class Source:
    folder: str  # torchvision's folder name under the data root
    mirrors: tuple[str, ...]  # base URLs, tried in order
    md5: dict  # file name -> md5 of the published .gz
    bar: float | None = None  # verify's default test accuracy to clear, %; None: no verdict unless asked


DATASETS = {
    "mnist": Source(
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            FILES["train_images"]: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            FILES["train_labels"]: "d53e105ee54ea40749a09fcbcd1e9432",
            FILES["test_images"]: "9fb629c4189551a2d022fa330f9573f3",
            FILES["test_labels"]: "ec29112dd5afa0611ce80d1b7f02629c",
        },
        bar=99.40,  # the course's: every one of the last 3 epochs
    ),
    "fashion-mnist": Source(
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            FILES["train_images"]: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            FILES["train_labels"]: "25c81989df183df01b3e8a0aad5dffbe",
            FILES["test_images"]: "bef4ecab320f06d8554ea6380940ec79",
            FILES["test_labels"]: "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "kmnist": Source(
        "KMNIST",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            FILES["train_images"]: "bdb82020997e1d708af4cf47b453dcf7",
            FILES["train_labels"]: "e144d726b3acfaa3e44228e80efcd344",
            FILES["test_images"]: "5c965bf0a639b31b8f53240b1b52f4d7",
            FILES["test_labels"]: "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}


class DataError(BadInput):
    """A data file or directory is missing, truncated or unusable; the message is one line."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    train: Split  # what the model is fitted on
    val: Split | None  # held out from train, drives the search; None when train is the full split
    test: Split | None  # touched only by verification and the baselines' final numbers; None: not read
    mean: torch.Tensor  # per-channel pixel mean of `train`, in [0, 1], (C, 1, 1)
    std: torch.Tensor  # per-channel pixel std of `train`, (C, 1, 1)
    classes: int  # number of labels

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return tuple(self.train.images.shape[2:])

    def shaped(self, arch: Arch) -> Arch:
        """`arch` for this data: its input shape and number of classes are the data's."""
        return replace(arch, image_size=self.image_size, in_channels=self.channels, classes=self.classes)


def label(dataset: str) -> str:
    """A short name for file and folder names: the named dataset's, or the user's file or folder's."""
    return dataset if dataset in DATASETS else Path(dataset).stem or "data"


def default_bar(dataset: str) -> float | None:
    return DATASETS[dataset].bar if dataset in DATASETS else None


def resolve_root(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("BUDGETNAS_DATA") or "data")


def read_source(path: Path, test: bool) -> tuple[Split, Split | None]:
    """The training and (if `test`) test split at `path`, any layout search/engine/read.py reads."""
    try:
        train, tst, _ = read.read(path, test=test)
    except read.DataError as e:
        raise DataError(str(e)) from None
    return Split(*train), Split(*tst) if tst is not None else None


def download(source: Source, raw_dir: Path) -> None:
    """Fetch missing files from the published mirrors (those torchvision uses), md5-checked."""
    missing = [name for name in source.md5 if not (raw_dir / name).exists()]
    if sys.stderr.isatty():  # a wait at a terminal gets its reason (a mirror can take a minute to fail); a log gets the outcome
        print(f"data: downloading {', '.join(missing)} into {raw_dir}/ from {' or '.join(source.mirrors)}",
              file=sys.stderr, flush=True)
    for name in missing:
        errors = []
        for base in source.mirrors:
            try:
                with urllib.request.urlopen(base + name, timeout=30) as r:
                    blob = r.read()
            except OSError as e:
                errors.append(f"{base}: {e}")
                continue
            if hashlib.md5(blob).hexdigest() != source.md5[name]:
                errors.append(f"{base}{name}: md5 mismatch")
                continue
            raw_dir.mkdir(parents=True, exist_ok=True)  # only once something arrived
            (raw_dir / name).write_bytes(blob)
            break
        else:
            raise DataError(
                f"{raw_dir / name} is missing and could not be downloaded ({'; '.join(errors)}). "
                f"Offline? Copy the four IDX .gz files into {raw_dir}/ or point --data-dir / $BUDGETNAS_DATA "
                "at a folder holding <Dataset>/raw/."
            )


def source_path(dataset: str, data_dir: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Where `dataset` is read from: a named dataset's IDX folder under the data root (downloaded
    when missing), or the user's own data, a path (see search/engine/read.py)."""
    if dataset in DATASETS:
        source = DATASETS[dataset]
        raw_dir = resolve_root(data_dir) / source.folder / "raw"
        there = next(p for p in (raw_dir, *raw_dir.parents) if p.exists())  # "." at worst
        if not there.is_dir():
            raise DataError(f"{there} is a file, not a folder: the data root (--data-dir / $BUDGETNAS_DATA) is a "
                            f"folder holding {source.folder}/raw/")
        if not all((raw_dir / f).exists() for f in FILES.values()):
            if not allow_download:
                raise DataError(f"{raw_dir}: missing IDX files {sorted(FILES.values())}")
            download(source, raw_dir)
        return raw_dir
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DataError(f"unknown dataset {dataset!r}: not one of {', '.join(DATASETS)} and no such file or folder "
                        "(your own data: a .npz, an image folder or a folder of IDX files)")
    return path


def default_val_size(n_train: int) -> int:
    """Validation images held out when none are asked for: a twelfth of the training file, at most
    5,000 (MNIST's 60,000 give 5,000: enough to rank models; a small dataset keeps most to train on)."""
    return max(1, min(5000, n_train // 12))


def load(
    dataset: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    val_size: int | None = None,
    split_seed: int = 0,
    subset: int | None = None,
    allow_download: bool = True,
    val_split: str = "random",
    test: bool = True,
) -> Data:
    """Train/val/test as uint8 tensors. `val_size=0` trains on the full training split, in file
    order (as an exported module reads it); None holds out `default_val_size` images.

    The validation split is a fixed random sample (seeded by `split_seed`) of the training
    files, or with `val_split="tail"` their last `val_size` images; `subset` then keeps only
    the first N training images (for smoke runs). `test=False` never reads the test files:
    selection (search, confirm, the drill's stages before Verify) runs without them.
    """
    if val_split not in VAL_SPLITS:
        raise BadInput(f"val_split must be one of {VAL_SPLITS}, but got {val_split!r}.")
    path = source_path(dataset, data_dir, allow_download)
    full, test_split = read_source(path, test)
    if val_size is None:
        val_size = default_val_size(len(full))
    if not 0 <= val_size < len(full):
        raise BadInput(f"val_size {val_size} holds out every training image: {path} has {len(full):,}; "
                       f"use fewer (at most {len(full) - 1:,}).")
    if val_size == 0:
        order = torch.arange(len(full))
    elif val_split == "tail":
        order = torch.arange(len(full)).roll(val_size)  # the last val_size first, then the rest in file order
    else:
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset is not None:
        if subset > len(train_idx):
            raise BadInput(f"subset {subset:,} is more than the {len(train_idx):,} training images left after "
                           f"holding out {val_size:,} for validation.")
        train_idx = train_idx[:subset]
    train = Split(full.images[train_idx], full.labels[train_idx])
    val = Split(full.images[val_idx], full.labels[val_idx]) if val_size else None
    mean, std = channel_stats(train.images)
    return Data(train, val, test_split, mean, std, int(full.labels.max()) + 1)
