//! Text decoding for Specific Character Set (0008,0005), including ISO 2022 code extensions.
//!
//! dicom-rs 0.10.1 decodes text with only the first value of Specific Character Set, so
//! values that use code extensions (PS3.5 6.1.2.5, Annexes H, I and J), e.g.
//! `\ISO 2022 IR 87` or `ISO 2022 IR 100\ISO 2022 IR 126`, come out wrong. This module
//! owns: deciding when a value must be re-decoded ([`needs_own_decoding`]) and decoding the
//! raw bytes of one element ([`decode_text`]). Pure functions: no I/O, no dicom-object.
//!
//! Character set terms (PS3.3 C.12.1.1.2, Tables C.12-2 to C.12-5) and their escape
//! sequences:
//!
//! | term                     | escape     | designates                       |
//! |--------------------------|------------|----------------------------------|
//! | ISO 2022 IR 6            | `ESC ( B`  | G0 ASCII                         |
//! | ISO 2022 IR 13           | `ESC ( J`  | G0 JIS X 0201 romaji             |
//! |                          | `ESC ) I`  | G1 JIS X 0201 katakana           |
//! | ISO 2022 IR 87           | `ESC $ B`  | G0 JIS X 0208 (2 bytes, GL)      |
//! | ISO 2022 IR 159          | `ESC $ ( D`| G0 JIS X 0212 (2 bytes, GL)      |
//! | ISO 2022 IR 149          | `ESC $ ) C`| G1 KS X 1001 (2 bytes, GR)       |
//! | ISO 2022 IR 58           | `ESC $ ) A`| G1 GB 2312 (2 bytes, GR)         |
//! | ISO 2022 IR 100/101/109/110/144/127/126/138/148/166/203 | `ESC - A/B/C/D/L/G/F/H/M/T/b` | G1 ISO 8859 part |
//!
//! Decoding is lenient: any known escape sequence is honoured even when its term is not
//! listed in (0008,0005), unknown escape sequences are skipped, invalid bytes become
//! U+FFFD, and nothing here panics. Trailing padding (space / NUL) is *not* removed.

use encoding_rs::Encoding;

/// What is designated to G0 (bytes 0x21..=0x7E), PS3.5 6.1.2.5.1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum G0 {
    /// ISO-IR 6 (ASCII).
    Ascii,
    /// JIS X 0201 romaji (ISO-IR 14). Decoded as ASCII, like pydicom and dcmtk do: 0x5C must
    /// stay the value delimiter `\` (PS3.5 6.1.2.5.3).
    Romaji,
    /// JIS X 0208 (ISO-IR 87), two 7-bit bytes per character.
    Jis0208,
    /// JIS X 0212 (ISO-IR 159), two 7-bit bytes per character.
    Jis0212,
}

/// What is designated to G1 (bytes 0xA0..=0xFF), PS3.5 6.1.2.5.1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum G1 {
    None,
    /// ISO 8859-1 (ISO-IR 100): every byte maps to the same code point.
    Latin1,
    /// Another single-byte 96-character set; 0x80..=0x9F are C1 controls (ISO 8859 semantics).
    Single(&'static Encoding),
    /// JIS X 0201 katakana (ISO-IR 13): 0xA1..=0xDF → U+FF61..=U+FF9F.
    Katakana,
    /// KS X 1001 (ISO-IR 149), decoded as EUC-KR.
    Ksx1001,
    /// GB 2312 (ISO-IR 58), decoded as GBK.
    Gb2312,
}

/// Character sets that are not ISO 2022 code extensions and are decoded as a whole
/// (PS3.3 C.12.1.1.2, Table C.12-5; PS3.5 6.1.2.5.4 forbids extensions with them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Whole {
    Utf8,
    Gb18030,
    Gbk,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Term {
    Iso2022 { g0: G0, g1: G1 },
    Whole(Whole),
}

/// Normalised form of one value of (0008,0005): trimmed, `_` read as a space
/// (tolerates `ISO_IR_100`), upper case.
fn normalise(term: &str) -> String {
    term.trim_matches(|c: char| c == ' ' || c == '\0')
        .replace('_', " ")
        .to_ascii_uppercase()
}

