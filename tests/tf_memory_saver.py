"""Save one large float32 variable through `tf.train.Checkpoint.write` and
print, as JSON, the peak RSS growth while saving and the seconds it took:
`python tf_memory_saver.py PREFIX GIB`. Run in a fresh process by
tests/test_tf.py and bench/_frameworks_tf.py, so nothing else the caller
holds counts against the save."""

from __future__ import annotations

import json
import resource
import sys
import threading
import time

import tensorflow as tf

import s3dlio_tf  # noqa: F401 - registers the s3, az and direct schemes


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    prefix, gib = sys.argv[1], float(sys.argv[2])
    v = tf.Variable(tf.range(int(gib * (1 << 30)) // 4, dtype=tf.float32))
    ckpt = tf.train.Checkpoint(v=v)
    base, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    ckpt.write(prefix)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss())
    print(json.dumps({"growth_mib": (peak[0] - base) / (1 << 20), "seconds": seconds}))


if __name__ == "__main__":
    main()
