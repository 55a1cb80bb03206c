"""Verified downloads: a file lands at its destination only once its
published checksum (or, without one, a validator) accepts it, so an
interrupted or corrupt transfer never leaves a plausible-looking file."""
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

from .atomic import atomic_path
from .errors import UserError

CHUNK = 1 << 20


class FetchError(UserError):
    """A download that failed or does not verify."""


def digest_of(path, algorithm="md5"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path, expected, algorithm, label, validate):
    """The published checksum when there is one; else `validate(path)`, if given."""
    actual = digest_of(path, algorithm)
    if expected is not None and actual != expected:
        raise FetchError(f"{label}: {algorithm} {actual} does not match the published {expected}")
    if expected is None and validate is not None:
        validate(path)
    return actual


def _progress(label, done, total, out):
    if total:
        out.write(f"\r{label}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done // total}%)")
    else:
        out.write(f"\r{label}: {done / 1e6:.1f} MB")
    out.flush()


def _download(url, f, dest, timeout, out):
    """Stream url into the open file f with a progress line; errors say what to do offline."""
    label = os.path.basename(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, 0.0
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                done += len(chunk)
                if time.monotonic() - shown > 0.5:
                    _progress(label, done, expected, out)
                    shown = time.monotonic()
            _progress(label, done, expected, out)
            out.write("\n")
    except urllib.error.HTTPError as e:
        raise FetchError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise FetchError(f"cannot download {url}: {getattr(e, 'reason', e)}. Offline? Put the "
                         f"file at {dest} by other means and run again to verify it") from None
    if expected and done != expected:
        raise FetchError(f"{url}: download incomplete, {done} of {expected} bytes")


def fetch(url, dest, md5=None, timeout=60, out=None, algorithm="md5", checksum=None,
          validate=None):
    """Download url to dest atomically and verify it; returns dest.

    `checksum` (or `md5`) is the published digest under `algorithm`; without
    one, `validate(path)` (if given) must accept the file, and the digest is
    printed for the record. A valid file already at dest is kept.
    """
    out = out or sys.stderr
    expected = checksum if checksum is not None else md5
    if os.path.isfile(dest):
        try:
            _check(dest, expected, algorithm, dest, validate)
            print(f"{dest}: already present and verified", file=out)
            return dest
        except Exception as e:  # FetchError, or the validator's own error
            print(f"{dest}: present but invalid ({e}); downloading again", file=out)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            _download(url, f, dest, timeout, out)
        actual = _check(tmp, expected, algorithm, url, validate)
    if expected is None:
        print(f"{dest}: {algorithm} {actual} (no published checksum; recorded here only)", file=out)
    return dest
