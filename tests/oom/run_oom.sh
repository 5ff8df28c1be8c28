#!/usr/bin/env bash
# run_oom.sh PROBE — runs oom_probe under a virtual-memory limit and checks that running out of
# memory is a clear error (exit 1, moekd's message with bytes, dtype and element count), not an
# abort (exit 134: an exception thrown while unwinding) and not a bare std::bad_alloc (exit 3).
set -u
probe="$1"
limit_kb="${MOEKD_OOM_LIMIT_KB:-1048576}"  # 1 GiB of address space
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
# one big expert that does not fit; then memory used up entirely by small tensors (--exhaust:
# every destructor runs with no memory left, where an allocating deallocate aborted the program)
for mode in "" --exhaust; do
  ( ulimit -v "$limit_kb" && exec "$probe" $mode ) 2>"$err"
  rc=$?
  cat "$err" >&2
  if [ "$rc" -ne 1 ]; then
    echo "run_oom: FAIL ${mode:-(big expert)}: exit code $rc, expected 1 (134 = abort, 3 = bare std::bad_alloc)" >&2
    exit 1
  fi
  for want in "out of memory: cannot allocate" "bytes) for" "elements of float32"; do
    if ! grep -qF "$want" "$err"; then
      echo "run_oom: FAIL ${mode:-(big expert)}: the message lacks '$want'" >&2
      exit 1
    fi
  done
done
echo "run_oom: ok (exit 1 with a clear message under ulimit -v $limit_kb, both ways)"
