//! Stateful rules at scale: 1,000,000 table rows over 100,000 keys (ten
//! versions of a 100,000-row table, ten minutes apart on a simulated
//! clock) through three rules per key: a threshold with `resolve`, a
//! `count` within 1h and `changed`. Reports records per CPU-second and the
//! bytes of engine state per key (live heap, counted by this program's
//! allocator), beside `mlr step -a shift_lag -g key` over the same rows as
//! CSV in the same run.
//!
//! Records come in batches of 4,096, each evaluated at one `now` with
//! `observe_batch`, as the daemon does.
//!
//! Run with `bench/stateful.sh` (installs miller when missing), or
//! `cargo bench --bench stateful [-- --keys N --rounds N --runs N
//! --one-by-one --engine-only]`.

use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Map, Value, json};
use tocsin::config::Config;
use tocsin::engine::{Engine, compile};
use tocsin::record::{Record, RecordKind, Row};
use tocsin::rules::RuleSet;

/// Counts live heap bytes, over mimalloc as the daemon uses it.
struct Counting;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const CONFIG: &str = "rules: rules.yaml\nsources:\n  - { name: readings, type: file, path: r.csv, key: [key] }\nchannels:\n  - { name: out, type: log }\n";

const RULES: &str = r#"
rules:
  - id: high
    title: Reading above 95
    source: readings
    when: { field: value, above: 95 }
    notify: [out]
  - id: spikes
    title: Three spikes within an hour
    source: readings
    key: "{{ key }}"
    when:
      all:
        - { field: kind, equals: spike }
        - { count: 3, within: 1h }
    notify: [out]
  - id: moved
    title: Reading changed
    source: readings
    when: { field: value, changed: true }
    notify: [out]
"#;

/// Records per batch: what a source hands the engine at a time.
const CHUNK: usize = 4096;

