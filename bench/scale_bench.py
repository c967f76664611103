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

The same for 10,000 rules as a folder of files of 100 rules each
(--folders), where a reload reads again only the file that changed.

Printed as a table with the peer beside, and the targets.

Tables (--tables, default 100,000, 1,000,000 and 5,000,000 rows): a CSV of
partner, product, rate (about 15 bytes a row) watched by a table source
with one threshold rule that no row crosses. It measures the daemon's
resident memory once the table is loaded, committed and idle, the time from one row
changed (the new version written beside and renamed over the file) to its
notification written by a `file` channel (committed, then delivered), and
the peak resident memory during that change (VmHWM, reset before it); beside
`mlr join` computing the same one-row difference between the two versions,
and `wc -l` on the new version as the floor of reading it at all.
"""
import argparse, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

TARGETS = {
    10_000: "check and start < 300 ms, reload < 100 ms",
    100_000: "loads, < 3 s",
    "10000 in 100 files": "reload < 100 ms",
}
TABLE_TARGETS = {
    1_000_000: "idle and peak <= 150 MB; alert < 1 s and < 3x mlr",
}


PER_FILE = 100


def rules_yaml(n, threshold_of=lambda i: 100 + i % 100, part=None):
    """n rules in one file, or (part=k) the k-th file of PER_FILE of them."""
    rng = range(n) if part is None else range(part * PER_FILE, min(n, (part + 1) * PER_FILE))
    out = (["lists:", "  allies: [EU, JP, AU, CA, IN, UK, G7]"] if not part else []) + ["rules:"]
    for i in rng:
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


def write_rules(d, n, folder, threshold_of=lambda i: 100 + i % 100, only=None):
    """The rules file, or (folder) the files of PER_FILE rules in rules/;
    `only`: the number of the one file to write again."""
    if not folder:
        save(os.path.join(d, "rules.yaml"), rules_yaml(n, threshold_of))
        return
    os.makedirs(os.path.join(d, "rules"), exist_ok=True)
    for k in range((n + PER_FILE - 1) // PER_FILE):
        if only is None or k == only:
            save(os.path.join(d, "rules", "r%05d.yaml" % k), rules_yaml(n, threshold_of, part=k))


def daemon(bin, d, n, runs, folder=False):
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
            write_rules(d, n, folder, lambda i: 100 + i % 100 + (r + 1 if i == n // 2 else 0),
                        only=(n // 2) // PER_FILE)
            t = time.perf_counter()
            reloads.append(wait_log(os.path.join(d, "run.log"), b"reloaded", 1) - t)
        finally:
            p.terminate()
            p.wait()
    return statistics.median(starts), statistics.median(reloads)


def table_csv(path, n, changed=None):
    """n rows; row `changed` (if any) has a rate above the rule's threshold."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("partner,product,rate\n")
        step = 100_000
        for s in range(0, n, step):
            f.write("".join(
                "P%03d,%07d,%s\n" % (i % 250, i, "200.0" if i == changed else "%d.%d" % (i % 97, i % 10))
                for i in range(s, min(n, s + step))))
    os.rename(tmp, path)


TABLE_CONFIG = """state: store/state.db
rules: rules.yaml
http: { listen: 127.0.0.1:%d }
sources:
  - { name: rates, type: file, path: rates.csv, key: [partner, product] }
channels:
  - { name: out, type: file, path: out.jsonl }
"""

