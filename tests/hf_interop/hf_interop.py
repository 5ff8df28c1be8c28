#!/usr/bin/env python3
"""hf_interop.py -- the Python half of the transformers checkpoint proof (tests/hf_interop), with
the real `transformers` package on Debian's torch; models are built from configs, never downloaded:
  hf_interop.py deps <dir>         import torch, transformers, safetensors (fails with the hint)
  hf_interop.py check-bert <dir>   <dir>/bert_cpp (moekd's save_hf_bert) into BertForMaskedLM:
                                   from_pretrained must report no missing / unexpected / mismatched
                                   key, load_state_dict(strict=True) must take the file (plus the
                                   tied decoder keys, as transformers ties them), and the logits on
                                   moekd's inputs must match moekd's (max abs diff <= 1e-5)
  hf_interop.py write-bert <dir>   a random BertForMaskedLM from a BertConfig -> save_pretrained(
                                   <dir>/bert_py, safe_serialization=True), and a BertForPreTraining
                                   (pooler + NSP head) -> <dir>/bert_py_pretraining; inputs and both
                                   models' MLM logits in <dir>/bert_py_io.safetensors, for
                                   `hf_interop check-bert`
  check-vit / write-vit            the same for ViTForImageClassification
"""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is ever fetched: every model here is built from a config
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TOL = 1e-5
HINT = ("run scripts/deps.sh (it pip-installs transformers for Debian's /usr/bin/python3, next to python3-torch), "
        "or configure with -DMOEKD_HF_PYTHON=<a python with torch and transformers>")

try:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, ViTConfig, ViTForImageClassification
except ImportError as e:  # a missing package is a failure, never a skip
    sys.exit(f"hf_interop.py: {e} ({sys.executable}); {HINT}")

torch.manual_seed(2024)
BERT_TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
             "cls.predictions.decoder.bias": "cls.predictions.bias"}