/// CPU time of this thread in nanoseconds (user + system).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU seconds (user + system) from /proc/self/stat: this process's own
/// (fields 14 and 15) or its waited-for children's (16 and 17), in
/// USER_HZ ticks of 1/100 s.
fn proc_cpu(children: bool) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let at = if children { 13 } else { 11 };
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (get(at) + get(at + 1)) / 100.0
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let keys = arg("--keys", 100_000);
    let rounds = arg("--rounds", 10);
    let runs = arg("--runs", 3);
    let flag = |name: &str| std::env::args().any(|a| a == name);
    // `--one-by-one`: `observe` per record instead of `observe_batch`;
    // `--engine-only`: miller is not run (to compare engine changes).
    let batch = !flag("--one-by-one");
    let peer = !flag("--engine-only");
    let dir = Path::new("bench/data/stateful");
    std::fs::create_dir_all(dir).unwrap();

    // The rows: a random walk per key; one row in ten a spike.
    let mut x: u64 = 7;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut value: Vec<f64> = (0..keys).map(|_| (rnd() % 1000) as f64 / 10.0).collect();
    let mut rows: Vec<(usize, f64, bool)> = Vec::with_capacity(keys * rounds);
    for _ in 0..rounds {
        for (k, v) in value.iter_mut().enumerate() {
            let step = (rnd() % 201) as f64 / 100.0 - 1.0;
            *v = (*v + step).clamp(0.0, 100.0);
            let spike = rnd() % 10 == 0;
            rows.push((k, (*v * 10.0).round() / 10.0, spike));
        }
    }
    let csv = dir.join("readings.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(f, "key,value,kind").unwrap();
        for (k, v, s) in &rows {
            writeln!(f, "k{k:06},{v},{}", if *s { "spike" } else { "reading" }).unwrap();
        }
    }
    let records: Vec<Map<String, Value>> = rows
        .iter()
        .map(|(k, v, s)| {
            json!({"key": format!("k{k:06}"), "value": v, "kind": if *s { "spike" } else { "reading" }})
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    drop(rows);
    let n = records.len();

    let config = Config::parse(&dir.join("tocsin.yaml"), CONFIG).unwrap();
    let (set, diags) = RuleSet::parse([(dir.join("rules.yaml").as_path(), RULES)]);
    assert!(diags.is_empty(), "{}", tocsin::diag::render_all(&diags));
    let source: Arc<str> = Arc::from("readings");
    let t0 = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let per_round = Duration::minutes(10);

    let mut best_tocsin = f64::INFINITY;
    let mut best_whole = f64::INFINITY;
    let mut best_mlr = f64::INFINITY;
    let mut ratios = Vec::new();
    let mut state_per_key = 0.0;
    let mut notes_total = 0;
    let mut active = 0;
    for _ in 0..runs {
        // tocsin: the engine over every row, the previous row of its key
        // as `prev`, as a table source gives it.
        let compiled = compile(&config, &set).unwrap();
        let mut engine = Engine::new(compiled);
        let before = LIVE.load(Ordering::Relaxed);
        let mut prev: Vec<Option<Row>> = vec![None; keys];
        let start = proc_cpu(false);
        let mut engine_ns = 0u64;
        let mut out = Vec::new();
        let mut notes = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut changes = Vec::new();
        for (c, rows) in records.chunks(CHUNK).enumerate() {
            // The rows as a table source hands them over: fresh records
            // (a copy stands in for parsing), each row shared with the next
            // version of its key as `prev`. Built outside the engine's time.
            chunk.clear();
            for (j, f) in rows.iter().enumerate() {
                let i = c * CHUNK + j;
                let k = i % keys;
                let now = t0
                    + per_round * (i / keys) as i32
                    + Duration::milliseconds((k as i64 * 600_000) / keys as i64);
                let row = Row::new(f.clone());
                chunk.push(Record {
                    source: source.clone(),
                    key: f["key"].as_str().unwrap_or_default().to_string(),
                    prev: prev[k].replace(row.clone()),
                    fields: row,
                    observed: now,
                    kind: RecordKind::Row,
                    doc: None,
                    line: 0,
                });
            }
            let at = thread_cpu_ns();
            // The daemon evaluates a batch at one `now`.
            let now = chunk.last().map_or(t0, |r| r.observed);
            if batch {
                engine.observe_batch(&chunk, now, &mut out);
            } else {
                for rec in &chunk {
                    engine.observe(rec, now, &mut out);
                }
            }
            notes += out.len();
            out.clear();
            // Time passes between batches; the daemon hands the store
            // what changed after each.
            engine.tick(now, &mut out);
            notes += out.len();
            out.clear();
            engine.take_changes_into(&mut changes);
            engine_ns += thread_cpu_ns() - at;
        }
        drop(chunk);
        drop(changes);
        let t = proc_cpu(false) - start;
        best_tocsin = best_tocsin.min(engine_ns as f64 / 1e9);
        best_whole = best_whole.min(t);
        // The engine's state: what the heap grew by, once the rows kept as
        // `prev` (the source's memory, not the engine's) are dropped.
        drop(prev);
        state_per_key = (LIVE.load(Ordering::Relaxed) - before).max(0) as f64 / keys as f64;
        notes_total = notes;
        active = engine.active();
        drop(engine);

        if !peer {
            println!("run: engine {:.3} CPU-s", engine_ns as f64 / 1e9);
            continue;
        }
        // mlr: the previous value per key, over the same rows as CSV.
        let before = proc_cpu(true);
        let status = std::process::Command::new("mlr")
            .args([
                "--icsv",
                "--ocsv",
                "step",
                "-a",
                "shift_lag",
                "-f",
                "value",
                "-g",
                "key",
            ])
            .arg(&csv)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("mlr (install miller, or run bench/stateful.sh)");
        assert!(status.success());
        let m = proc_cpu(true) - before;
        best_mlr = best_mlr.min(m);
        let e = engine_ns as f64 / 1e9;
        ratios.push(m / e);
        println!(
            "run: engine {e:.3} CPU-s, mlr {m:.2} CPU-s, ratio {:.1}x",
            m / e
        );
    }
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    println!(
        "input: {n} rows over {keys} keys ({rounds} versions of the table), {size:.0} MB as CSV; 3 rules per key"
    );
    println!(
        "tocsin engine: {best_tocsin:6.2} CPU-s {:12.0} records/CPU-s ({notes_total} notifications, {active} keys active at the end)",
        n as f64 / best_tocsin
    );
    println!(
        "  with building the records too: {best_whole:6.2} CPU-s {:12.0} records/CPU-s",
        n as f64 / best_whole
    );
    println!(
        "mlr step -a shift_lag -g key: {best_mlr:6.2} CPU-s {:12.0} records/CPU-s",
        n as f64 / best_mlr
    );
    println!(
        "ratio tocsin/mlr: {:.1}x (target: at least 8x, in the median of five invocations' run medians)",
        best_mlr / best_tocsin
    );
    if !ratios.is_empty() {
        // Each run's engine and miller ran back to back: their ratio felt
        // the same spell of the machine.
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        let median = if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        };
        println!(
            "  each run's ratio: median {median:.1}x, from {:.1}x to {:.1}x",
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    println!("engine state: {state_per_key:.0} bytes per key (target: at most 250)");
}
