#!/usr/bin/env python3
"""Phrase rules at scale: tocsin eval vs ripgrep on the same text, same run.

Generates N news-like JSONL records (id, country, title, summary; about 330
bytes). Text is drawn as news text is distributed: 45% of words from 120
function words ("the", "of", "and" ...), the rest from 20,000 content words
by Zipf's law (the 1,000th most common word is a thousand times rarer than
the first). 10,000 distinct phrases of two or three content words (one in
five ending in a word prefix, `control*`), drawn from all but the 50 most
common content words, as topical phrases are; half a percent of records
carry one of the phrases, and others match by chance.
Then, best of N interleaved runs, CPU time (user + sys) of

  tocsin eval --source news news.jsonl         # 1,000 rules x 10 phrases
  tocsin eval with 10 rules x 10 phrases       # 100 phrases
  rg -F -c -f phrases.txt news.jsonl           # the 10,000 phrases, case-sensitive

and, once, `rg -F -i -c -f phrases.txt` on the first 10,000 and 20,000
records: with ten thousand phrases and -i, ripgrep compiles a regular
expression that takes it minutes per 100 MB, so the whole file would take
hours. Its MB per CPU-second is given both with its start-up (on 20,000
records) and without (the difference between the two samples).

It prints MB per CPU-second for each, tocsin's throughput against
ripgrep's, and the ratio of tocsin's time at 10,000 phrases to its time at
100. tocsin also parses each record, matches case-insensitively on whole
words and reports every matching rule (a notification per rule and item,
printed as a full JSON payload); ripgrep counts lines. `-c` keeps ripgrep
scanning everything (its output to /dev/null would let it stop at the
first match).
"""
import argparse, os, random, resource, subprocess, sys, time

COUNTRIES = ["JP", "EU", "UK", "CA", "AU", "IN", "US", "CN", "KR", "G7"]
CONS = "b c d f g h k l m n p r s t v w z br cr dr fr gr pl pr st tr ch sh th".split()
VOWS = "a e i o u ai ea io ou".split()


FUNCTION = """the of and to in a is that for on with as by at from it was be
this are have has its an not but which or their they were been said will
would more also after over new than about into other who all two one can
year may some could first last up out when there his her we our what these
under between against during while before only most any such many then them
so if no those since where through both each because very under three here
just like back even any well still how should made much per did does being
had now own same he she you i my your us both few off again once""".split()


def vocabulary(rnd, n=20000):
    words = set()
    while len(words) < n:
        syl = rnd.choice([2, 2, 3, 3, 4])
        w = "".join(rnd.choice(CONS) + rnd.choice(VOWS) for _ in range(syl))
        if rnd.random() < 0.3:
            w += rnd.choice("nrst")
        words.add(w)
    words = sorted(words)
    rnd.shuffle(words)   # rank (frequency) unrelated to spelling
    return words


def phrases(rnd, vocab, n):
    out, seen = [], set()
    topical = vocab[50:]
    while len(out) < n:
        words = [rnd.choice(topical) for _ in range(rnd.choice([2, 2, 3]))]
        text = " ".join(words)
        if text in seen:
            continue
        seen.add(text)
        if rnd.random() < 0.2 and len(words[-1]) > 5:
            words[-1] = words[-1][: len(words[-1]) - 2] + "*"
        out.append(" ".join(words))
    return out


def words(rnd, vocab, weights, k):
    content = rnd.choices(vocab, cum_weights=weights, k=k)
    return [w if rnd.random() >= 0.45 else rnd.choice(FUNCTION) for w in content]


def gen(path, n, vocab, phr, rnd):
    acc, weights = 0.0, []
    for r in range(len(vocab)):
        acc += 1.0 / (r + 1)
        weights.append(acc)
    with open(path, "w") as f:
        for i in range(n):
            title = " ".join(words(rnd, vocab, weights, 8))
            summary = words(rnd, vocab, weights, 38)
            if rnd.random() < 0.005:
                p = rnd.choice(phr).replace("*", "ed")
                summary.insert(rnd.randrange(len(summary)), p)
            f.write('{"id":"item-%d","country":"%s","title":"%s","summary":"%s"}\n'
                    % (i, rnd.choice(COUNTRIES), title.capitalize(), " ".join(summary)))


