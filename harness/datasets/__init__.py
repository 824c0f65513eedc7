"""Datasets on disk: readers (IDX, CIFAR pickles, SVHN .mat, ImageFolder trees), decoded once and cached, and the loading the file-backed plugins share."""