TABLE_RULES = """rules:
  - { id: high, source: rates, when: { field: rate, above: 157 }, notify: [out] }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records_read(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("tocsin_records_total") and 'source="rates"' in line:
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return 0


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_idle(pid, quiet=0.5, deadline=600):
    """Until the process has used no CPU for `quiet` seconds."""
    end = time.perf_counter() + deadline
    last = cpu_ticks(pid)
    while time.perf_counter() < end:
        time.sleep(quiet)
        now = cpu_ticks(pid)
        if now == last:
            return
        last = now


def gnu_time(cmd):
    """Wall seconds and peak resident kB of cmd, by /usr/bin/time."""
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, check=True)
    wall, kb = r.stderr.decode().strip().splitlines()[-1].split()
    return float(wall), int(kb)


def table_run(bin, n):
    d = tempfile.mkdtemp(prefix=f"table-{n}-")
    try:
        port = free_port()
        os.makedirs(os.path.join(d, "store"))
        with open(os.path.join(d, "tocsin.yaml"), "w") as f:
            f.write(TABLE_CONFIG % port)
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            f.write(TABLE_RULES)
        csv = os.path.join(d, "rates.csv")
        table_csv(csv, n)
        shutil.copy(csv, os.path.join(d, "old.csv"))
        out = os.path.join(d, "out.jsonl")
        log = open(os.path.join(d, "run.log"), "wb")
        t = time.perf_counter()
        p = subprocess.Popen([bin, "run", "-c", os.path.join(d, "tocsin.yaml")], stderr=log,
                             stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        try:
            while records_read(port) < n:
                if p.poll() is not None or time.perf_counter() - t > 600:
                    sys.exit(f"the daemon did not load {n} rows: see {d}/run.log")
                time.sleep(0.05)
            wait_idle(p.pid)  # the rows committed to the store too
            load = time.perf_counter() - t
            time.sleep(1.0)
            idle = status_kb(p.pid, "VmRSS")
            with open("/proc/%d/clear_refs" % p.pid, "w") as f:
                f.write("5")  # resets VmHWM: the peak from here on
            table_csv(csv, n, changed=n // 2)
            t = time.perf_counter()
            while not (os.path.exists(out) and os.path.getsize(out) > 0):
                if p.poll() is not None or time.perf_counter() - t > 600:
                    sys.exit(f"no alert after the change: see {d}/run.log")
                time.sleep(0.005)
            change = time.perf_counter() - t
            peak = status_kb(p.pid, "VmHWM")
        finally:
            p.terminate()
            p.wait()
        mlr = gnu_time(["mlr", "--icsv", "--ojson", "join", "--np", "--ul", "--ur",
                        "-j", "partner,product,rate", "-f", os.path.join(d, "old.csv"), csv])
        t = time.perf_counter()
        subprocess.run(["wc", "-l", csv], stdout=subprocess.DEVNULL, check=True)
        wc = (time.perf_counter() - t, 0)
        return os.path.getsize(csv) / 1e6, load, idle, peak, change, mlr, wc
    finally:
        shutil.rmtree(d, ignore_errors=True)


def tables(bin, sizes, runs):
    rows = []
    for n in sizes:
        res = [table_run(bin, n) for _ in range(runs)]
        med = lambda i: statistics.median(r[i] for r in res)
        mlr = (statistics.median(r[5][0] for r in res), statistics.median(r[5][1] for r in res))
        wc = statistics.median(r[6][0] for r in res)
        rows.append((n, med(0), med(1), med(2), med(3), med(4), mlr, wc))
    print(f"tables: median of {runs} runs; memory resident (MB), times wall-clock")
    print(f"{'rows':>9} {'MB':>6} {'load':>7} {'idle':>7} {'peak':>7} {'change':>8}   "
          f"{'mlr join':>9} {'(MB)':>6} {'wc -l':>7} {'change/mlr':>10}")
    for n, mb, load, idle, peak, change, (mt, mkb), wc in rows:
        print(f"{n:>9} {mb:6.1f} {load:6.2f}s {idle/1024:6.0f}M {peak/1024:6.0f}M {change:7.2f}s   "
              f"{mt:8.2f}s {mkb/1024:5.0f}M {wc:6.3f}s {change/mt:9.2f}x  {TABLE_TARGETS.get(n, '')}")


FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>Ministry %(i)d</title>
<link>http://example.org/</link><description>statements</description>%(items)s</channel></rss>"""


