//! A fast JSON writer for notification payloads. `tocsin eval` prints one
//! per notification and may print hundreds of thousands; serde_json spends
//! most of that time escaping strings byte by byte, where this finds the
//! bytes that need escaping 32 at a time. Output is byte-for-byte what
//! serde_json writes (tested).

use serde_json::Value;

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = next_escape(b, i) {
        out.extend_from_slice(&b[start..at]);
        let c = b[at];
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xf) as usize]);
            }
        }
        start = at + 1;
        i = at + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// The position of the next byte at or after `from` that JSON escapes:
/// `"`, `\` or a control character.
fn next_escape(b: &[u8], from: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present, checked just above.
        return unsafe { avx2::next_escape(b, from) };
    }
    b[from..]
        .iter()
        .position(|&c| needs_escape(c))
        .map(|p| from + p)
}

fn needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn next_escape(b: &[u8], from: usize) -> Option<usize> {
        let mut i = from;
        while i + 32 <= b.len() {
            // SAFETY: `i + 32 <= b.len()`: 32 readable bytes.
            let v = unsafe { _mm256_loadu_si256(b[i..].as_ptr() as *const __m256i) };
            let set = |x: u8| _mm256_set1_epi8(x as i8);
            // Controls are 0..0x1f: non-negative and below 0x20 as i8.
            let control = _mm256_andnot_si256(
                _mm256_cmpgt_epi8(_mm256_setzero_si256(), v),
                _mm256_cmpgt_epi8(set(0x20), v),
            );
            let quote = _mm256_or_si256(
                _mm256_cmpeq_epi8(v, set(b'"')),
                _mm256_cmpeq_epi8(v, set(b'\\')),
            );
            let m = _mm256_movemask_epi8(_mm256_or_si256(control, quote)) as u32;
            if m != 0 {
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 32;
        }
        b[i..]
            .iter()
            .position(|&c| super::needs_escape(c))
            .map(|p| i + p)
    }
}

/// Appends any JSON value; strings through [`write_str`].
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Object(m) => write_object(out, m.iter()),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        // Numbers, booleans and null as serde_json writes them.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Appends a JSON object of the given entries.
pub fn write_object<'a, V: AsJson + 'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, &'a V)>,
) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        v.write(out);
    }
    out.push(b'}');
}

/// What [`write_object`] can write as a value.
pub trait AsJson {
    fn write(&self, out: &mut Vec<u8>);
}

impl AsJson for Value {
    fn write(&self, out: &mut Vec<u8>) {
        write_value(out, self);
    }
}

impl AsJson for String {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_serde_json() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" and backslash \\ and newline\n, tab\t, cr\r, bell\u{7}, nul\u{0}, \u{1f}"
                .into(),
            "unicode: é 中文 🎉 \u{2028}".into(),
            "x".repeat(100) + "\"" + &"y".repeat(40),
        ];
        for n in [31, 32, 33, 63, 64, 65] {
            cases.push("a".repeat(n) + "\n");
            cases.push("\"".repeat(n));
        }
        for s in cases {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }

    #[test]
    fn values_match_serde_json() {
        let v: Value = serde_json::json!({"a": [1, 2.5, -3, true, null, "s\n"], "b": {"c": {}}, "d": 1e300, "e": 12345678901234567890u64});
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }
}
