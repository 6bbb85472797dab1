#!/usr/bin/env python3
"""Golden reference numbers for our BERT, from Hugging Face transformers.

Runs sentence-transformers/all-MiniLM-L6-v2 with `transformers.AutoModel` and
`AutoTokenizer` in float32 (eval mode, eager attention) on three inputs, two
single sentences and one sentence pair, as ONE right-padded batch, so that
tokenisation, token types, padding and the attention mask are all exercised.
It writes tests/golden/minilm_l6.json (compact JSON), which is committed: the
Rust tests compare our tokenizer and forward pass with it. Per input it holds
the tokens, input_ids, token_type_ids, attention_mask, last_hidden_state and
the head-averaged attention probabilities of layers 0 and 5 for the real
(non-pad) tokens, and pooler_output; floats are rounded to 6 decimals.

Re-run only to refresh the numbers (e.g. if the inputs change). How:

    scripts/fetch-assets.sh          # installs the model into the HF cache
    python3 -m venv /tmp/golden-venv # any venv outside the repo
    /tmp/golden-venv/bin/pip install torch transformers
    HF_HUB_OFFLINE=1 /tmp/golden-venv/bin/python scripts/golden_hf.py

PyPI's torch wheel pulls in several GB of nvidia-* packages; they are not used
here (the script runs on the CPU). The numbers committed were made with the
versions recorded in the JSON's "generator" field. Options: --model DIR_OR_ID
(default: the hub id, resolved in the local cache only), --out PATH.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_LENGTH = 128
ATTENTION_LAYERS = (0, 5)
DECIMALS = 6
# Single sentences are strings, pairs are (first, second) tuples.
INPUTS = [
    "it 's a charming and often affecting journey . ",
    "the rock is destined to be the 21st century's new conan .",
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
]


def rounded(t):
    """Nested lists of Python floats rounded to DECIMALS (-0.0 becomes 0.0)."""
    if t.dim() == 0:
        return round(float(t), DECIMALS) + 0.0
    return [rounded(x) for x in t]


def resolve(model):
    if os.path.isdir(model):
        return os.path.abspath(model), None
    path = snapshot_download(model, local_files_only=True)
    return path, os.path.basename(path)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=HUB_ID, help="model folder or hub id (cache only)")
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden", "minilm_l6.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_dir, revision = resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model, info = AutoModel.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    if info["missing_keys"]:
        sys.exit(f"golden_hf: weights missing from the checkpoint: {info['missing_keys']}")
    model.eval()

    enc = tokenizer(INPUTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True)

    records = []
    for i, text in enumerate(INPUTS):
        mask = enc["attention_mask"][i]
        n = int(mask.sum())
        assert bool(mask[:n].all()) and not bool(mask[n:].any()), "expected right padding"
        ids = enc["input_ids"][i]
        rec = {"text": text if isinstance(text, str) else list(text),
               "pair": not isinstance(text, str),
               "tokens": tokenizer.convert_ids_to_tokens(ids[:n].tolist()),
               "input_ids": ids.tolist(),
               "token_type_ids": enc["token_type_ids"][i].tolist(),
               "attention_mask": mask.tolist(),
               "num_real_tokens": n,
               "last_hidden_state": rounded(out.last_hidden_state[i, :n]),
               "pooler_output": rounded(out.pooler_output[i])}
        for layer in ATTENTION_LAYERS:
            probs = out.attentions[layer][i].mean(dim=0)[:n, :n]  # heads averaged
            rec[f"attention_layer{layer}_mean_heads"] = rounded(probs)
        records.append(rec)

    doc = {
        "generator": {"script": "scripts/golden_hf.py", "torch": torch.__version__,
                      "transformers": transformers.__version__,
                      "python": sys.version.split()[0]},
        "model": {"hub_id": HUB_ID, "revision": revision,
                  "dtype": "float32", "attn_implementation": "eager", "mode": "eval"},
        "tokenizer_call": {"padding": True, "truncation": True, "max_length": MAX_LENGTH,
                           "batch": "all inputs in one call, padded on the right"},
        "decimals": DECIMALS,
        "notes": ("last_hidden_state and attention_layer*_mean_heads cover the real tokens only "
                  "(the first num_real_tokens positions); attention rows are query positions, "
                  "columns key positions; input_ids, token_type_ids and attention_mask include "
                  "the padding of the batch."),
        "inputs": records,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; model {model_dir})")


if __name__ == "__main__":
    main()