def idle_daemon(bin, feeds=100, rules=1000):
    """Resident memory of a daemon with `rules` rules over `feeds` feed
    sources (served on loopback, 20 items each), once every feed has been
    read and the daemon is idle."""
    import http.server, threading
    items = "".join(
        "<item><title>Statement %d on export controls</title><link>http://example.org/%d</link>"
        "<guid>s-%d</guid><description>The ministry announced measures on trade %d.</description></item>"
        % (k, k, k, k) for k in range(20))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (FEED % {"i": 0, "items": items}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    d = tempfile.mkdtemp(prefix="idle-")
    try:
        port = free_port()
        with open(os.path.join(d, "tocsin.yaml"), "w") as f:
            f.write("state: state.db\nrules: rules.yaml\nhttp: { listen: 127.0.0.1:%d }\nsources:\n" % port)
            for i in range(feeds):
                f.write("  - { name: feed%d, type: feed, url: \"http://127.0.0.1:%d/feed/%d.xml\", every: 1h }\n"
                        % (i, srv.server_address[1], i))
            f.write("channels:\n  - { name: out, type: file, path: out.jsonl }\n")
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            f.write("rules:\n")
            for r in range(rules):
                f.write("  - { id: r%d, source: feed%d, when: { text: [title, summary], any: [\"sanctions %d\", \"rare earth*\"] }, notify: [out] }\n"
                        % (r, r % feeds, r))
        log = open(os.path.join(d, "run.log"), "wb")
        p = subprocess.Popen([bin, "run", "-c", os.path.join(d, "tocsin.yaml")], stderr=log,
                             stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        try:
            t = time.perf_counter()
            while True:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
                        read = sum(1 for l in r.read().decode().splitlines()
                                   if l.startswith("tocsin_source_last_success_timestamp_seconds{"))
                except OSError:
                    read = 0
                if read >= feeds:
                    break
                if p.poll() is not None or time.perf_counter() - t > 120:
                    sys.exit(f"{read} of {feeds} feeds read: {open(os.path.join(d, 'run.log')).read()[-2000:]}")
                time.sleep(0.1)
            wait_idle(p.pid)
            time.sleep(1.0)
            return status_kb(p.pid, "VmRSS")
        finally:
            p.terminate()
            p.wait()
    finally:
        srv.shutdown()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tocsin")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000,100000", help="numbers of rules ('' for none)")
    ap.add_argument("--folders", default="10000",
                    help="numbers of rules also measured as a folder of files of 100 ('' for none)")
    ap.add_argument("--tables", default="100000,1000000,5000000", help="table rows ('' for none)")
    ap.add_argument("--table-runs", type=int, default=1)
    ap.add_argument("--idle", default="yes", help="'no' to skip the idle memory of 1,000 rules and 100 feeds")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    promtool = shutil.which("promtool")
    yq = shutil.which("yq")
    rows = []
    sizes = [(int(x), False) for x in a.sizes.split(",") if x]
    sizes += [(int(x), True) for x in a.folders.split(",") if x]
    for n, folder in sizes:
        d = tempfile.mkdtemp(prefix=f"scale-{n}-")
        with open(os.path.join(d, "tocsin.yaml"), "w") as f:
            f.write(CONFIG.replace("rules: rules.yaml", "rules: rules") if folder else CONFIG)
        with open(os.path.join(d, "rates.csv"), "w") as f:
            f.write("partner,product,rate\nCN,0001,100\n")
        write_rules(d, n, folder)
        with open(os.path.join(d, "prom.yaml"), "w") as f:
            f.write(prom_rules(n))
        size = (sum(os.path.getsize(os.path.join(d, "rules", f)) for f in os.listdir(os.path.join(d, "rules")))
                if folder else os.path.getsize(os.path.join(d, "rules.yaml"))) / 1e6
        check = statistics.median(timed([a.bin, "check", "-c", os.path.join(d, "tocsin.yaml")])
                                  for _ in range(a.runs))
        start, reload = daemon(a.bin, d, n, a.runs, folder)
        if promtool:
            peer = ("promtool check rules", statistics.median(
                timed([promtool, "check", "rules", os.path.join(d, "prom.yaml")]) for _ in range(a.runs)))
        elif yq:
            peer = ("yq . (no promtool)", statistics.median(
                timed([yq, ".", os.path.join(d, "prom.yaml")]) for _ in range(a.runs)))
        else:
            peer = ("no peer found", float("nan"))
        rows.append((f"{n} in {n // PER_FILE} files" if folder else n, size, check, start, reload, peer))
        shutil.rmtree(d, ignore_errors=True)
    if a.idle != "no":
        kb = idle_daemon(a.bin)
        print(f"idle: 1,000 rules over 100 feeds (20 items each, all read): {kb/1024:.1f} MB resident "
              f"(target: at most 40 MB)")
    if a.tables:
        tables(a.bin, [int(x) for x in a.tables.split(",") if x], a.table_runs)
    if not rows:
        return
    print(f"rules: median of {a.runs} runs, wall-clock")
    print(f"{'rules':>19} {'MB':>6} {'check':>9} {'start':>9} {'reload':>9}   peer")
    for n, size, check, start, reload, (name, p) in rows:
        print(f"{n:>19} {size:6.1f} {check*1e3:7.0f}ms {start*1e3:7.0f}ms {reload*1e3:7.0f}ms   "
              f"{name}: {p*1e3:.0f}ms  (check/peer {check/p:.2f})  {TARGETS.get(n, '')}")


if __name__ == "__main__":
    main()
