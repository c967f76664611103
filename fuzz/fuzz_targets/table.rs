//! The table and log readers (CSV, TSV, JSONL, JSON, YAML): any bytes give
//! rows or an error naming the line, never a panic. The first byte picks
//! the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin::config::Format;
use tocsin::source::parse;

fuzz_target!(|data: &[u8]| {
    let Some((pick, doc)) = data.split_first() else {
        return;
    };
    let format = [Format::Csv, Format::Tsv, Format::Jsonl, Format::Json, Format::Yaml]
        [*pick as usize % 5];
    let _ = parse::rows(format, doc);
    // A log read from an offset: data lines under a header read before.
    if matches!(format, Format::Csv | Format::Tsv) {
        if let Ok(t) = parse::text(doc) {
            let header = ["id".to_string(), "rate".to_string()];
            let _ = parse::delimited(format, t, Some(&header), 10);
        }
    }
});
