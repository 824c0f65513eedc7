"""Dataset readers: image files on disk (IDX, CIFAR pickles, ImageFolder trees) decoded once and cached."""
