#!/usr/bin/env python3
"""Scale: many rules, beside promtool on the same number of rules.

For 1,000, 10,000 and 100,000 rules (one rules file, rules shaped as
analysts write them: a `where:` filter and a threshold, one in ten a phrase
rule, one in a hundred reading a shared list), it measures, each the median
of --runs runs, in wall-clock time:

  check   `tocsin check -c tocsin.yaml`
  start   `tocsin run` from its start to "tocsin started" in its log
  reload  one rule's threshold edited (written to a temporary file and
          renamed over the rules file, as editors save) to "reloaded" in
          the log: the daemon sees the edit itself, no SIGHUP
  peer    `promtool check rules` on a Prometheus rules file with the same
          number of alerting rules (Debian package `prometheus`); `yq` if
          promtool is missing

Printed as a table with the peer beside, and the targets.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

TARGETS = {
    10_000: "check and start < 300 ms, reload < 100 ms",
    100_000: "loads, < 3 s",
}


def rules_yaml(n, threshold_of=lambda i: 100 + i % 100):
    out = ["lists:", "  allies: [EU, JP, AU, CA, IN, UK, G7]", "rules:"]
    for i in range(n):
        if i % 10 == 9:
            cond = '{ text: [title], any: ["export control*", "rare earth %d"] }' % i
        elif i % 100 == 42:
            cond = "{ all: [ { field: partner, in: $allies }, { field: rate, above: %d } ] }" % threshold_of(i)
        else:
            cond = "{ field: rate, above: %d }" % threshold_of(i)
        out.append(
            "  - { id: r%d, source: rates, where: { product: \"%04d\" }, when: %s, notify: [out] }"
            % (i, i % 5000, cond)
        )
    return "\n".join(out) + "\n"


def prom_rules(n):
    out = ["groups:", "  - name: tariffs", "    rules:"]
    for i in range(n):
        out.append(
            "      - alert: R%d\n        expr: rate{product=\"%04d\"} > %d\n"
            "        labels: { severity: warning }\n"
            "        annotations: { summary: \"rate above %d\" }" % (i, i % 5000, 100 + i % 100, 100 + i % 100)
        )
    return "\n".join(out) + "\n"


CONFIG = """state: state.db
rules: rules.yaml
sources:
  - { name: rates, type: file, path: rates.csv, key: [partner, product] }
channels:
  - { name: out, type: file, path: out.jsonl }
"""


def timed(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode()[-2000:]}")
    return dt


def wait_log(path, needle, count, deadline=120):
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        with open(path, "rb") as f:
            if f.read().count(needle) >= count:
                return time.perf_counter()
        time.sleep(0.002)
    sys.exit(f"never saw {needle!r} x{count} in {path}")


def save(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def daemon(bin, d, n, runs):
    """Start times and reload times (median of runs each)."""
    starts, reloads = [], []
    for r in range(runs):
        for f in ("state.db", "state.db-wal", "state.db-shm", "state.db.lock", "run.log"):
            try:
                os.remove(os.path.join(d, f))
            except FileNotFoundError:
                pass
        log = open(os.path.join(d, "run.log"), "wb")
        env = dict(os.environ, RUST_LOG="info")
        t = time.perf_counter()
        p = subprocess.Popen([bin, "run", "-c", os.path.join(d, "tocsin.yaml")], stderr=log,
                             stdout=subprocess.DEVNULL, env=env)
        try:
            starts.append(wait_log(os.path.join(d, "run.log"), b"tocsin started", 1) - t)
            time.sleep(0.5)
            # One rule edited: its threshold moves.
            save(os.path.join(d, "rules.yaml"),
                 rules_yaml(n, lambda i: 100 + i % 100 + (r + 1 if i == n // 2 else 0)))
            t = time.perf_counter()
            reloads.append(wait_log(os.path.join(d, "run.log"), b"reloaded", 1) - t)
        finally:
            p.terminate()
            p.wait()
    return statistics.median(starts), statistics.median(reloads)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tocsin")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000,100000")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    promtool = shutil.which("promtool")
    yq = shutil.which("yq")
    rows = []
    for n in map(int, a.sizes.split(",")):
        d = tempfile.mkdtemp(prefix=f"scale-{n}-")
        with open(os.path.join(d, "tocsin.yaml"), "w") as f:
            f.write(CONFIG)
        with open(os.path.join(d, "rates.csv"), "w") as f:
            f.write("partner,product,rate\nCN,0001,100\n")
        save(os.path.join(d, "rules.yaml"), rules_yaml(n))
        with open(os.path.join(d, "prom.yaml"), "w") as f:
            f.write(prom_rules(n))
        size = os.path.getsize(os.path.join(d, "rules.yaml")) / 1e6
        check = statistics.median(timed([a.bin, "check", "-c", os.path.join(d, "tocsin.yaml")])
                                  for _ in range(a.runs))
        start, reload = daemon(a.bin, d, n, a.runs)
        if promtool:
            peer = ("promtool check rules", statistics.median(
                timed([promtool, "check", "rules", os.path.join(d, "prom.yaml")]) for _ in range(a.runs)))
        elif yq:
            peer = ("yq . (no promtool)", statistics.median(
                timed([yq, ".", os.path.join(d, "prom.yaml")]) for _ in range(a.runs)))
        else:
            peer = ("no peer found", float("nan"))
        rows.append((n, size, check, start, reload, peer))
        shutil.rmtree(d, ignore_errors=True)
    print(f"rules: median of {a.runs} runs, wall-clock")
    print(f"{'rules':>8} {'MB':>6} {'check':>9} {'start':>9} {'reload':>9}   peer")
    for n, size, check, start, reload, (name, p) in rows:
        print(f"{n:>8} {size:6.1f} {check*1e3:7.0f}ms {start*1e3:7.0f}ms {reload*1e3:7.0f}ms   "
              f"{name}: {p*1e3:.0f}ms  (check/peer {check/p:.2f})  {TARGETS.get(n, '')}")


if __name__ == "__main__":
    main()
