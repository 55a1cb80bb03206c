"""Crop alignment through caffe.coord_map.

caffe.coord_map walks the graph through layers it knows to be spatially
neutral; channel-axis Concat (GoogLeNet's inception outputs, NYUD's early
fusion input) is neutral too but missing from its list, so we register it.
"""
from caffe import coord_map

if "Concat" not in coord_map.PASS_THROUGH_LAYERS:
    coord_map.PASS_THROUGH_LAYERS.append("Concat")

crop = coord_map.crop
