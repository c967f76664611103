#!/usr/bin/env python3
"""tocsin eval vs jq on the same JSONL, in the same run.

Generates N trade records (country, product code, numeric rate_pct, a title
and ~200 characters of news-like text), 100 rules (thresholds per country and
phrase rules), then measures CPU time (user + sys) of

  tocsin eval --source trades trades.jsonl > /dev/null
  jq -c 'select(.rate_pct > 157)' trades.jsonl > /dev/null

and prints records per CPU-second for both and their ratio. CPU time, not
wall time, so a busy machine skews both alike.

Rules are as selective as alert rules are: thresholds at 190-199 on a
0-200 scale for one country each, phrases that appear in about 1% of
records; about one record in ten produces a notification, each printed
as a full JSON payload.
"""
import argparse, os, random, resource, subprocess, sys, time

COUNTRIES = ["CN", "JP", "EU", "UK", "CA", "AU", "IN", "KR", "MX", "BR",
             "VN", "TW", "SG", "CH", "NO", "TR", "ZA", "SA", "AE", "ID"]
WORDS = ("trade ministry statement policy review tariff schedule customs import export "
         "goods partner agreement quota duty rate investigation dumping subsidy market "
         "supply chain shipping port freight steel aluminium copper lithium cobalt nickel "
         "semiconductor battery vehicle solar panel wafer chip magnet licence regime "
         "consultation negotiation committee council minister spokesperson briefing").split()
PHRASES = ["export control*", "rare earth*", "critical mineral*", "sanction*", "entity list",
           "anti-dumping duty", "countervailing dut*", "safeguard measure*", "retaliatory tariff*",
           "national security review", "investment screening", "dual-use", "forced labo*",
           "de minimis", "section 301", "section 232", "most favoured nation", "trade remed*",
           "gallium", "germanium"]

def gen(path, n, seed=7):
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            words = [rnd.choice(WORDS) for _ in range(30)]
            if rnd.random() < 0.01:
                words.insert(rnd.randrange(len(words)), rnd.choice(PHRASES).rstrip("*") + "s")
            text = " ".join(words)[:220]
            title = " ".join(rnd.choice(WORDS) for _ in range(7)).capitalize()
            f.write('{"country":"%s","product":"%04d","rate_pct":%.1f,"title":"%s","text":"%s"}\n'
                    % (rnd.choice(COUNTRIES), rnd.randrange(10000), rnd.uniform(0, 200), title, text))

def write_rules(dirpath):
    cfg = os.path.join(dirpath, "tocsin.yaml")
    with open(cfg, "w") as f:
        f.write("rules: rules.yaml\nsources:\n  - { name: trades, type: file, path: trades.jsonl, mode: log }\n"
                "channels:\n  - { name: out, type: log }\n")
    with open(os.path.join(dirpath, "rules.yaml"), "w") as f:
        f.write("rules:\n")
        for i in range(60):
            f.write("  - id: threshold-%d\n    source: trades\n    where: { country: %s }\n"
                    "    when: { field: rate_pct, above: %d }\n    notify: [out]\n"
                    % (i, COUNTRIES[i % len(COUNTRIES)], 190 + i % 10))
        for i in range(40):
            p = PHRASES[i % len(PHRASES)]
            other = PHRASES[(i + 7) % len(PHRASES)]
            if i % 2:
                cond = '{ text: [title, text], any: ["%s", "%s"] }' % (p, other)
            else:
                cond = ('{ all: [ { field: country, in: [%s, %s, %s] }, { text: [title, text], any: ["%s"] } ] }'
                        % (COUNTRIES[i % 20], COUNTRIES[(i + 1) % 20], COUNTRIES[(i + 2) % 20], p))
            f.write("  - id: phrase-%d\n    source: trades\n    when: %s\n    notify: [out]\n" % (i, cond))
    return cfg

def cpu(cmd, stdout=subprocess.DEVNULL):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    subprocess.run(cmd, stdout=stdout, check=True)
    wall = time.time() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall, after.ru_maxrss

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/tocsin")
    ap.add_argument("--dir", default="bench/data")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    data = os.path.join(a.dir, "trades.jsonl")
    stamp = os.path.join(a.dir, ".records")
    if not (os.path.exists(data) and open(stamp).read() == str(a.records) if os.path.exists(stamp) else False):
        print(f"generating {a.records} records …", file=sys.stderr)
        gen(data, a.records)
        open(stamp, "w").write(str(a.records))
    cfg = write_rules(a.dir)
    size = os.path.getsize(data)
    notes = subprocess.run([a.bin, "eval", "-c", cfg, "--source", "trades", data],
                           stdout=subprocess.PIPE, check=True).stdout.count(b"\n")
    jq_out = subprocess.run(["jq", "-c", "select(.rate_pct > 157)", data],
                            stdout=subprocess.PIPE, check=True).stdout.count(b"\n")
    best_t, best_j, rss = float("inf"), float("inf"), 0
    for _ in range(a.runs):   # interleaved, best of N: noise only ever adds time
        t, _, rss = cpu([a.bin, "eval", "-c", cfg, "--source", "trades", data])
        j, _, _ = cpu(["jq", "-c", "select(.rate_pct > 157)", data])
        best_t, best_j = min(best_t, t), min(best_j, j)
    n = a.records
    print(f"input: {n} records, {size / 1e6:.0f} MB; 100 rules (60 thresholds, 40 phrase rules)")
    print(f"tocsin eval: {best_t:6.2f} CPU-s  {n / best_t:12,.0f} records/CPU-s  ({notes} notifications)")
    print(f"jq select  : {best_j:6.2f} CPU-s  {n / best_j:12,.0f} records/CPU-s  ({jq_out} lines)")
    print(f"ratio tocsin/jq: {best_j / best_t:.1f}x (target: at least 5x)")

if __name__ == "__main__":
    main()
