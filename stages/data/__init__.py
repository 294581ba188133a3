"""Datasets in the PASCAL VOC layout: readers, the synthetic generator, transforms."""
