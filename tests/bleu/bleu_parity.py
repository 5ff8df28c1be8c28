"""bleu_parity.py — moekd's BLEU (include/moekd/text/bleu.hpp, via the bleu_score program) against
the real sacreBLEU package (PyPI `sacrebleu`) on real text.

References are real human translations: the msgstr strings of the gettext catalogs installed on
this machine (/usr/share/locale/<lang>/LC_MESSAGES/*.mo), French, German, Czech (Latin script),
Hindi and Gujarati (Devanagari / Gujarati script). Hypotheses are seeded random perturbations
(dropped, swapped, duplicated, replaced words, truncation, case changes, punctuation) plus empty
lines. Extra corpora: punctuation-heavy lines (entities, placeholders, numbers, Unicode spaces),
all-empty hypotheses, hypothesis = reference. For every corpus it checks
  * the 13a tokenisation of every line is byte-identical,
  * corpus BLEU, the four precisions, BP, hyp_len, ref_len agree (|dBLEU| < 1e-6),
  * sentence BLEU (effective order) of every line agrees (|d| < 1e-6),
  * the signature equals sacreBLEU's without its version field.
usage: bleu_parity.py BLEU_SCORE_BINARY WORKDIR
"""
import gettext
import glob
import json
import os
import random
import subprocess
import sys

import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

TOL = 1e-6


def catalog_strings(lang, limit):
    out = []
    for mo in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for k, v in cat.items():
            if not isinstance(k, str) or not k or not v or v == k:
                continue
            v = " ".join(v.replace("\r", " ").split("\n")).strip()
            if v and v not in out:
                out.append(v)
            if len(out) >= limit:
                return out
    return out