def write_config(d, name, phr, per_rule=10):
    cfg = os.path.join(d, name + ".yaml")
    rules = os.path.join(d, name + "-rules.yaml")
    with open(cfg, "w") as f:
        f.write("rules: %s\nsources:\n  - { name: news, type: file, path: news.jsonl, mode: log }\n"
                "channels:\n  - { name: out, type: log }\n" % os.path.basename(rules))
    with open(rules, "w") as f:
        f.write("rules:\n")
        for i in range(0, len(phr), per_rule):
            group = ", ".join('"%s"' % p for p in phr[i:i + per_rule])
            f.write("  - { id: phrases-%d, source: news, when: { text: [title, summary], any: [%s] }, notify: [out] }\n"
                    % (i // per_rule, group))
    return cfg


def cpu(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/tocsin")
    ap.add_argument("--dir", default="bench/data/phrases")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rg", default="rg")
    ap.add_argument("--rg-sample", type=int, default=10_000)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rnd = random.Random(11)
    vocab = vocabulary(rnd)
    phr = phrases(rnd, vocab, 10_000)
    data = os.path.join(a.dir, "news.jsonl")
    stamp = os.path.join(a.dir, ".records")
    if not (os.path.exists(stamp) and open(stamp).read() == str(a.records)):
        print(f"generating {a.records} records …", file=sys.stderr)
        gen(data, a.records, vocab, phr, rnd)
        open(stamp, "w").write(str(a.records))
    with open(os.path.join(a.dir, "phrases.txt"), "w") as f:
        f.write("\n".join(p.rstrip("*") for p in phr) + "\n")
    big = write_config(a.dir, "p10000", phr)
    small = write_config(a.dir, "p100", phr[:100])
    size = os.path.getsize(data) / 1e6
    pfile = os.path.join(a.dir, "phrases.txt")
    tocsin = lambda cfg: [a.bin, "eval", "-c", cfg, "--source", "news", data]
    rg = [a.rg, "-F", "-c", "-f", pfile, data]
    best = {"big": float("inf"), "small": float("inf"), "rg": float("inf")}
    counts = {}
    for _ in range(a.runs):   # interleaved, best of N: noise only ever adds time
        for k, cmd in (("big", tocsin(big)), ("rg", rg), ("small", tocsin(small))):
            t, out = cpu(cmd)
            best[k] = min(best[k], t)
            counts[k] = out.count(b"\n") if k != "rg" else int(out.strip() or 0)
    # ripgrep -i on two samples.
    samples = []
    for n in (a.rg_sample, 2 * a.rg_sample):
        path = os.path.join(a.dir, f"sample-{n}.jsonl")
        with open(data, "rb") as src, open(path, "wb") as dst:
            for _, line in zip(range(n), src):
                dst.write(line)
        t, _ = cpu([a.rg, "-F", "-i", "-c", "-f", pfile, path])
        samples.append((os.path.getsize(path) / 1e6, t))
    (mb1, t1), (mb2, t2) = samples
    rgi_start = mb2 / t2
    rgi_marginal = (mb2 - mb1) / max(t2 - t1, 1e-9)
    version = subprocess.run([a.rg, "--version"], stdout=subprocess.PIPE).stdout.split(b"\n")[0].decode()
    mb = lambda k: size / best[k]
    print(f"input: {a.records} records, {size:.0f} MB; phrases 10 per rule; {version}")
    print(f"tocsin, 10,000 phrases  : {best['big']:7.2f} CPU-s {mb('big'):8.1f} MB/CPU-s ({counts['big']} notifications)")
    print(f"tocsin, 100 phrases     : {best['small']:7.2f} CPU-s {mb('small'):8.1f} MB/CPU-s ({counts['small']} notifications)")
    print(f"rg -F -c, 10,000        : {best['rg']:7.2f} CPU-s {mb('rg'):8.1f} MB/CPU-s ({counts['rg']} lines; case-sensitive)")
    print(f"rg -F -i -c, 10,000     : {t2:7.2f} CPU-s {rgi_start:8.2f} MB/CPU-s on {mb2:.1f} MB with start-up, "
          f"{rgi_marginal:.2f} MB/CPU-s without")
    print(f"tocsin / rg -F -i       : {mb('big') / rgi_marginal:8.1f}x (target: at least 0.5x; against its rate without start-up)")
    print(f"tocsin / rg -F          : {mb('big') / mb('rg'):8.2f}x (case-sensitive: less work than asked of tocsin)")
    print(f"time 10,000 / 100       : {best['big'] / best['small']:8.2f} (target: at most 1.5)")


if __name__ == "__main__":
    main()
