"""Net surgery: turn ImageNet classifiers into FCN initialisations.

Modules (each one job): transplant (copy params by name, convolutionalising
fully connected layers), bilinear (fixed interpolation for upsampling
deconvolutions), expand (widen a layer's classes or input channels),
io (load and save nets without letting Caffe abort), download (the public
ImageNet caffemodels). `python -m surgery --help` is the command line.

Kept free of imports so that `python -m surgery` can quieten Caffe's logging
before Caffe is loaded.
"""
