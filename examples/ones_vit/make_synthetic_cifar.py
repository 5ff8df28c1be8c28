"""Writes a synthetic set in CIFAR-10's binary layout (random labels and pixels) for the tests:
the real set is not in Debian. Usage: make_synthetic_cifar.py OUT_DIR [RECORDS_PER_FILE]"""
import os
import random
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rng = random.Random(1)
os.makedirs(out, exist_ok=True)
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(out, name), "wb") as f:
        for _ in range(n):  # one label byte (0-9), then 3 x 32 x 32 pixel bytes
            f.write(bytes([rng.randrange(10)]) + bytes(rng.randrange(256) for _ in range(3072)))
