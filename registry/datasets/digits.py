"""The embedded default: scikit-learn's 8x8 handwritten digits (1,797 real images, no download)."""

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from harness import ImageData, register_dataset


@register_dataset("digits", paper="UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998)")
def digits(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """8x8 grey handwritten digits bundled with scikit-learn; a fixed stratified 80/20 split."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # 17 grey levels -> [0, 1]
    y = torch.tensor(bunch.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, random_state=0, stratify=y.numpy()
    )
    x_train, y_train = x[idx_train], y[idx_train]
    mean, std = x_train.mean().item(), x_train.std().item()
    return ImageData(
        name="digits",
        x_train=x_train,
        y_train=y_train,
        x_test=x[idx_test],
        y_test=y[idx_test],
        classes=[str(i) for i in range(10)],
        mean=(mean,),
        std=(std,),
        # One grey level is 1/16: budgets are set in those units rather than CIFAR's 8/255.
        eps_linf=0.1,
        eps_l2=1.0,
        source="sklearn.datasets.load_digits",
    )
