#!/usr/bin/env python3
"""A line appended to a log, to its notification committed, as the log grows.

For logs of 1 MB, 100 MB and 1 GB (JSON lines, none matching), starts the
daemon (release build), lets it take the log as history, then appends one
matching line at a time and measures, per line:

  - the time from the append to the notification being committed (its row
    in the store's `history`, written when the file channel delivered it:
    commit, then delivery, so an upper bound of the commit);
  - the bytes the daemon read meanwhile (`rchar` of /proc/PID/io: every
    read(2), the store's included).

Each size runs `--runs` appends; the median is reported, and the ratio of
the 1 GB figures to the 1 MB ones, measured in the same run: a flat cost is
a ratio near 1.
"""
import argparse, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time

LINE = '{"title": "weather and markets, nothing else of note today", "n": 0}\n'


def rchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar")


def committed(db, n):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM history").fetchone()[0] >= n
        finally:
            con.close()
    except sqlite3.Error:
        return False


def run(binary, size, runs, work):
    d = os.path.join(work, f"log-{size}")
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    log = os.path.join(d, "data", "news.jsonl")
    chunk = (LINE * (1 << 14)).encode()
    with open(log, "wb") as f:
        written = 0
        while written < size:
            f.write(chunk)
            written += len(chunk)
    with open(os.path.join(d, "tocsin.yaml"), "w") as f:
        f.write("state: state.db\nrules: rules.yaml\nsources:\n"
                "  - { name: news, type: file, path: data/news.jsonl, mode: log }\n"
                "channels:\n  - { name: audit, type: file, path: alerts.jsonl }\n")
    with open(os.path.join(d, "rules.yaml"), "w") as f:
        f.write('rules:\n  - { id: ec, source: news, when: { text: [title], any: ["export control*"] }, notify: [audit] }\n')
    err = open(os.path.join(d, "daemon.log"), "w")
    p = subprocess.Popen([binary, "run", "-c", os.path.join(d, "tocsin.yaml")],
                         stdout=subprocess.DEVNULL, stderr=err,
                         env=dict(os.environ, RUST_LOG="warn"))
    db = os.path.join(d, "state.db")
    try:
        # Started once the store has the log's cursor (its first look read).
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                n = con.execute("SELECT COUNT(*) FROM log_cursor").fetchone()[0]
                con.close()
                if n:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.05)
        time.sleep(0.5)
        times, reads = [], []
        for i in range(runs):
            before = rchar(p.pid)
            t0 = time.perf_counter()
            with open(log, "a") as f:
                f.write(json.dumps({"title": f"new export controls {i}"}) + "\n")
            while not committed(db, i + 1):
                time.sleep(0.002)
            times.append(time.perf_counter() - t0)
            reads.append(rchar(p.pid) - before)
            time.sleep(0.3)
        return statistics.median(times), statistics.median(reads)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tocsin")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", default="1000000,100000000,1000000000")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tocsin-logappend-", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        res = {}
        for size in map(int, a.sizes.split(",")):
            t, r = run(a.bin, size, a.runs, work)
            res[size] = (t, r)
            print(f"log of {size / 1e6:7.0f} MB: {t * 1000:7.1f} ms append → committed, "
                  f"{r / 1024:8.1f} KiB read (median of {a.runs})", flush=True)
        lo, hi = min(res), max(res)
        print(f"{hi / 1e6:.0f} MB / {lo / 1e6:.0f} MB: time {res[hi][0] / res[lo][0]:.2f}x, "
              f"bytes read {res[hi][1] / max(res[lo][1], 1):.2f}x (flat: near 1)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
