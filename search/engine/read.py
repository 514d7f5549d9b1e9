"""Image datasets from files, as whole tensors: uint8 images (N, C, H, W), int64 labels 0..K-1.

Labels are numbered 0..K-1 in the order of their values (K: the classes in train). Three
layouts, told apart by what is at the path:
    idx     a folder with MNIST's four IDX files, gzipped or not:
            {train,t10k}-images-idx3-ubyte, {train,t10k}-labels-idx1-ubyte
            (images (N, H, W); an idx4 images file holds (N, H, W, C))
    npz     a NumPy .npz with x_train, y_train, x_test, y_test, as Keras' load_data() returns
            them: uint8 images (N, H, W) or (N, H, W, C), integer labels
    folder  train/<class>/<image> and test/<class>/<image> (torchvision's ImageFolder layout),
            read with Pillow; classes are the sorted folder names of train/
Everything is checked as it is read; a problem raises DataError with one line naming the file
and the fix. Torch and the standard library only (NumPy for .npz, Pillow for image folders,
imported when used), so an exported module carries this file verbatim and reads the data
exactly as budgetnas did.
"""

import gzip
import zipfile
import zlib
from pathlib import Path

import torch

IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NPZ = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


class DataError(ValueError):
    """The data cannot be used as it is; the message is one line naming the file and the fix."""


def read(path, test=True):
    """(train, test, class_names) from `path`: train and test are (images, labels); test is None
    when `test` is False (its files are then never opened); class_names None but for folders."""
    path = Path(path)
    if path.suffix == ".npz":
        (train, tst), names = _npz(path, test), None
    elif (path / "train").is_dir():
        train, tst, names = _folder(path, test)
    elif path.is_dir() and any((path / (IDX["train"][0] + gz)).exists() for gz in ("", ".gz")):
        train, tst, names = _idx_split(path, "train"), _idx_split(path, "test") if test else None, None
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder")
    else:
        raise DataError(f"{path}: not a dataset; expected a .npz (x_train, y_train, x_test, y_test), a folder with "
                        "train/<class>/ and test/<class>/ images, or a folder with the four MNIST-style IDX files")
    return _checked(path, train, tst) + (names,)


def _checked(path, train, test):
    """No split empty, labels >= 0, test's classes among train's; labels numbered 0..K-1 in the
    order of their values, K the classes train holds (1-based labels, EMNIST letters' 1..26, or
    gaps cost no unused logits; exported modules read the data through this same function)."""
    for name, split in (("train", train), ("test", test)):
        if split is not None and not len(split[1]):
            raise DataError(f"{path}: the {name} split is empty")
    x, y = train
    if x.shape[0] != y.shape[0] or (test is not None and test[0].shape[0] != test[1].shape[0]):
        raise DataError(f"{path}: the number of images and of labels differ")
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: test images are {_shape(test[0])} but train images {_shape(x)}; they must match")
    low = min(int(y.min()), int(test[1].min()) if test is not None else 0)
    if low < 0:
        raise DataError(f"{path}: labels must be class numbers >= 0, but some are {low}; drop those images "
                        "(unlabelled?) or renumber them")
    classes = y.unique()  # sorted
    if len(classes) < 2:
        raise DataError(f"{path}: every training image has label {int(classes[0])}; a classifier needs two "
                        "classes or more")
    if test is not None:
        unseen = sorted(set(test[1].unique().tolist()) - set(classes.tolist()))
        if unseen:
            raise DataError(f"{path}: test labels {unseen[:5]} never occur in train; a model cannot learn them "
                            "(drop them, or add training images of those classes)")
    if int(classes[-1]) != len(classes) - 1:
        train = (x, torch.searchsorted(classes, y))
        test = test if test is None else (test[0], torch.searchsorted(classes, test[1]))
    return train, test


def _shape(x):
    return "x".join(str(d) for d in x.shape[2:]) + f" with {x.shape[1]} channel(s)"