def perturb(model):
    """Every parameter off its init (LayerNorm weights off 1, biases off 0); tied ones once."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def compare(what, got, want):
    got, want = got.detach().float(), want.detach().float()
    if got.shape != want.shape:
        print(f"{what}: MISMATCH shape transformers {tuple(got.shape)} vs moekd {tuple(want.shape)}")
        return 1
    worst = (got - want).abs().max().item()
    ok = worst <= TOL
    print(f"{what}: logits {tuple(got.shape)}, max |transformers - moekd| = {worst:.3g} (tolerance {TOL:g}) "
          f"{'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def loading_info_clean(what, info):
    bad = {k: v for k, v in info.items() if v}
    if bad:
        print(f"{what}: MISMATCH from_pretrained reported {bad}")
    return 1 if bad else 0


def check_bert(d):
    path = os.path.join(d, "bert_cpp")
    model, info = BertForMaskedLM.from_pretrained(path, output_loading_info=True)
    bad = loading_info_clean("check-bert", info)
    if model.cls.predictions.decoder.weight is not model.bert.embeddings.word_embeddings.weight:
        print("check-bert: MISMATCH the decoder weight is not tied to the word embeddings")
        bad += 1
    # strict: the file holds every key of BertForMaskedLM except the tied decoder ones, which
    # transformers fills by tying (save_pretrained leaves them out the same way)
    strict = BertForMaskedLM(BertConfig.from_pretrained(path))
    sd = load_file(os.path.join(path, "model.safetensors"))
    want = set(strict.state_dict()) - set(BERT_TIED)
    if set(sd) != want:
        print(f"check-bert: MISMATCH keys: missing {sorted(want - set(sd))}, unexpected {sorted(set(sd) - want)}")
        bad += 1
    strict.load_state_dict({**sd, **{k: sd[v] for k, v in BERT_TIED.items()}}, strict=True)
    inputs = load_file(os.path.join(d, "bert_cpp_inputs.safetensors"))
    want_logits = load_file(os.path.join(d, "bert_cpp_logits.safetensors"))["logits"]
    for name, m in (("from_pretrained", model), ("load_state_dict(strict=True)", strict)):
        m.eval()
        with torch.no_grad():
            out = m(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"],
                    attention_mask=inputs["attention_mask"]).logits
        bad += compare(f"check-bert ({name})", out, want_logits)
    return 1 if bad else 0


def write_bert(d):
    # sizes and options other than moekd's side uses, so config.json is really read
    cfg = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                     max_position_embeddings=16, type_vocab_size=3, layer_norm_eps=1e-7, pad_token_id=2,
                     hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3, hidden_act="gelu")
    model = BertForMaskedLM(cfg)
    perturb(model)
    model.eval()
    model.save_pretrained(os.path.join(d, "bert_py"), safe_serialization=True)
    B, T = 2, 12
    ids = torch.randint(3, 60, (B, T))
    types = torch.randint(0, 3, (B, T))
    keep = torch.ones(B, T, dtype=torch.int64)
    keep[1, 8:] = 0
    ids[1, 8:] = 2
    with torch.no_grad():
        logits = model(input_ids=ids, token_type_ids=types, attention_mask=keep).logits
    # what a pre-trained BERT on disk usually is: BertForPreTraining, with the pooler and the
    # next-sentence head that moekd's MLM model has no place for (load_hf_bert skips and lists them)
    pre = BertForPreTraining(cfg)
    perturb(pre)
    pre.eval()
    pre.save_pretrained(os.path.join(d, "bert_py_pretraining"), safe_serialization=True)
    with torch.no_grad():
        pre_logits = pre(input_ids=ids, token_type_ids=types, attention_mask=keep).prediction_logits
    save_file({"input_ids": ids, "token_type_ids": types, "attention_mask": keep, "logits": logits.contiguous(),
               "pretraining_logits": pre_logits.contiguous()}, os.path.join(d, "bert_py_io.safetensors"))
    print(f"write-bert: {d}/bert_py (transformers {transformers.__version__}, torch {torch.__version__}), "
          f"logits {tuple(logits.shape)}")
    return 0


def check_vit(d):
    path = os.path.join(d, "vit_cpp")
    model, info = ViTForImageClassification.from_pretrained(path, output_loading_info=True)
    bad = loading_info_clean("check-vit", info)
    strict = ViTForImageClassification(ViTConfig.from_pretrained(path))
    strict.load_state_dict(load_file(os.path.join(path, "model.safetensors")), strict=True)
    io = load_file(os.path.join(d, "vit_cpp_io.safetensors"))
    for name, m in (("from_pretrained", model), ("load_state_dict(strict=True)", strict)):
        m.eval()
        with torch.no_grad():
            out = m(pixel_values=io["pixel_values"]).logits
        bad += compare(f"check-vit ({name})", out, io["logits"])
    return 1 if bad else 0


def write_vit(d):
    cfg = ViTConfig(image_size=12, patch_size=4, num_channels=2, hidden_size=24, num_hidden_layers=2,
                    num_attention_heads=3, intermediate_size=36, num_labels=7, layer_norm_eps=1e-6, hidden_act="gelu")
    model = ViTForImageClassification(cfg)
    perturb(model)
    model.eval()
    model.save_pretrained(os.path.join(d, "vit_py"), safe_serialization=True)
    pixels = torch.randn(3, 2, 12, 12)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    save_file({"pixel_values": pixels, "logits": logits.contiguous()}, os.path.join(d, "vit_py_io.safetensors"))
    print(f"write-vit: {d}/vit_py, logits {tuple(logits.shape)}")
    return 0


MODES = {"deps": lambda d: print(f"deps: transformers {transformers.__version__}, torch {torch.__version__}") or 0,
         "check-bert": check_bert, "write-bert": write_bert, "check-vit": check_vit, "write-vit": write_vit}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in MODES:
        sys.exit(__doc__)
    sys.exit(MODES[sys.argv[1]](sys.argv[2]))
