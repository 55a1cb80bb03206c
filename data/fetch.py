"""Download dataset archives, verified against published checksums.

    python -m data.fetch voc2011 sbd --dir datasets/downloads [--extract datasets/pascal]
    python -m data.fetch --list

A file already in place is verified, not downloaded again; a download goes
to a temporary file that is renamed only once its checksum matches, so an
interrupted or corrupt transfer never leaves a plausible-looking archive.
Where no checksum has been published (NYUD, SIFT Flow) the file's md5 is
printed for the record. See data/README.md for where each value comes from.
"""
import argparse
import os
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Optional

from common.cli import run_cli
from common.download import FetchError, digest_of, fetch
from common.outputs import check_dir

@dataclass(frozen=True)
class Archive:
    url: str
    md5: Optional[str]          # None: no published checksum
    note: str = ""


ARCHIVES = {
    "voc2012": Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                       "6cd6e144f989b92b3379bac3b3de84fd", "VOC2012 trainval (test-set submissions)"),
    "voc2011": Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
                       "6c3384ef61512963050cb5d687e5bf1e", "VOC2011 trainval: seg11valid images"),
    "voc2010": Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
                       "da459979d0c395079b5c75ee67908abb", "VOC2010 trainval: PASCAL-Context images"),
    "sbd": Archive("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
                   "semantic_contours/benchmark.tgz",
                   "82b4d87ceb2ed10f6038a1cba92111cb", "SBD: benchmark_RELEASE/dataset (train 8498)"),
    "pascalcontext": Archive("http://www.cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
                             "df034edb2c12aa7d33b42b20bb1796e3", "PASCAL-Context annotations + labels.txt"),
    "pascalcontext-59": Archive("http://www.cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt",
                                "993901f2d930cc038c406845f08fa082", "the 59-class list"),
    "nyud": Archive("http://dl.caffe.berkeleyvision.org/nyud.tar.gz", None,
                    "NYUDv2 in FCN's layout (images, depth, HHA, 40-class labels)"),
    "siftflow": Archive("http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip", None,
                        "SIFT Flow (LabelMe) images + semantic/geometric labels"),
}


def md5_of(path):
    return digest_of(path, "md5")


def extract(archive, dest):
    """Unpack a .tar/.tgz/.zip into dest, refusing members that escape it."""
    os.makedirs(dest, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            root = os.path.realpath(dest)
            for name in z.namelist():
                if not os.path.realpath(os.path.join(dest, name)).startswith(root + os.sep):
                    raise FetchError(f"{archive}: member {name!r} would land outside {dest}")
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    elif archive.endswith(".txt"):
        return
    else:
        raise FetchError(f"{archive}: neither a tar nor a zip archive")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"any of: {', '.join(ARCHIVES)}")
    parser.add_argument("--dir", default="datasets/downloads", help="where archives are kept")
    parser.add_argument("--extract", metavar="DIR", help="unpack each archive into DIR")
    parser.add_argument("--list", action="store_true", help="print the archives and exit")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, a in ARCHIVES.items():
            print(f"{name:18s} {a.md5 or '(no published md5)':34s} {a.url}\n{'':18s} {a.note}")
        return 0
    unknown = [n for n in args.names if n not in ARCHIVES]
    if unknown:
        parser.error(f"unknown archive(s) {unknown}; known: {', '.join(ARCHIVES)}")
    return run_cli("data.fetch", fetch_all, args)


def fetch_all(args):
    check_dir(args.dir, flag="--dir")
    if args.extract:
        check_dir(args.extract, flag="--extract")
    for name in args.names:
        a = ARCHIVES[name]
        path = fetch(a.url, os.path.join(args.dir, os.path.basename(a.url)), a.md5)
        if args.extract:
            extract(path, args.extract)


if __name__ == "__main__":
    sys.exit(main())
