"""Is a training file ordered by writer? Correlation of each image's style with the style of
the image k places on (k = lag), for two style measures standardised within each digit
class: ink (mean pixel value) and slant (the ink's x-y covariance over its y variance).
In a shuffled file every correlation is about 0; in a file ordered by writer it stays
positive over many images. Reads the IDX files only (no model, no test split).

    python studies/val_split/order.py [DATA_ROOT]     # default: $BUDGETNAS_DATA, else ./data
"""

import sys

import numpy as np

from budgetnas.search.engine.data import resolve_root
from budgetnas.search.engine.read import read

LAGS = (1, 2, 5, 10, 100, 1000, 10000)


def within_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = np.empty_like(values)
    for c in np.unique(labels):
        m = labels == c
        z[m] = (values[m] - values[m].mean()) / values[m].std()
    return z


def styles(images: np.ndarray) -> dict[str, np.ndarray]:
    w = images.reshape(len(images), -1).astype(np.float64)
    ys, xs = (a.ravel() for a in np.mgrid[0 : images.shape[1], 0 : images.shape[2]])
    mass = w.sum(1)
    mx, my = (w @ xs) / mass, (w @ ys) / mass
    cov_xy = (w * (xs[None] - mx[:, None]) * (ys[None] - my[:, None])).sum(1) / mass
    var_y = (w * (ys[None] - my[:, None]) ** 2).sum(1) / mass
    return {"ink": w.mean(1), "slant": cov_xy / var_y}


def main(root=None) -> None:
    (images, labels), _, _ = read(resolve_root(root) / "MNIST" / "raw", test=False)
    labels = labels.numpy()
    print(f"{'lag':>6} " + " ".join(f"{k:>7}" for k in LAGS))
    for name, v in styles(images[:, 0].numpy()).items():
        z = within_class(v, labels)
        print(f"{name:>6} " + " ".join(f"{np.corrcoef(z[:-k], z[k:])[0, 1]:>7.3f}" for k in LAGS))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