def available_bytes():
    """Memory the data may take: MemAvailable on Linux; None where unknown (no check)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _fits_memory(path, shape):
    need, free = 1, available_bytes()
    for d in shape:
        need *= d
    if free is not None and need > 0.8 * free:
        raise DataError(f"{path}: {need / 2**30:.1f} GiB of images, but only {free / 2**30:.1f} GiB of memory is "
                        "free; use a subset of the data or a machine with more memory")


def _channels_last(path, key, shape):
    """Colour images are (N, H, W, C), as Keras saves them; (N, C, H, W), PyTorch's order, would be read
    as C rows of W-channel pixels and train without an error, so it is refused."""
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] > 4:
        raise DataError(f"{path}: {key} is {tuple(shape)}, which looks like (N, C, H, W); images are read as "
                        "(N, H, W, C): save them as x.transpose(0, 2, 3, 1)")


# ----------------------------------------------------------------------------- idx
def _idx_split(folder, which):
    images, labels = (_idx_file(folder, name, (3, 4) if i == 0 else (1,)) for i, name in enumerate(IDX[which]))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    else:
        images = images.permute(0, 3, 1, 2).contiguous()
    return images, labels.long()


def _idx_file(folder, name, ndims):
    path = next((p for p in (folder / (name + ".gz"), folder / name) if p.exists()), folder / (name + ".gz"))
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            if len(head) < 4 or head[:3] != b"\0\0\x08" or ndim not in ndims:
                raise DataError(f"{path}: not an IDX file of unsigned bytes with {' or '.join(map(str, ndims))} dims "
                                f"(magic {head.hex() or 'empty'}); is it the right file?")
            dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
            _channels_last(path, "the images", dims)
            _fits_memory(path, dims)
            need = 1
            for d in dims:
                need *= d
            raw = f.read(need + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # a corrupt gzip stream, a folder, a permission
        raise DataError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}); the file is corrupt or "
                        "truncated") from None
    if len(raw) != need:
        raise DataError(f"{path}: header says {dims} ({need:,} bytes) but {'more' if len(raw) > need else len(raw)} "
                        "bytes follow; the file is truncated or corrupt")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(dims) if need else torch.zeros(dims, dtype=torch.uint8)


# ----------------------------------------------------------------------------- npz
def _npz(path, test):
    import numpy as np

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    with archive:
        members = {n.removesuffix(".npy") for n in archive.namelist()}
        wanted = NPZ["train"] + (NPZ["test"] if test else ())
        missing = [k for k in wanted if k not in members]
        if missing:
            raise DataError(f"{path}: no array {missing[0]!r}; a dataset .npz holds x_train, y_train, x_test, y_test "
                            f"(it has {sorted(members)})")
        splits = []
        for which in ("train", "test") if test else ("train",):
            arrays = []
            for key in NPZ[which]:
                try:
                    with archive.open(key + ".npy") as f:
                        header = {(1, 0): np.lib.format.read_array_header_1_0,
                                  (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(f))
                        shape, _, dtype = header(f) if header else (None, None, None)
                    if shape is not None:  # what is in it, from the header, before anything is loaded
                        _check_array(path, key, shape, dtype)
                    with archive.open(key + ".npy") as f:
                        array = np.lib.format.read_array(f, allow_pickle=False)
                    _check_array(path, key, array.shape, array.dtype)
                    arrays.append(array)
                except DataError:
                    raise
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataError(f"{path}: cannot read {key} ({e}); the file is corrupt or truncated") from None
            x, y = arrays
            x = torch.from_numpy(np.ascontiguousarray(x))
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
            splits.append((x, torch.from_numpy(y.reshape(-1).astype(np.int64))))
    return splits[0], splits[1] if test else None


def _check_array(path, key, shape, dtype):
    if key.startswith("x"):
        if dtype != "uint8" or len(shape) not in (3, 4):
            raise DataError(f"{path}: {key} is {dtype} {shape}; expected uint8 images (N, H, W) or (N, H, W, C), "
                            "values 0..255")
        _channels_last(path, key, shape)
        _fits_memory(path, shape)
    elif dtype.kind not in "iu" or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise DataError(f"{path}: {key} is {dtype} {shape}; expected integer labels, shape (N,)")


# ----------------------------------------------------------------------------- image folder
def _folder(root, test):
    import struct  # here, not at the top: an exported module carries this function without the file's imports

    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{root}: reading an image folder needs Pillow (pip install pillow)") from None
    # How Pillow refuses a file: OSError (UnidentifiedImageError, truncated data), ValueError and
    # SyntaxError (a plugin's bad header), EOFError, struct.error, or a decompression bomb.
    PILLOW_REFUSALS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
    names = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"{root / 'train'}: no class folders; expected train/<class>/<image>")
    index = {n: i for i, n in enumerate(names)}
    listed = {}
    for which in ("train", "test") if test else ("train",):
        if not (root / which).is_dir():
            raise DataError(f"{root / which}: no such folder; an image folder dataset has train/ and test/")
        files = []
        for d in sorted((root / which).iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            if d.name not in index:
                raise DataError(f"{d}: class {d.name!r} is in {which}/ but not in train/; a model cannot learn it")
            files += [(f, index[d.name]) for f in sorted(d.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        listed[which] = files
    first, size, grey = None, None, True
    for which, files in listed.items():  # sizes and modes first, from the headers (a 32-bit one: its range too)
        for f, _ in files:
            try:
                with Image.open(f) as im:
                    if size is None:
                        first, size = f, im.size
                    elif im.size != size:
                        raise DataError(f"{f}: {im.size[0]}x{im.size[1]} pixels, but {first} is {size[0]}x{size[1]}; "
                                        "every image must have one size (resize them first)")
                    if im.mode == "F" or (im.mode == "I" and im.getextrema()[1] > 65535):
                        raise DataError(f"{f}: {'32-bit float' if im.mode == 'F' else 'over-16-bit'} pixels have no "
                                        "fixed range to map to 0..255; save the images with 8 or 16 bits")
                    grey = grey and (im.mode in ("1", "L", "LA", "I") or im.mode.startswith("I;16"))
            except DataError:  # ours, said already (a ValueError, as some of Pillow's refusals are)
                raise
            except PILLOW_REFUSALS as e:
                raise DataError(f"{f}: not a readable image ({type(e).__name__}: {e}); remove or replace it") from None
    if size is not None:
        _fits_memory(root, (sum(len(v) for v in listed.values()), 1 if grey else 3, size[0], size[1]))
    out = []
    for which, files in listed.items():
        x = torch.empty((len(files), 1 if grey else 3, size[1], size[0]) if files else (0, 1, 1, 1), dtype=torch.uint8)
        for i, (f, _) in enumerate(files):
            try:
                with Image.open(f) as im:
                    if im.mode == "I" or im.mode.startswith("I;16"):  # 16 bits to 8 by their depth (convert clips at 255)
                        im = im.convert("I").point(lambda v: v / 257 + 0.5)
                    pixels = torch.frombuffer(bytearray(im.convert("L" if grey else "RGB").tobytes()), dtype=torch.uint8)
            except PILLOW_REFUSALS as e:
                raise DataError(f"{f}: not a readable image ({type(e).__name__}: {e}); remove or replace it") from None
            x[i] = pixels.reshape(size[1], size[0], -1).permute(2, 0, 1)
        out.append((x, torch.tensor([c for _, c in files], dtype=torch.int64)))
    return out[0], out[1] if test else None, names
