"""A batch inference job: every image of some files and directories through a
Predictor into an output directory, equal-size images sharing forwards, bad
images skipped or reported."""
import os
import sys
import time

from .predictor import BadImage, InferError, print_warning, image_size, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def collect_images(paths):
    """Expand directories into their .jpg/.jpeg/.png files (sorted); files stay.

    Returns (image paths, [(path, reason)] for inputs that do not exist).
    """
    images, missing = [], []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, f)))
            if not found:
                print_warning(f"{path}: no .jpg/.jpeg/.png images in this directory")
            images.extend(found)
        elif os.path.exists(path):
            images.append(path)
        else:
            missing.append((path, "no such file or directory"))
    return images, missing


def output_stems(paths):
    """A distinct output stem per path: the file stem, or stem_ext where stems collide."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    stems_used = {}
    for s in stems:
        stems_used[s] = stems_used.get(s, 0) + 1
    out, taken = [], set()
    for path, stem in zip(paths, stems):
        if stems_used[stem] > 1:
            stem = os.path.basename(path).replace(".", "_")
        base, k = stem, 1
        while stem in taken:
            k += 1
            stem = f"{base}_{k}"
        taken.add(stem)
        out.append(stem)
    return out


def run(predictor, paths, out, save_scores=False, keep_going=False, log=None):
    """Segment every image of `paths` (files or directories) into `out`.

    Equal-size images share forwards (up to predictor.batch_size). Returns
    (number of images segmented, [(path, reason)] failures). Without
    `keep_going` the first bad image raises BadImage before anything more
    is written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    images, failures = collect_images(paths)
    if failures and not keep_going:
        raise BadImage(*failures[0])
    if not images and not failures:
        raise InferError("no images given (directories hold no .jpg/.jpeg/.png files)")
    for path, reason in failures:
        log(f"skipped {path}: {reason}")

    groups = {}                                  # (h, w) -> paths, in input order
    for path in images:
        try:
            size = image_size(path)
        except BadImage as exc:
            if not keep_going:
                raise
            failures.append((exc.path, exc.reason))
            log(f"skipped {exc}")
            continue
        groups.setdefault(size, []).append(path)
    stems = dict(zip(images, output_stems(images)))
    total = sum(len(g) for g in groups.values())
    done, start = 0, time.time()
    os.makedirs(out, exist_ok=True)
    for (h, w), group in groups.items():
        for i in range(0, len(group), predictor.batch_size):
            chunk, rgbs = [], []
            for path in group[i:i + predictor.batch_size]:
                try:
                    rgbs.append(load_image(path, warn=print_warning))
                    chunk.append(path)
                except BadImage as exc:
                    if not keep_going:
                        raise
                    failures.append((exc.path, exc.reason))
                    total -= 1
                    log(f"skipped {exc}")
            if not chunk:
                continue
            try:
                results = predictor.predict(rgbs)
            except (InferError, ValueError, MemoryError) as exc:
                if not keep_going:
                    raise InferError(f"{', '.join(chunk)}: {exc}") from None
                failures.extend((path, f"{type(exc).__name__}: {exc}") for path in chunk)
                total -= len(chunk)
                log(f"skipped {', '.join(chunk)}: {exc}")
                continue
            for path, rgb, result in zip(chunk, rgbs, results):
                predictor.save(out, stems[path], rgb, result, save_scores)
            done += len(chunk)
            rate = done / max(time.time() - start, 1e-9)
            names = ", ".join(os.path.basename(p) for p in chunk)
            log(f"[{done}/{total}] {w}x{h} batch of {len(chunk)}: {names} ({rate:.2f} img/s)")
    return done, failures
