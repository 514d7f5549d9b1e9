"""IDX datasets (MNIST and friends) as whole uint8 tensors, with a fixed train/validation split.

The validation split is either a seeded random sample of the training file (`random`) or
its last `val_size` images (`tail`). MNIST's test writers are disjoint from its training
writers, and its training file is ordered by writer: the slant of an image correlates with
the slant of the image two places on, 0.48, and of the one 1,000 places on, 0.18
(`python studies/val_split/order.py`). A random split therefore scores a model on writers it
trained on; a tail split keeps most of its writers out of training, as the
test split does.

Layout is torchvision's: `<root>/<Folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.
Files are read with gzip + numpy and checked (magic number, counts, image size); any
problem raises `DataError` with one line naming the file. Root resolution:
`--data-dir` > `$BUDGETNAS_DATA` > `./data`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from space.errors import BadInput

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
    """A data file or directory is missing, truncated or not IDX; the message is one line."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, side, side)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    train: Split  # what the model is fitted on
    val: Split | None  # held out from train, drives the search; None when train is the full split
    test: Split | None  # touched only by verification and the baselines' final numbers; None: not read
    mean: float  # pixel mean of `train`, in [0, 1]
    std: float  # pixel std of `train`
    classes: int  # number of labels


def resolve_root(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("BUDGETNAS_DATA") or "data")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file (.gz or raw) as a uint8 array; DataError on anything unexpected."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:  # permission denied, a folder, an I/O error: not the file's content
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        raw = gzip.decompress(blob) if path.suffix == ".gz" else blob
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the file is corrupt or truncated") from None
    magic = 0x800 + ndim  # type 0x08 = unsigned byte
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() if len(raw) >= 4 else "too short"
        raise DataError(f"{path}: not an IDX file of {ndim} dims (magic {found}, expected {magic:08x})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes but header {dims} needs {expected}; truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_split(raw_dir: Path, which: str) -> Split:
    images = read_idx(raw_dir / FILES[f"{which}_images"], 3)
    labels = read_idx(raw_dir / FILES[f"{which}_labels"], 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{raw_dir / FILES[which + '_images']}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{raw_dir}: {len(images)} {which} images but {len(labels)} labels")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def download(source: Source, raw_dir: Path) -> None:
    """Fetch missing files from the published mirrors (those torchvision uses), md5-checked."""
    for name, md5 in source.md5.items():
        if (raw_dir / name).exists():
            continue
        errors = []
        for base in source.mirrors:
            try:
                with urllib.request.urlopen(base + name, timeout=30) as r:
                    blob = r.read()
            except OSError as e:
                errors.append(f"{base}: {e}")
                continue
            if hashlib.md5(blob).hexdigest() != md5:
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


def load(
    dataset: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    subset: int | None = None,
    allow_download: bool = True,
    val_split: str = "random",
    test: bool = True,
) -> Data:
    """Train/val/test as uint8 tensors. `val_size=0` trains on the full training split.

    The validation split is a fixed random sample (seeded by `split_seed`) of the training
    files, or with `val_split="tail"` their last `val_size` images; `subset` then keeps only
    the first N training images (for smoke runs). `test=False` never reads the test files:
    selection (search, confirm, the drill's stages before Verify) runs without them.
    """
    if val_split not in VAL_SPLITS:
        raise BadInput(f"val_split must be one of {VAL_SPLITS}, but got {val_split!r}.")
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    source = DATASETS[dataset]
    root = resolve_root(data_dir)
    raw_dir = root / source.folder / "raw"
    if not all((raw_dir / f).exists() for f in FILES.values()):
        if not allow_download:
            raise DataError(f"{raw_dir}: missing IDX files {sorted(FILES.values())}")
        download(source, raw_dir)
    full = read_split(raw_dir, "train")
    test_split = read_split(raw_dir, "test") if test else None
    if not 0 <= val_size < len(full):
        raise BadInput(f"val_size must be in [0, {len(full)}), but got {val_size}.")
    if val_split == "tail":
        order = torch.arange(len(full)).roll(val_size)  # the last val_size first, then the rest in file order
    else:
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset is not None:
        train_idx = train_idx[:subset]
    train = Split(full.images[train_idx], full.labels[train_idx])
    val = Split(full.images[val_idx], full.labels[val_idx]) if val_size else None
    pixels = train.images.float().div_(255)
    for name, split in (("training", full), ("test", test_split)):
        if split is not None and not len(split):
            raise DataError(f"{raw_dir}: the {name} split is empty")
    classes = int(full.labels.max()) + 1
    if test_split is not None:
        unseen = sorted(set(test_split.labels.unique().tolist()) - set(full.labels.unique().tolist()))
        if unseen:
            raise DataError(f"{raw_dir}: test labels {unseen[:5]} never occur in the training split; "
                            "a model cannot learn them (labels must be 0..K-1 in both splits)")
    return Data(train, val, test_split, pixels.mean().item(), pixels.std().item(), classes)
