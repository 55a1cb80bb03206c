"""Python data layers for Caffe: whole images, batch 1, every FCN dataset.

One core (params, io, order, prefetch, reader, base) and one module per
on-disk format. Keys and layouts: data/README.md.
"""