/// Initial designations a term gives when it is value 1 (PS3.5 6.1.2.5.2), or `None` for an
/// unknown term. G0 multi-byte sets (IR 87, IR 159) cannot be an initial state; they leave
/// G0 on ASCII.
fn parse_term(term: &str) -> Option<Term> {
    let n = normalise(term);
    if n.is_empty() {
        return Some(Term::Iso2022 {
            g0: G0::Ascii,
            g1: G1::None,
        });
    }
    match n.as_str() {
        "GB18030" => return Some(Term::Whole(Whole::Gb18030)),
        "GBK" | "GB2312" => return Some(Term::Whole(Whole::Gbk)),
        _ => {}
    }
    let number = n
        .strip_prefix("ISO 2022 IR ")
        .or_else(|| n.strip_prefix("ISO IR "))?
        .trim();
    let single = |enc| G1::Single(enc);
    let (g0, g1) = match number {
        "6" => (G0::Ascii, G1::None),
        "100" => (G0::Ascii, G1::Latin1),
        "101" => (G0::Ascii, single(encoding_rs::ISO_8859_2)),
        "109" => (G0::Ascii, single(encoding_rs::ISO_8859_3)),
        "110" => (G0::Ascii, single(encoding_rs::ISO_8859_4)),
        "144" => (G0::Ascii, single(encoding_rs::ISO_8859_5)),
        "127" => (G0::Ascii, single(encoding_rs::ISO_8859_6)),
        "126" => (G0::Ascii, single(encoding_rs::ISO_8859_7)),
        "138" => (G0::Ascii, single(encoding_rs::ISO_8859_8)),
        // ISO 8859-9 and windows-1254 agree on 0xA0..=0xFF; 0x80..=0x9F are handled as C1.
        "148" => (G0::Ascii, single(encoding_rs::WINDOWS_1254)),
        "203" => (G0::Ascii, single(encoding_rs::ISO_8859_15)),
        // TIS 620 / ISO 8859-11 and windows-874 agree on 0xA0..=0xFF.
        "166" => (G0::Ascii, single(encoding_rs::WINDOWS_874)),
        "13" => (G0::Romaji, G1::Katakana),
        "87" | "159" => (G0::Ascii, G1::None),
        "149" => (G0::Ascii, G1::Ksx1001),
        "58" => (G0::Ascii, G1::Gb2312),
        "192" if n.starts_with("ISO IR") => return Some(Term::Whole(Whole::Utf8)),
        _ => return None,
    };
    Some(Term::Iso2022 { g0, g1 })
}

/// True when dicom-rs 0.10.1 (which uses only value 1 of (0008,0005) and knows no escape
/// sequences) would decode text with these Specific Character Set values wrongly, so the raw
/// bytes must go through [`decode_text`].
///
/// * more than one value → true (code extensions, PS3.5 6.1.2.5);
/// * a lone `ISO 2022 …` term → true unless it is a single-byte set dicom-rs maps right
///   (IR 6, 13, 100, 101, 109, 110, 126, 127, 138, 144, 166); a lone IR 87/159/149/58
///   announces escape sequences dicom-rs does not interpret;
/// * a lone `ISO_IR 148` / `ISO_IR 203` → true (dicom-rs 0.10.1 does not know them);
/// * anything else (`ISO_IR 100`, `ISO_IR 192`, `GB18030`, empty, …) → false.
pub fn needs_own_decoding(charsets: &[String]) -> bool {
    if charsets.len() > 1 {
        return true;
    }
    let Some(value) = charsets.first() else {
        return false;
    };
    let n = normalise(value);
    if let Some(number) = n.strip_prefix("ISO 2022 IR ") {
        return !matches!(
            number.trim(),
            "6" | "13" | "100" | "101" | "109" | "110" | "126" | "127" | "138" | "144" | "166"
        );
    }
    matches!(n.as_str(), "ISO IR 148" | "ISO IR 203")
}

/// Output accumulator: characters go straight to `out`; bytes of a multi-byte or
/// table-driven set are collected and decoded together by `encoding_rs`.
struct Out {
    out: String,
    pending: Vec<u8>,
    pending_enc: Option<&'static Encoding>,
}

