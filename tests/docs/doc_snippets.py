#!/usr/bin/env python3
"""doc_snippets.py — every C++ block of the README and docs/ is checked, so the documentation
cannot rot (tests/docs/CMakeLists.txt runs this).

Each ```cpp block must have, on the line right before its fence, one of
  <!-- snippet: run -->            compiled against moekd and run (exit status 0)
  <!-- snippet: compile -->        compiled against moekd (needs MPI, a GPU, ... to run)
  <!-- snippet: compile-cuda -->   compiled against moekd::cuda, where the CUDA backend is built
  <!-- snippet: excerpt PATH -->   its lines appear, in order and contiguous, in the file PATH
                                   (repo-relative; a line that is exactly `// ...` skips lines)
A run / compile block is a program: its leading #include and `using namespace` lines stay at the
top, and the rest becomes the body of main() unless the block defines main itself.

  doc_snippets.py extract OUT_DIR ROOT FILE...   write OUT_DIR/<name>.cpp for the compiled
                                                 blocks; print "name|mode|where" lines
  doc_snippets.py excerpts ROOT FILE...          check the excerpt blocks (and that every block
                                                 has a marker); exit 1 naming each failure
  doc_snippets.py headers DOC HEADER...          a header's usage snippet (the `//   ` lines after
                                                 its "// Usage" line) must be lines of DOC's
                                                 compiled blocks, in order (`// ...` skips lines;
                                                 indentation is ignored)
"""
import os
import re
import sys

FENCE = re.compile(r"^```(cpp|c\+\+)\s*$")
MARK = re.compile(r"^<!--\s*snippet:\s*(run|compile|compile-cuda|excerpt)(?:\s+(\S+))?\s*-->\s*$")


def blocks(path):
    """(line number of the fence, mode, arg, code lines) for each C++ block of a Markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise SystemExit(f"{path}:{start + 1}: unterminated ```cpp block")
            m = MARK.match(lines[start - 1]) if start > 0 else None
            out.append((start + 1, m.group(1) if m else None, m.group(2) if m else None, lines[start + 1:j]))
            i = j + 1
        else:
            i += 1
    return out


def program(code):
    """A compilable translation unit from a snippet."""
    if any(re.search(r"\bint\s+main\s*\(", l) for l in code):
        return "\n".join(code) + "\n"
    head, body, in_head = [], [], True
    for l in code:
        if in_head and (l.startswith("#include") or l.startswith("using namespace") or not l.strip()):
            head.append(l)
        else:
            in_head = False
            body.append(l)
    return ("\n".join(head) + "\n\nint main(int argc, char** argv) {\n    (void)argc;\n    (void)argv;\n" +
            "\n".join("    " + l if l.strip() else "" for l in body) + "\n    return 0;\n}\n")


def rel(root, path):
    return os.path.relpath(path, root)


def extract(out_dir, root, files):
    os.makedirs(out_dir, exist_ok=True)
    written = set()
    for f in files:
        for line, mode, _arg, code in blocks(f):
            if mode not in ("run", "compile", "compile-cuda"):
                continue
            where = f"{rel(root, f)}:{line}"
            name = re.sub(r"[^A-Za-z0-9]+", "_", where).strip("_")
            text = f"// extracted from {where} by tests/docs/doc_snippets.py: edit the Markdown, not this file\n"
            text += program(code)
            dst = os.path.join(out_dir, name + ".cpp")
            if not os.path.exists(dst) or open(dst).read() != text:  # unchanged: no rebuild
                with open(dst, "w") as o:
                    o.write(text)
            written.add(name + ".cpp")
            print(f"{name}|{mode}|{where}")
    for old in os.listdir(out_dir):  # a block that moved or went away
        if old.endswith(".cpp") and old not in written:
            os.remove(os.path.join(out_dir, old))


def find_excerpt(code, text_lines):
    """Whether code (with `// ...` gaps) appears in order in text_lines; the chunks between gaps
    are contiguous runs (compared with trailing whitespace stripped)."""
    chunks, cur = [], []
    for l in code:
        if l.strip() == "// ...":
            if cur:
                chunks.append(cur)
            cur = []
        else:
            cur.append(l.rstrip())
    if cur:
        chunks.append(cur)
    pos = 0
    lines = [l.rstrip() for l in text_lines]
    for ch in chunks:
        found = -1
        for k in range(pos, len(lines) - len(ch) + 1):
            if lines[k:k + len(ch)] == ch:
                found = k
                break
        if found < 0:
            return ch
        pos = found + len(ch)
    return None


def excerpts(root, files):
    bad = 0
    n = 0
    for f in files:
        for line, mode, arg, code in blocks(f):
            where = f"{rel(root, f)}:{line}"
            if mode is None:
                print(f"FAIL {where}: a ```cpp block without a <!-- snippet: run|compile|compile-cuda|excerpt PATH --> line before it")
                bad += 1
                continue
            if mode != "excerpt":
                continue
            n += 1
            if not arg:
                print(f"FAIL {where}: 'excerpt' needs the path of the file it quotes")
                bad += 1
                continue
            src = os.path.join(root, arg)
            if not os.path.isfile(src):
                print(f"FAIL {where}: quotes '{arg}', which does not exist")
                bad += 1
                continue
            missing = find_excerpt(code, open(src, encoding="utf-8").read().split("\n"))
            if missing is not None:
                print(f"FAIL {where}: these lines are not in {arg} (in this order):\n    " + "\n    ".join(missing[:6]))
                bad += 1
            else:
                print(f"ok   {where}: excerpt of {arg}")
    print(f"{n} excerpt block(s) checked, {bad} failure(s)")
    return 1 if bad else 0


def header_usage(path):
    """The usage snippet of a header's opening comment: the `//   code` lines after "// Usage"."""
    out, on = [], False
    for l in open(path, encoding="utf-8").read().split("\n"):
        if not l.startswith("//"):
            if on:
                break
            continue
        if l.startswith("// Usage"):
            on = True
            continue
        if on and l.startswith("//   "):
            out.append(l[5:])
    return out


def headers(doc, files):
    code = []
    for _line, mode, _arg, block in blocks(doc):
        if mode in ("run", "compile", "compile-cuda"):
            code += [l.strip() for l in block]
    bad = 0
    for f in files:
        usage = header_usage(f)
        if not usage:
            print(f"FAIL {f}: no usage snippet (`//   ` lines after a '// Usage' line)")
            bad += 1
            continue
        missing = find_excerpt([l.strip() if l.strip() != "// ..." else "// ..." for l in usage], code)
        if missing is None:
            print(f"ok   {f}: {len(usage)} usage lines are in {doc}")
        else:
            print(f"FAIL {f}: these usage lines are not in the programs of {doc} (in this order):\n    " +
                  "\n    ".join(missing[:6]))
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "excerpts":
        sys.exit(excerpts(sys.argv[2], sys.argv[3:]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "headers":
        sys.exit(headers(sys.argv[2], sys.argv[3:]))
    else:
        sys.exit(__doc__)
