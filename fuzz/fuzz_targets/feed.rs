//! The feed reader: any bytes, with or without a charset from the server,
//! give items or an error, never a panic (a panic the reader turns into an
//! error still aborts here, through the panic hook cargo-fuzz installs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ct, doc) = match data.split_first() {
        Some((b, rest)) if b % 3 == 1 => (Some("text/xml; charset=utf-8"), rest),
        Some((b, rest)) if b % 3 == 2 => (Some("application/rss+xml; charset=iso-8859-1"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let _ = tocsin::source::feed::parse(doc, ct, "https://feeds.example.org/news/feed.xml");
});