impl Out {
    fn flush(&mut self) {
        if let Some(enc) = self.pending_enc.take() {
            let (text, _) = enc.decode_without_bom_handling(&self.pending);
            self.out.push_str(&text);
            self.pending.clear();
        }
    }

    fn push_char(&mut self, c: char) {
        self.flush();
        self.out.push(c);
    }

    fn push_byte(&mut self, enc: &'static Encoding, b: u8) {
        if self.pending_enc != Some(enc) {
            self.flush();
            self.pending_enc = Some(enc);
        }
        self.pending.push(b);
    }
}

/// Parses the escape sequence starting at `bytes[at]` (which is ESC). Returns its length
/// and the designation it makes, if known (PS3.5 6.1.2.5.1, ISO 2022: intermediate bytes
/// 0x20..=0x2F then one final byte 0x30..=0x7E).
fn parse_escape(bytes: &[u8], at: usize) -> (usize, Option<Designation>) {
    let mut end = at + 1;
    while end < bytes.len() && (0x20..=0x2F).contains(&bytes[end]) {
        end += 1;
    }
    if end < bytes.len() && (0x30..=0x7E).contains(&bytes[end]) {
        end += 1;
    } else {
        // Incomplete or invalid: skip ESC and the intermediates only.
        return (end - at, None);
    }
    let seq = &bytes[at + 1..end];
    let d = match seq {
        b"(B" => Designation::G0(G0::Ascii),
        b"(J" => Designation::G0(G0::Romaji),
        b")I" => Designation::G1(G1::Katakana),
        // `ESC $ @` (JIS C 6226-1978) is tolerated as JIS X 0208.
        b"$B" | b"$@" => Designation::G0(G0::Jis0208),
        b"$(D" => Designation::G0(G0::Jis0212),
        b"$)C" => Designation::G1(G1::Ksx1001),
        b"$)A" => Designation::G1(G1::Gb2312),
        b"-A" => Designation::G1(G1::Latin1),
        b"-B" => Designation::G1(G1::Single(encoding_rs::ISO_8859_2)),
        b"-C" => Designation::G1(G1::Single(encoding_rs::ISO_8859_3)),
        b"-D" => Designation::G1(G1::Single(encoding_rs::ISO_8859_4)),
        b"-L" => Designation::G1(G1::Single(encoding_rs::ISO_8859_5)),
        b"-G" => Designation::G1(G1::Single(encoding_rs::ISO_8859_6)),
        b"-F" => Designation::G1(G1::Single(encoding_rs::ISO_8859_7)),
        b"-H" => Designation::G1(G1::Single(encoding_rs::ISO_8859_8)),
        b"-M" => Designation::G1(G1::Single(encoding_rs::WINDOWS_1254)),
        b"-T" => Designation::G1(G1::Single(encoding_rs::WINDOWS_874)),
        b"-b" => Designation::G1(G1::Single(encoding_rs::ISO_8859_15)),
        _ => return (end - at, None),
    };
    (end - at, Some(d))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Designation {
    G0(G0),
    G1(G1),
}

/// Decodes the raw bytes of one text element (all its values, `\`-separated) according to
/// the values of Specific Character Set (0008,0005), `charsets` (already split at `\`).
///
/// PS3.5 6.1.2.5: the initial state comes from value 1 (empty or absent → default
/// repertoire); escape sequences switch G0/G1; per 6.1.2.5.3 the initial state is restored
/// after CR, LF, FF, TAB, the value delimiter `\` and, when `vr_is_pn`, after the PN
/// delimiters `^` and `=` — but only where those bytes are single-byte G0 characters (inside
/// a JIS X 0208 run `$^` is a kana, not a delimiter).
///
/// `ISO_IR 192` (UTF-8), `GB18030` and `GBK` as value 1 decode the whole value with that
/// encoding (they admit no code extensions). Bytes with the high bit set while nothing is
/// designated to G1 are decoded with the first G1 set declared by any value (lenient: some
/// writers omit escapes after a delimiter), else become U+FFFD.
pub fn decode_text(bytes: &[u8], charsets: &[String], vr_is_pn: bool) -> String {
    let first = charsets.first().map(String::as_str).unwrap_or("");
    let (init_g0, init_g1) = match parse_term(first) {
        Some(Term::Whole(Whole::Utf8)) => return String::from_utf8_lossy(bytes).into_owned(),
        Some(Term::Whole(Whole::Gb18030)) => {
            return encoding_rs::GB18030
                .decode_without_bom_handling(bytes)
                .0
                .into_owned();
        }
        Some(Term::Whole(Whole::Gbk)) => {
            return encoding_rs::GBK
                .decode_without_bom_handling(bytes)
                .0
                .into_owned();
        }
        Some(Term::Iso2022 { g0, g1 }) => (g0, g1),
        None => (G0::Ascii, G1::None),
    };
    let fallback_g1 = charsets
        .iter()
        .filter_map(|t| match parse_term(t) {
            Some(Term::Iso2022 { g1, .. }) if g1 != G1::None => Some(g1),
            _ => None,
        })
        .next();

    let mut out = Out {
        out: String::with_capacity(bytes.len()),
        pending: Vec::new(),
        pending_enc: None,
    };
    let (mut g0, mut g1) = (init_g0, init_g1);
    // JIS X 0212 goes through EUC-JP as 0x8F + two bytes: true when the next GL byte is a
    // first byte.
    let mut jis0212_first = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1B {
            let (len, designation) = parse_escape(bytes, i);
            out.flush();
            match designation {
                Some(Designation::G0(set)) => g0 = set,
                Some(Designation::G1(set)) => g1 = set,
                None => {}
            }
            jis0212_first = true;
            i += len;
            continue;
        }
        i += 1;
        if b < 0x20 || b == 0x7F {
            out.push_char(char::from(b));
            if matches!(b, 0x09 | 0x0A | 0x0C | 0x0D) {
                (g0, g1) = (init_g0, init_g1);
                jis0212_first = true;
            }
            continue;
        }
        if b == 0x20 {
            out.push_char(' ');
            continue;
        }
        if b < 0x80 {
            match g0 {
                G0::Ascii | G0::Romaji => {
                    out.push_char(char::from(b));
                    if b == b'\\' || (vr_is_pn && (b == b'^' || b == b'=')) {
                        (g0, g1) = (init_g0, init_g1);
                        jis0212_first = true;
                    }
                }
                G0::Jis0208 => out.push_byte(encoding_rs::EUC_JP, b | 0x80),
                G0::Jis0212 => {
                    if jis0212_first {
                        out.push_byte(encoding_rs::EUC_JP, 0x8F);
                    }
                    out.push_byte(encoding_rs::EUC_JP, b | 0x80);
                    jis0212_first = !jis0212_first;
                }
            }
            continue;
        }
        let set = if g1 == G1::None {
            fallback_g1.unwrap_or(G1::None)
        } else {
            g1
        };
        match set {
            G1::None => out.push_char(char::REPLACEMENT_CHARACTER),
            G1::Latin1 => out.push_char(char::from(b)),
            G1::Single(_) if b < 0xA0 => out.push_char(char::from(b)),
            G1::Single(enc) => out.push_byte(enc, b),
            G1::Katakana => out.push_char(match b {
                0xA1..=0xDF => char::from_u32(0xFF61 + u32::from(b - 0xA1))
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
                _ => char::REPLACEMENT_CHARACTER,
            }),
            G1::Ksx1001 => out.push_byte(encoding_rs::EUC_KR, b),
            G1::Gb2312 => out.push_byte(encoding_rs::GBK, b),
        }
    }
    out.flush();
    out.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn needs_own_decoding_rules() {
        assert!(!needs_own_decoding(&[]));
        assert!(!needs_own_decoding(&cs(&[""])));
        assert!(!needs_own_decoding(&cs(&["ISO_IR 100"])));
        assert!(!needs_own_decoding(&cs(&["ISO_IR 192"])));
        assert!(!needs_own_decoding(&cs(&["GB18030"])));
        assert!(!needs_own_decoding(&cs(&["ISO 2022 IR 100"])));
        assert!(!needs_own_decoding(&cs(&["ISO 2022 IR 6"])));
        assert!(needs_own_decoding(&cs(&["ISO 2022 IR 87"])));
        assert!(needs_own_decoding(&cs(&["ISO 2022 IR 149"])));
        assert!(needs_own_decoding(&cs(&["ISO_IR 148"])));
        assert!(needs_own_decoding(&cs(&["", "ISO 2022 IR 87"])));
        assert!(needs_own_decoding(&cs(&[
            "ISO 2022 IR 6",
            "ISO 2022 IR 87"
        ])));
        assert!(needs_own_decoding(&cs(&[
            "ISO 2022 IR 100",
            "ISO 2022 IR 126"
        ])));
    }

    #[test]
    fn single_byte_sets() {
        // ISO 8859-1 semantics: 0x80..=0x9F are C1 controls, not windows-1252.
        assert_eq!(
            decode_text(b"Buc^J\xe9r\xf4me\x80", &cs(&["ISO_IR 100"]), true),
            "Buc^Jérôme\u{80}"
        );
        assert_eq!(
            decode_text(
                b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2",
                &cs(&["ISO_IR 126"]),
                true
            ),
            "Διονυσιος"
        );
        assert_eq!(
            decode_text(b"\xbb\xee\xdace\xdc\xd1yp\xd3", &cs(&["ISO_IR 144"]), true),
            "Люкceмбypг"
        );
        assert_eq!(
            decode_text(
                b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4",
                &cs(&["ISO_IR 138"]),
                true
            ),
            "שרון^דבורה"
        );
        assert_eq!(
            decode_text(
                b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1",
                &cs(&["ISO_IR 127"]),
                true
            ),
            "قباني^لنزار"
        );
        assert_eq!(decode_text(b"\xdd\xfe", &cs(&["ISO_IR 148"]), false), "İş");
        assert_eq!(decode_text(b"\xa1\xb9", &cs(&["ISO_IR 166"]), false), "กน");
        assert_eq!(decode_text(b"\xb5", &cs(&["ISO_IR 101"]), false), "ľ");
        assert_eq!(
            decode_text(b"\xd4\xcf\xc0\xde", &cs(&["ISO_IR 13"]), false),
            "ﾔﾏﾀﾞ"
        );
        // Default repertoire: high bytes are invalid.
        assert_eq!(decode_text(b"a\xe9b", &cs(&[]), false), "a\u{FFFD}b");
        assert_eq!(
            decode_text(b"a\xe9b", &cs(&["WHATEVER"]), false),
            "a\u{FFFD}b"
        );
    }

    #[test]
    fn whole_value_sets() {
        assert_eq!(
            decode_text(
                b"Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1=",
                &cs(&["ISO_IR 192"]),
                true
            ),
            "Wang^XiaoDong=王^小東="
        );
        assert_eq!(
            decode_text(
                b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=",
                &cs(&["GB18030"]),
                true
            ),
            "Wang^XiaoDong=王^小东="
        );
        assert_eq!(decode_text(b"\xcd\xf5", &cs(&["GBK"]), false), "王");
        assert_eq!(
            decode_text(b"\xff\xfe", &cs(&["ISO_IR 192"]), false),
            "\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn japanese_h31_and_h32() {
        let h31 =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode_text(h31, &cs(&["", "ISO 2022 IR 87"]), true),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
        let h32 = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode_text(h32, &cs(&["ISO 2022 IR 13", "ISO 2022 IR 87"]), true),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn jis_x_0212() {
        // JIS X 0212 0x30 0x21 is U+4E02 (丂).
        assert_eq!(
            decode_text(
                b"\x1b$(D\x30\x21\x1b(B",
                &cs(&["", "ISO 2022 IR 159"]),
                false
            ),
            "丂"
        );
    }

    #[test]
    fn korean_i2() {
        let i2 = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode_text(i2, &cs(&["", "ISO 2022 IR 149"]), true),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
        // Escape omitted after a delimiter: falls back to the declared G1 set.
        assert_eq!(
            decode_text(
                b"\x1b$)C\xc8\xab^\xb1\xe6",
                &cs(&["", "ISO 2022 IR 149"]),
                true
            ),
            "홍^길"
        );
        // Lone ISO 2022 IR 149 is an initial G1 designation.
        assert_eq!(
            decode_text(b"\xc8\xab", &cs(&["ISO 2022 IR 149"]), false),
            "홍"
        );
    }

    #[test]
    fn chinese_gb2312_g1() {
        assert_eq!(
            decode_text(
                b"Wang^XiaoDong=\x1b$)A\xcd\xf5^\x1b$)A\xd0\xa1\xb6\xab=",
                &cs(&["", "ISO 2022 IR 58"]),
                true
            ),
            "Wang^XiaoDong=王^小东="
        );
    }

    #[test]
    fn single_byte_code_extensions() {
        // Latin-1 then Greek (PS3.5 Annex J-style).
        let v = b"Dionysios=\x1b-F\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2";
        assert_eq!(
            decode_text(v, &cs(&["ISO 2022 IR 100", "ISO 2022 IR 126"]), true),
            "Dionysios=Διονυσιος"
        );
        // Initial G1 latin-1 restored after `=` for PN.
        let v = b"\x1b-F\xc4=\xc4";
        assert_eq!(
            decode_text(v, &cs(&["ISO 2022 IR 100", "ISO 2022 IR 126"]), true),
            "Δ=Ä"
        );
        // ...but not for a non-PN VR.
        assert_eq!(
            decode_text(v, &cs(&["ISO 2022 IR 100", "ISO 2022 IR 126"]), false),
            "Δ=Δ"
        );
        for (esc, text, want) in [
            (&b"-L"[..], &b"\xbb"[..], "Л"),
            (b"-G", b"\xc8", "ب"),
            (b"-H", b"\xf9", "ש"),
            (b"-T", b"\xa1", "ก"),
            (b"-M", b"\xdd", "İ"),
            (b"-B", b"\xb5", "ľ"),
            (b"-C", b"\xa6", "Ĥ"),
            (b"-D", b"\xa2", "ĸ"),
            (b"-A", b"\xe9", "é"),
        ] {
            let mut v = vec![0x1b];
            v.extend_from_slice(esc);
            v.extend_from_slice(text);
            assert_eq!(
                decode_text(&v, &cs(&["", "ISO 2022 IR 100"]), false),
                want,
                "{esc:?}"
            );
        }
    }

    #[test]
    fn resets_at_controls_and_value_delimiter() {
        let charsets = cs(&["", "ISO 2022 IR 87"]);
        // After CR LF the initial state (ASCII) is back, so "AB" is not JIS X 0208.
        assert_eq!(decode_text(b"\x1b$B;3\r\nAB", &charsets, false), "山\r\nAB");
        assert_eq!(decode_text(b"\x1b$B;3\tAB", &charsets, false), "山\tAB");
        // In JIS X 0208, 0x5C 0x5E are a character, not delimiters; `\` in ASCII resets.
        assert_eq!(
            decode_text(b"\x1b$B$^\x1b(B\\AB", &charsets, false),
            "ま\\AB"
        );
    }

    #[test]
    fn robustness() {
        let charsets = cs(&["", "ISO 2022 IR 87"]);
        // Unknown escape skipped, truncated escape at end, odd JIS byte → U+FFFD.
        assert_eq!(decode_text(b"A\x1b%GB", &charsets, false), "AB");
        assert_eq!(decode_text(b"A\x1b$", &charsets, false), "A");
        assert_eq!(
            decode_text(b"\x1b$B;\x1b(BA", &charsets, false),
            "\u{FFFD}A"
        );
        assert_eq!(decode_text(b"\x1b)I\x80", &charsets, false), "\u{FFFD}");
        assert_eq!(decode_text(b"", &charsets, true), "");
        // Every byte string of length <= 2 and a pseudo-random long one decode without panic.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = decode_text(&[0x1b, a, b], &charsets, true);
                let _ = decode_text(&[a, b], &cs(&["ISO 2022 IR 13", "ISO 2022 IR 159"]), true);
            }
        }
        let mut x: u32 = 12345;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for set in [
            &["", "ISO 2022 IR 87", "ISO 2022 IR 159"][..],
            &["ISO 2022 IR 13", "ISO 2022 IR 87"],
            &["", "ISO 2022 IR 149"],
            &["ISO 2022 IR 100", "ISO 2022 IR 126", "ISO 2022 IR 58"],
        ] {
            let _ = decode_text(&noise, &cs(set), true);
        }
    }

    /// Reads the fixtures copied from pydicom's charset_files and checks every collected
    /// text element against the strings pydicom decodes.
    #[test]
    fn pydicom_charset_fixtures() {
        use super::super::walk::{WalkOptions, walk};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/charset");
        let cases: &[(&str, &[(u32, &str)])] = &[
            (
                "chrH31.dcm",
                &[
                    (0x0010_0010, "Yamada^Tarou=山田^太郎=やまだ^たろう"),
                    (0x0010_0020, "H31EXAMPLE"),
                ],
            ),
            (
                "chrH32.dcm",
                &[(0x0010_0010, "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう")],
            ),
            (
                "chrJapMulti.dcm",
                &[
                    (0x0010_0010, "やまだ^たろう"),
                    (0x0010_1001, "やまだ^たろう\\やまだ^たろう"),
                    (0x0010_21B0, "たろう"),
                    (0x0008_1030, "Chest"),
                ],
            ),
            (
                "chrJapMultiExplicitIR6.dcm",
                &[(0x0010_0010, "やまだ^たろう")],
            ),
            (
                "chrI2.dcm",
                &[(0x0010_0010, "Hong^Gildong=洪^吉洞=홍^길동")],
            ),
            (
                "chrKoreanMulti.dcm",
                &[
                    (0x0010_0010, "김희중"),
                    (0x0008_1070, "김희중"),
                    (0x0010_1001, "김희중\\김희중"),
                    (0x0010_21B0, "김희중"),
                ],
            ),
            ("chrX1.dcm", &[(0x0010_0010, "Wang^XiaoDong=王^小東=")]),
            ("chrX2.dcm", &[(0x0010_0010, "Wang^XiaoDong=王^小东=")]),
            ("chrArab.dcm", &[(0x0010_0010, "قباني^لنزار")]),
            ("chrGreek.dcm", &[(0x0010_0010, "Διονυσιος")]),
            ("chrHbrw.dcm", &[(0x0010_0010, "שרון^דבורה")]),
            ("chrRuss.dcm", &[(0x0010_0010, "Люкceмбypг")]),
            ("chrFren.dcm", &[(0x0010_0010, "Buc^Jérôme")]),
            ("chrGerm.dcm", &[(0x0010_0010, "Äneas^Rüdiger")]),
        ];
        for (name, expected) in cases {
            let path = format!("{dir}/{name}");
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
            // File Meta: preamble, "DICM", then (0002,0000) UL group length (PS3.10 7.1).
            assert_eq!(&data[128..132], b"DICM");
            let group_len = u32::from_le_bytes(data[140..144].try_into().unwrap());
            let start = 144 + u64::from(group_len);
            let mut cursor = std::io::Cursor::new(&data);
            let opts = WalkOptions::default();
            let result = walk(&mut cursor, start, true, data.len() as u64, &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let charsets: Vec<String> = result
                .text
                .iter()
                .find(|(tag, _, _)| *tag == 0x0008_0005)
                .map(|(_, _, v)| {
                    String::from_utf8_lossy(v)
                        .split('\\')
                        .map(|s| s.trim().to_string())
                        .collect()
                })
                .unwrap_or_default();
            for (tag, want) in expected.iter() {
                let (_, vr, raw) = result
                    .text
                    .iter()
                    .find(|(t, _, _)| t == tag)
                    .unwrap_or_else(|| panic!("{name}: tag {tag:08X} not collected"));
                let got = decode_text(raw, &charsets, vr == b"PN");
                assert_eq!(got.trim_end_matches([' ', '\0']), *want, "{name} {tag:08X}");
            }
        }
    }
}