def perturb(line, rng):
    words = line.split(" ")
    r = rng.random()
    if r < 0.12:
        return ""
    ops = rng.randint(1, 3)
    for _ in range(ops):
        op = rng.randrange(7)
        if not words:
            break
        i = rng.randrange(len(words))
        if op == 0 and len(words) > 1:
            del words[i]
        elif op == 1 and len(words) > 1:
            j = min(i + 1, len(words) - 1)
            words[i], words[j] = words[j], words[i]
        elif op == 2:
            words.insert(i, words[i])
        elif op == 3:
            words[i] = rng.choice(["the", "de", "und", "का", "ને", "x", words[-1]])
        elif op == 4:
            words = words[: max(1, len(words) // 2)]
        elif op == 5:
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].lower()
        else:
            words[i] = words[i] + rng.choice([".", ",", "!", "?", ";", "...", " -", "'s"])
    return " ".join(words)


PUNCT = [
    "Hello, world! It's 3.14 or 1,000.5 -- right?",
    "&quot;Quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; <skipped> text",
    "%s of %d files (%.1f%%) copied to `/usr/bin/...`",
    "Ranges: 2-3, 10-20; a-b; x--y; 5-",
    "Price: $5.00, €4,50; 1.000.000 units.",
    "[Options] {all} ~home~ ^caret^ _under_ |pipe| \\back\\ @at #hash",
    "Unicode\u00a0no-break\u2009thin\u3000ideographic\tspace",
    "... leading dots and trailing commas,,,",
    "Email: user@example.com, URL: https://example.org/a?b=c&d=e.",
    "Don't stop. Won't stop! «Guillemets» „Anführung“ “smart” ‘quotes’",
    "१२३४. हिन्दी, वाक्य। ગુજરાતી, વાક્ય.",
    "   leading and trailing spaces   ",
    "a.b,c.d 1.a a.1 ,x x,",
    "-",
    ".",
]


def run(binary, *args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True, encoding="utf-8").stdout


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for l in lines:
            assert "\n" not in l and "\r" not in l
            f.write(l + "\n")


def check_corpus(binary, workdir, name, refs, hyps):
    ref_path = os.path.join(workdir, f"{name}.ref")
    hyp_path = os.path.join(workdir, f"{name}.hyp")
    write_lines(ref_path, refs)
    write_lines(hyp_path, hyps)
    fails = []

    tok = Tokenizer13a()
    ours = run(binary, "tok", ref_path).split("\n")[:-1]
    for i, (a, b) in enumerate(zip(ours, refs)):
        if a != tok(b.rstrip()):
            fails.append(f"tokenize line {i + 1}: moekd {a!r} sacrebleu {tok(b.rstrip())!r}")
            break
    if len(ours) != len(refs):
        fails.append(f"tokenize: {len(ours)} lines out, {len(refs)} in")

    bleu = BLEU()
    ref_score = bleu.corpus_score(hyps, [refs])
    mine = json.loads(run(binary, "corpus", ref_path, hyp_path))
    d = abs(mine["score"] - ref_score.score)
    if d > TOL:
        fails.append(f"corpus BLEU: moekd {mine['score']} sacrebleu {ref_score.score}")
    for k, v in (("hyp_len", ref_score.sys_len), ("ref_len", ref_score.ref_len), ("counts", list(ref_score.counts)),
                 ("totals", list(ref_score.totals))):
        if mine[k] != v:
            fails.append(f"{k}: moekd {mine[k]} sacrebleu {v}")
    for n in range(4):
        if abs(mine["precisions"][n] - ref_score.precisions[n]) > TOL:
            fails.append(f"precision {n + 1}: moekd {mine['precisions'][n]} sacrebleu {ref_score.precisions[n]}")
    if abs(mine["bp"] - ref_score.bp) > TOL:
        fails.append(f"bp: moekd {mine['bp']} sacrebleu {ref_score.bp}")
    sig = bleu.get_signature().format().rsplit("|version:", 1)[0]
    if mine["signature"] != sig:
        fails.append(f"signature: moekd {mine['signature']} sacrebleu {sig}")

    sent = [float(x) for x in run(binary, "sentence", ref_path, hyp_path).split()]
    sb = BLEU(effective_order=True)
    worst = 0.0
    for i, (h, r) in enumerate(zip(hyps, refs)):
        s = sb.sentence_score(h, [r]).score
        worst = max(worst, abs(s - sent[i]))
        if abs(s - sent[i]) > TOL:
            fails.append(f"sentence {i + 1}: moekd {sent[i]} sacrebleu {s} (hyp {h!r} ref {r!r})")
            break
    print(f"{name:>12}: {len(refs):5d} lines  sacrebleu {ref_score.score:8.4f}  moekd {mine['score']:8.4f}  "
          f"|d| {d:.2e}  sentence max |d| {worst:.2e}  {'OK' if not fails else 'FAIL'}")
    return fails


def main():
    binary, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    rng = random.Random(20240611)
    print(f"sacrebleu {sacrebleu.__version__}")
    fails = []
    n_real = 0
    for lang in ["fr", "de", "cs", "hi", "gu"]:
        refs = catalog_strings(lang, 1500)
        if len(refs) < 50:
            print(f"{lang:>12}: too few catalog strings installed ({len(refs)}), skipped")
            continue
        n_real += 1
        hyps = [perturb(r, rng) for r in refs]
        fails += check_corpus(binary, workdir, lang, refs, hyps)
        if lang == "fr":
            fails += check_corpus(binary, workdir, "fr-identity", refs, list(refs))
            fails += check_corpus(binary, workdir, "fr-allempty", refs, [""] * len(refs))
            fails += check_corpus(binary, workdir, "fr-short", refs[:40], [perturb(r, rng) for r in refs[:40]])
    if n_real == 0:
        fails.append("no gettext catalogs found under /usr/share/locale: no real text to test on")
    punct_hyps = [perturb(r, rng) for r in PUNCT] + [r.lower() for r in PUNCT]
    fails += check_corpus(binary, workdir, "punctuation", PUNCT + PUNCT, punct_hyps)
    fails += check_corpus(binary, workdir, "tiny", ["a b c d e"], ["a b"])
    for f in fails:
        print("FAIL:", f)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
