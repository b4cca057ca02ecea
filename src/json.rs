//! A small JSON writer for the data stream (`format=json`): RFC 8259
//! string escaping, no allocation, one object per line.

#![deny(missing_docs)]

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, Ordering};

/// A JSON string literal (escaped per RFC 8259 section 7),
/// formatted without allocating.
pub struct JsonStr<'a>(pub &'a str);

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        fmt::Write::write_str(&mut JsonEscape(&mut *f), self.0)?;
        f.write_str("\"")
    }
}

/// Escapes what is written through it for the inside of a JSON string
/// (RFC 8259 section 7): `"` and `\\` get a backslash, control characters
/// (below U+0020) their short form or `\u00XX`; everything else, non-ASCII
/// included, passes as UTF-8.
pub(crate) struct JsonEscape<W>(pub W);

impl<W: fmt::Write> fmt::Write for JsonEscape<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
            self.0.write_str(&rest[..i])?;
            let c = rest.as_bytes()[i];
            match c {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                0x08 => self.0.write_str("\\b")?,
                0x0c => self.0.write_str("\\f")?,
                c => write!(self.0, "\\u{:04x}", c)?,
            }
            rest = &rest[i + 1..];
        }
        self.0.write_str(rest)
    }
}

/// Writes one JSON value (usually an object) to any [`fmt::Write`],
/// putting the commas and escaping strings, without allocating. Numbers are
/// integers, or finite floats (a NaN or an infinity becomes `null`).
/// Misuse (a key outside an object) is not checked: the callers are here.
///
/// ```ignore
/// let mut j = JsonWriter::new(out);
/// j.begin_object().field_str("kind", "sample").field_u64("ms", 100).end_object();
/// ```
pub struct JsonWriter<W> {
    pub(crate) out: W,
    /// The next value or key follows another in the same container.
    comma: bool,
    /// The next value follows its key.
    after_key: bool,
    err: fmt::Result,
}

impl<W: fmt::Write> JsonWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(out: W) -> Self {
        Self {
            out,
            comma: false,
            after_key: false,
            err: Ok(()),
        }
    }

    pub(crate) fn raw(&mut self, s: &str) {
        if self.err.is_ok() {
            self.err = self.out.write_str(s);
        }
    }

    fn fmt_raw(&mut self, a: fmt::Arguments<'_>) {
        if self.err.is_ok() {
            self.err = self.out.write_fmt(a);
        }
    }

    /// The separator before a value.
    pub(crate) fn value(&mut self) {
        if self.after_key {
            self.after_key = false;
        } else if self.comma {
            self.raw(",");
        }
        self.comma = true;
    }

    /// `{`
    pub fn begin_object(&mut self) -> &mut Self {
        self.value();
        self.raw("{");
        self.comma = false;
        self
    }

    /// `}`
    pub fn end_object(&mut self) -> &mut Self {
        self.raw("}");
        self.comma = true;
        self
    }

    /// `[`
    pub fn begin_array(&mut self) -> &mut Self {
        self.value();
        self.raw("[");
        self.comma = false;
        self
    }

    /// `]`
    pub fn end_array(&mut self) -> &mut Self {
        self.raw("]");
        self.comma = true;
        self
    }

    /// An object's key; its value comes next.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.value();
        self.string(k);
        self.raw(":");
        self.after_key = true;
        self
    }

    fn string(&mut self, v: &str) {
        self.fmt_raw(format_args!("{}", JsonStr(v)));
    }

    /// A string value.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.value();
        self.string(v);
        self
    }

    /// A string value: `v` as `Display` formats it.
    pub fn display(&mut self, v: impl fmt::Display) -> &mut Self {
        self.value();
        self.raw("\"");
        if self.err.is_ok() {
            self.err = write!(JsonEscape(&mut self.out), "{v}");
        }
        self.raw("\"");
        self
    }

    /// An unsigned integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.value();
        self.fmt_raw(format_args!("{v}"));
        self
    }

    /// A signed integer.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.value();
        self.fmt_raw(format_args!("{v}"));
        self
    }

    /// A float with `decimals` decimals; `null` unless finite (JSON has no
    /// NaN or infinity).
    pub fn f64(&mut self, v: f64, decimals: usize) -> &mut Self {
        self.value();
        if v.is_finite() {
            self.fmt_raw(format_args!("{v:.decimals$}"));
        } else {
            self.raw("null");
        }
        self
    }

    /// `true` or `false`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.value();
        self.raw(if v { "true" } else { "false" });
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.value();
        self.raw("null");
        self
    }

    /// `"k":v` for an unsigned integer.
    pub fn field_u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k).u64(v)
    }

    /// `"k":"v"`.
    pub fn field_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k).str(v)
    }

    /// `"k":true|false`.
    pub fn field_bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k).bool(v)
    }

    /// The first error of the underlying writer, if any.
    pub fn finish(self) -> fmt::Result {
        self.err
    }
}

/// Writes one JSON object as a line of the data stream (standard output
/// with `format=json`; see [`crate::console::data_line`]).
pub fn json_line(f: impl FnOnce(&mut JsonWriter<&mut dyn fmt::Write>)) {
    crate::console::data_line(|out| {
        let mut j = JsonWriter::new(out);
        f(&mut j);
        j.finish()
    });
}

/// Whether results go out as JSON lines (`format=json`), set once the
/// command line is known.
static JSON_MODE: AtomicBool = AtomicBool::new(false);

/// Records whether results are printed as JSON.
pub fn set_json_mode(on: bool) {
    JSON_MODE.store(on, Ordering::Relaxed);
}

/// Whether results are printed as JSON (`format=json`): the workload's
/// monitor then prints its samples.
pub fn json_mode() -> bool {
    JSON_MODE.load(Ordering::Relaxed)
}
