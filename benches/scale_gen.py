#!/usr/bin/env python3
"""Helpers of benches/scale.sh (issue 13's scaling run).

  scale_gen.py gen DIR N [SEED]      N notes of 1-2 KB of random words under DIR/memory/notes/,
                                     1,000 per directory (d0000/n0000000.md ...); the same
                                     SEED gives the same files
  scale_gen.py edit DIR N ROUND      rewrite 10 of the N notes (new content, new size, new inode)
  scale_gen.py time RUNS CMD...      run CMD RUNS times; print "median min max" in ms
"""
import os
import random
import statistics
import subprocess
import sys
import time

PER_DIR = 1000


def note_path(root, i):
    return os.path.join(root, "memory/notes/d%04d/n%07d.md" % (i // PER_DIR, i))


def word_pool(rng, chars=4 << 20):
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
    out, n = [], 0
    while n < chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out)


def gen(root, n, seed):
    rng = random.Random(seed)
    pool = word_pool(rng)
    limit = len(pool) - 2048
    for i in range(n):
        if i % PER_DIR == 0:
            os.makedirs(os.path.dirname(note_path(root, i)), exist_ok=True)
        size = rng.randint(1024, 2048)
        head = "# note %d\n\n" % i
        off = rng.randrange(limit)
        body = (head + pool[off:off + size - len(head)]).encode()
        fd = os.open(note_path(root, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, body)
        os.close(fd)


def edit(root, n, rnd):
    """Rewrite 10 notes the way an editor saves: a new file renamed over the old one (which
    also breaks the hard links scale.sh's large sizes share between a and b)."""
    for k in range(10):
        path = note_path(root, k * (n // 10) + 7 * rnd + 1)
        with open(path) as f:
            text = f.read()
        with open(path + ".tmp", "w") as f:
            f.write(text + "\nedit %d of round %d at %.6f%s\n" % (k, rnd, time.time(), " more" * (5 * rnd + k)))
        os.replace(path + ".tmp", path)


def time_runs(runs, cmd):
    xs = []
    for _ in range(runs):
        s = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        xs.append((time.perf_counter() - s) * 1000)
    print("%.1f %.1f %.1f" % (statistics.median(xs), min(xs), max(xs)))


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 13)
    elif verb == "edit":
        edit(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif verb == "time":
        time_runs(int(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)
